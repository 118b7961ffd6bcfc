//! One file per verb; each is thin and calls into the layers.

#[cfg(target_os = "linux")]
pub mod agent;
#[cfg(target_os = "linux")]
pub mod attach;
pub mod completions;
#[cfg(target_os = "linux")]
pub mod dispatch;
pub mod doctor;
pub mod down;
pub mod enter;
pub mod exec;
pub mod gc;
#[cfg(target_os = "linux")]
pub mod guest;
pub mod ls;
pub mod man;
#[cfg(target_os = "linux")]
pub mod memory;
pub mod profile;
pub mod ps;
pub mod up;
pub mod vm;
