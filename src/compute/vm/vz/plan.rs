//! A `VmSpec` as Virtualization.framework will build it, as plain data: which boot loader,
//! which devices in which order, the disks' caching and sync modes. `machine` turns this value
//! into VZ objects and nothing else; every decision is made here, where Linux can test it.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::super::spec::{Arch, Console, VmSpec};

/// How VZ caches a disk image's data on the host. Only `Cached` is used: `Automatic` (VZ's
/// default) has corrupted ext4 images for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    Cached,
}

/// How VZ makes the guest's flushes durable. `Fsync` pairs with `Cached` (the pair others
/// settled on); `Full` (F_FULLFSYNC on every flush) costs too much for a store disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSync {
    Fsync,
}

/// A virtio-blk disk backed by a raw image (`VZDiskImageStorageDeviceAttachment`), found by
/// the guest by its block device identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzDisk {
    pub id: String,
    pub image: PathBuf,
    pub read_only: bool,
    pub caching: Caching,
    pub sync: DiskSync,
}

/// A virtio-fs device with one directory (`VZSingleDirectoryShare`) under `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzShare {
    pub tag: String,
    pub dir: PathBuf,
    pub read_only: bool,
}

/// The virtio console that the guest knows as `hvc0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VzConsole {
    /// Appended to this file.
    File(PathBuf),
    /// No console device: the guest's messages are dropped.
    None,
}

/// The vsock device (`VZVirtioSocketDeviceConfiguration`) and how the host reaches it: a unix
/// socket speaking the hybrid vsock protocol, the same the QEMU backend's helper serves, so the
/// client side is one for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzVsock {
    pub host_socket: PathBuf,
    /// Guest connections to these host ports are relayed to `host_socket` + `_PORT`.
    pub host_ports: Vec<u32>,
}

/// Everything `machine` builds, in the order it builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzPlan {
    pub name: String,
    /// `VZLinuxBootLoader`: an uncompressed arm64 `Image`.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub console: VzConsole,
    pub disks: Vec<VzDisk>,
    pub shares: Vec<VzShare>,
    pub vsock: VzVsock,
    /// A virtio entropy device: the guest's RNG is seeded at once, not after minutes.
    pub entropy: bool,
}

/// What makes a description unbootable on Virtualization.framework.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("Virtualization.framework on Apple silicon boots aarch64 guests only, not {0}")]
    Arch(Arch),
    #[error("{0}")]
    Invalid(String),
    #[error("kernel {path}: {problem}")]
    Kernel { path: PathBuf, problem: String },
}

/// The plan for `spec`. Checks what VZ would refuse with a vaguer error at start.
pub fn plan(spec: &VmSpec) -> Result<VzPlan, PlanError> {
    if spec.arch != Arch::Aarch64 {
        return Err(PlanError::Arch(spec.arch));
    }
    spec.validate().map_err(PlanError::Invalid)?;
    if !spec.cmdline.split_whitespace().any(|w| w == "console=hvc0") {
        return Err(PlanError::Invalid(format!(
            "the kernel command line {:?} has no console=hvc0: the guest's messages would be lost",
            spec.cmdline
        )));
    }
    Ok(VzPlan {
        name: spec.name.clone(),
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        cmdline: spec.cmdline.clone(),
        cpus: spec.cpus,
        memory_bytes: spec.memory_mib << 20,
        console: match &spec.console {
            Console::File { path } => VzConsole::File(path.clone()),
            Console::None => VzConsole::None,
        },
        disks: spec
            .disks
            .iter()
            .map(|d| VzDisk {
                id: d.id.clone(),
                image: d.image.clone(),
                read_only: d.read_only,
                caching: Caching::Cached,
                sync: DiskSync::Fsync,
            })
            .collect(),
        shares: spec
            .shares
            .iter()
            .map(|s| VzShare {
                tag: s.tag.clone(),
                dir: s.host_dir.clone(),
                read_only: s.read_only,
            })
            .collect(),
        vsock: VzVsock {
            host_socket: spec.vsock.host_socket.clone(),
            host_ports: spec.vsock.host_ports.clone(),
        },
        entropy: true,
    })
}

/// The offset of the arm64 `Image` header's magic, `ARMd`.
const ARM64_MAGIC_AT: usize = 0x38;

/// Checks that `path` is a kernel `VZLinuxBootLoader` boots: an uncompressed arm64 `Image`.
/// VZ itself only says the VM failed to start.
pub fn check_kernel(path: &Path) -> Result<(), PlanError> {
    let problem = |problem: String| PlanError::Kernel {
        path: path.to_path_buf(),
        problem,
    };
    let mut head = Vec::with_capacity(64);
    std::fs::File::open(path)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .map_err(|e| problem(e.to_string()))?;
    kernel_verdict(&head).map_err(problem)
}

/// The verdict on a kernel file's first 64 bytes.
fn kernel_verdict(head: &[u8]) -> Result<(), String> {
    if head.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4) == Some(b"ARMd") {
        return Ok(());
    }
    let hint = if head.starts_with(&[0x1f, 0x8b]) {
        "it is gzip-compressed; VZLinuxBootLoader needs the uncompressed Image (`gunzip`)"
    } else if head.starts_with(b"MZ") && head.get(4..8) == Some(b"zimg") {
        "it is an EFI zboot image (compressed); use the kernel's uncompressed arch/arm64/boot/Image"
    } else {
        "it is not an arm64 Image (no ARMd magic at 0x38)"
    };
    Err(hint.into())
}

#[cfg(test)]
mod tests {
    use super::super::super::spec::{tests::example, Share};
    use super::*;

    #[test]
    fn the_description_becomes_boot_loader_devices_and_vsock() {
        let p = plan(&example()).unwrap();
        assert_eq!(p.kernel, PathBuf::from("/a/kernel"));
        assert_eq!(p.initrd, Some(PathBuf::from("/a/initrd")));
        assert_eq!(p.cmdline, "console=hvc0 quiet");
        assert_eq!(p.cpus, 2);
        assert_eq!(p.memory_bytes, 512 << 20);
        assert_eq!(p.console, VzConsole::File("/run/vm/console.log".into()));
        assert_eq!(p.vsock.host_socket, PathBuf::from("/run/vm/vsock"));
        assert_eq!(p.vsock.host_ports, [1025]);
        assert!(p.entropy);
    }

    #[test]
    fn every_disk_is_cached_with_fsync_whatever_the_description() {
        let p = plan(&example()).unwrap();
        let modes: Vec<_> = p
            .disks
            .iter()
            .map(|d| (d.id.as_str(), d.read_only, d.caching, d.sync))
            .collect();
        assert_eq!(
            modes,
            [
                ("root", true, Caching::Cached, DiskSync::Fsync),
                ("store", false, Caching::Cached, DiskSync::Fsync)
            ]
        );
    }

    #[test]
    fn project_and_profile_are_shares_of_their_own_tags() {
        let mut spec = example();
        spec.shares.push(Share {
            tag: "profile".into(),
            host_dir: "/Users/u/config".into(),
            read_only: true,
        });
        let p = plan(&spec).unwrap();
        assert_eq!(
            p.shares,
            [
                VzShare {
                    tag: "project".into(),
                    dir: "/src/app".into(),
                    read_only: false
                },
                VzShare {
                    tag: "profile".into(),
                    dir: "/Users/u/config".into(),
                    read_only: true
                }
            ]
        );
    }

    #[test]
    fn an_x86_64_guest_or_a_bad_description_is_refused_before_vz_sees_it() {
        let mut spec = example();
        spec.arch = Arch::X86_64;
        assert_eq!(plan(&spec), Err(PlanError::Arch(Arch::X86_64)));
        let mut spec = example();
        spec.cpus = 0;
        assert!(matches!(plan(&spec), Err(PlanError::Invalid(_))));
        let mut spec = example();
        spec.cmdline = "console=ttyAMA0".into();
        let err = plan(&spec).unwrap_err().to_string();
        assert!(err.contains("console=hvc0"), "{err}");
    }

    #[test]
    fn only_an_uncompressed_arm64_image_is_a_kernel() {
        let mut image = vec![0u8; 64];
        image[ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4].copy_from_slice(b"ARMd");
        assert_eq!(kernel_verdict(&image), Ok(()));
        assert!(kernel_verdict(&[0x1f, 0x8b, 8, 0])
            .unwrap_err()
            .contains("gzip"));
        let mut zboot = b"MZ\0\0zimg".to_vec();
        zboot.resize(64, 0);
        assert!(kernel_verdict(&zboot).unwrap_err().contains("zboot"));
        assert!(kernel_verdict(b"short").unwrap_err().contains("ARMd"));
    }

    #[test]
    fn a_kernel_file_is_checked_by_its_header() {
        let dir = tempfile::Builder::new()
            .prefix("agentenv-vz-kernel")
            .tempdir()
            .unwrap();
        let path = dir.path().join("Image");
        let mut image = vec![0u8; 4096];
        image[ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4].copy_from_slice(b"ARMd");
        std::fs::write(&path, &image).unwrap();
        assert_eq!(check_kernel(&path), Ok(()));
        std::fs::write(&path, [0x1f, 0x8b, 8, 0]).unwrap();
        let err = check_kernel(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("kernel {}", path.display())),
            "{err}"
        );
        assert!(check_kernel(&dir.path().join("missing")).is_err());
    }
}
