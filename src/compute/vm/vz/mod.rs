//! The `vz` backend: the VM backend's machine on macOS, through Virtualization.framework.
//! The VM is the one the QEMU backend boots (same `VmSpec`, guest, assets); `plan` decides how
//! VZ builds it (tested on any OS), `machine` builds and runs it (macOS only), `entitlement`
//! checks that this binary may.

pub mod entitlement;
#[cfg(target_os = "macos")]
pub mod host;
pub mod hybrid;
#[cfg(target_os = "macos")]
pub mod machine;
pub mod plan;
