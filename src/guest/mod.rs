//! What runs inside an environment, the same on every backend: building its root from a plan,
//! its generated `/etc`, how the shell is started, and PID 1. Inside is always Linux, whether a
//! namespace sandbox or a VM; the plans (`etc`, `launch`, `rootfs`'s types) are plain data the
//! host makes on any OS, the rest is compiled for Linux only.

#[cfg(target_os = "linux")]
pub mod agent;
#[cfg(target_os = "linux")]
pub mod entry;
pub mod etc;
#[cfg(target_os = "linux")]
pub mod init;
pub mod launch;
#[cfg(target_os = "linux")]
pub mod overlay;
#[cfg(target_os = "linux")]
pub mod pipe;
#[cfg(target_os = "linux")]
pub mod reaper;
pub mod rootfs;
#[cfg(target_os = "linux")]
pub mod seccomp;
#[cfg(target_os = "linux")]
pub mod session;
#[cfg(target_os = "linux")]
pub mod syscall;
#[cfg(target_os = "linux")]
pub mod vm;
#[cfg(target_os = "linux")]
pub mod vm_agent;
