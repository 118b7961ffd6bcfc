-- Linked to ~/.config/nvim/init.lua by [links] in agentenv.toml.
vim.o.number = true
vim.o.expandtab = true
vim.o.shiftwidth = 4
