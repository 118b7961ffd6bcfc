//! One file per verb; each is thin and calls into the layers.

#[cfg(target_os = "linux")]
pub mod attach;
pub mod doctor;
pub mod down;
pub mod enter;
pub mod exec;
#[cfg(target_os = "linux")]
pub mod guest;
pub mod profile;
pub mod ps;
pub mod up;
pub mod vm;
