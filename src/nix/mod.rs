//! The nix CLI, as the user has it: which flake and shell a path means, evaluating the dev
//! environment, and caching that evaluation with a GC root.

pub mod cache;
pub mod cli;
pub mod devenv;
pub mod flake;
pub mod inputs;
pub mod referenced;
pub mod settings;
