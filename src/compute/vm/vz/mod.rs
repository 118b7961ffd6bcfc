//! The `vz` backend: the VM backend's machine on macOS, through Virtualization.framework.
//! The VM is the one the QEMU backend boots (same `VmSpec`, guest, assets, boot exchange);
//! `plan` decides how VZ builds it (tested on any OS), `machine` builds and runs it, `host` is
//! the process that holds it, `launch` starts that process and boots the guest (the twin of
//! `vm::launch`), `entitlement` checks that this binary may run VMs at all.

#[cfg(target_os = "macos")]
pub mod backend;
pub mod entitlement;
#[cfg(target_os = "macos")]
pub mod host;
#[cfg(target_os = "macos")]
pub mod launch;
#[cfg(target_os = "macos")]
pub mod machine;
pub mod plan;
