//! agentenv: portable, isolated Nix dev environments. The modules follow the design's layers:
//! `nix` (the dev environment, evaluated and cached), `store` (layer 1: copy-on-write store
//! views), `profile` (layer 2: dotfiles, skills, tools), `compute` (layer 0: backends), `guest`
//! (what runs inside: root, init, agent), `proto` (host <-> guest), `attach` (running
//! containers and processes), `workspace` and `runtime` (a project as an environment, and the
//! running ones), `memory` (agents and the memory they keep in git), `terminal` (the caller's terminal), `commands` (one file per verb).

#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "linux")]
pub mod attach;
pub mod cli;
pub mod commands;
pub mod compute;
pub mod diag;
pub mod dispatch;
pub mod envs;
pub mod guest;
pub mod keep;
pub mod memory;
pub mod nix;
pub mod paths;
pub mod process;
pub mod profile;
pub mod progress;
pub mod proto;
pub mod runtime;
pub mod store;
pub mod terminal;
pub mod transport;
pub mod typo;
pub mod util;
pub mod workspace;
