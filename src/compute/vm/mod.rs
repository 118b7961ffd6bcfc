//! The VM backend: an environment in its own virtual machine. A small guest root with agentenv
//! as `/init`, the golden store image cloned per environment as its writable `/nix`, the
//! project and profile shared over virtio-fs, the guest agent reached over vsock. `spec` is the
//! platform-neutral description, `qemu` its translation for Linux hosts.

pub mod assets;
#[cfg(target_os = "linux")]
pub mod backend;
pub mod boot;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod capture;
pub mod clock;
pub mod clone;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod enter;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod env;
pub mod hybrid;
#[cfg(target_os = "linux")]
pub mod launch;
pub mod qemu;
pub mod spec;
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub mod up;
pub mod vz;
