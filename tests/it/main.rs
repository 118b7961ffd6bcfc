//! Integration tests: the real agentenv binary against real nix, real namespaces and real
//! overlay mounts. Each test makes its own copy of examples/hello and its own state. Linux
//! only: what they exercise (namespaces, containers) is.
#![cfg(target_os = "linux")]

mod attach;
mod attach_bounds;
mod attach_errors;
mod attach_profile;
mod cache;
mod containers;
mod daily;
mod dispatch;
mod dispatch_away;
mod dispatch_container;
mod dispatch_profile;
mod dispatch_views;
mod doctor;
mod enter;
mod environment;
mod errors;
mod gc;
mod hardening;
mod home;
mod isolation;
mod memory;
mod persistent;
mod profile;
mod profile_env;
mod profile_install;
mod profile_layout;
mod profile_swaps;
mod rootless;
mod seam;
mod suite;
pub mod support;
mod vm;
mod vm_backend;
