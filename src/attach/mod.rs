//! `agentenv attach`: a toolbox (a flake's dev shell) and optionally a profile layered onto a
//! running container or process, leaving no trace. Owns finding the target, reading what it
//! looks like, grafting the toolbox's store, the profile and a private home into a private copy
//! of its mount namespace, and running the session there. Evaluating the toolbox is `nix`'s
//! job, activating the profile `profile`'s; waiting and forwarding signals is `process`'s.

pub mod bounds;
pub mod caps;
pub mod cgroup_tree;
pub mod cgroups;
pub mod crun;
pub mod facts;
pub mod graft;
pub mod home;
pub mod mountapi;
pub mod places;
pub mod runtimes;
pub mod script;
pub mod session;
pub mod target;
pub mod terminal;
pub mod user;
