//! One file per verb; each is thin and calls into the layers.

#[cfg(target_os = "linux")]
pub mod attach;
#[cfg(target_os = "linux")]
pub mod dispatch;
pub mod doctor;
pub mod down;
pub mod enter;
pub mod exec;
pub mod profile;
pub mod ps;
pub mod up;
