//! What runs inside an environment, the same on every backend: building its root from a plan,
//! its generated `/etc`, how the shell is started, and PID 1. Linux-only: inside is always
//! Linux, whether a namespace sandbox or the macOS VM.

pub mod agent;
pub mod entry;
pub mod etc;
pub mod init;
pub mod launch;
pub mod pipe;
pub mod reaper;
pub mod rootfs;
pub mod session;
pub mod syscall;
