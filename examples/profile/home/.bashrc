# ~/.bashrc from the profile (linked, so edits to the profile show at once).

# On a plain host, `agentenv profile activate` writes the profile's PATH, variables and
# init snippets to this file; inside `agentenv --profile` they are set already.
agentenv_env=${XDG_STATE_HOME:-$HOME/.local/state}/agentenv/profile/env.sh
[ -f "$agentenv_env" ] && . "$agentenv_env"
unset agentenv_env

HISTCONTROL=ignoreboth
shopt -s histappend
PS1='\u@\h:\w\$ '
