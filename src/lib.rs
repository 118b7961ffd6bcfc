//! agentenv: portable, isolated Nix dev environments. The layers follow the design:
//! `nix` (layer 1 inputs: the dev environment), `store` (copy-on-write store views),
//! `compute` (layer 0 backends), `guest` (what runs inside), `commands` (one file per verb).

#[cfg(target_os = "linux")]
pub mod attach;
pub mod cli;
pub mod commands;
pub mod compute;
pub mod diag;
pub mod envs;
#[cfg(target_os = "linux")]
pub mod guest;
pub mod nix;
pub mod paths;
pub mod process;
pub mod profile;
pub mod proto;
pub mod runtime;
pub mod store;
pub mod util;
pub mod workspace;
