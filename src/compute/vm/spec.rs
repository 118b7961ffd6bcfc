//! A virtual machine, described as plain data: what to boot, with how much, which disks,
//! shared directories and vsock ports. Nothing here is QEMU's or Virtualization.framework's:
//! `qemu` translates it for Linux hosts, and a macOS backend turns the same value into VZ
//! objects only when it starts the VM.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The guest's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Aarch64,
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    /// The architecture this program was built for.
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            other => Err(format!(
                "unknown architecture {other:?} (aarch64 or x86_64)"
            )),
        }
    }
}

/// A block device backed by a raw image file. The guest finds it by `id` (the virtio-blk
/// serial, VZ's block device identifier), not by the order of the disks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub id: String,
    pub image: PathBuf,
    pub read_only: bool,
}

/// A host directory the guest mounts with `mount -t virtiofs TAG`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub tag: String,
    pub host_dir: PathBuf,
    pub read_only: bool,
}

/// The VM's vsock device, seen from the host as a unix socket speaking the hybrid vsock
/// protocol (Firecracker's, vfkit's): connect to `host_socket` and send `CONNECT <port>\n` to
/// reach a port the guest listens on; a guest connecting to the host's port P reaches a
/// listener at `host_socket` + `_P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub host_socket: PathBuf,
    /// Host ports the guest connects to (listeners at `host_socket_P`).
    pub host_ports: Vec<u32>,
}

impl Vsock {
    /// Where a listener for the guest's connections to host port `port` lives.
    pub fn host_listener(&self, port: u32) -> PathBuf {
        let mut s = self.host_socket.clone().into_os_string();
        s.push(format!("_{port}"));
        PathBuf::from(s)
    }
}

/// Where the guest's console (`hvc0`) goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Console {
    /// Appended to a file, whose tail is shown when the guest does not come up.
    File { path: PathBuf },
    /// Discarded.
    None,
}

/// One virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// For process listings and logs (`agentenv-vm-<env>`).
    pub name: String,
    pub arch: Arch,
    /// An uncompressed kernel image (arm64 `Image`, as VZLinuxBootLoader requires).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    pub shares: Vec<Share>,
    pub vsock: Vsock,
    pub console: Console,
}

impl VmSpec {
    /// Checks what any hypervisor would refuse, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpus == 0 {
            return Err("a VM needs at least one CPU".into());
        }
        if self.memory_mib < 128 {
            return Err(format!(
                "{} MiB of memory is too little for a VM (at least 128)",
                self.memory_mib
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for d in &self.disks {
            if !ids.insert(("disk", d.id.as_str())) {
                return Err(format!("two disks have the id {:?}", d.id));
            }
            // virtio-blk serials are at most 20 bytes.
            if d.id.is_empty() || d.id.len() > 20 || !d.id.bytes().all(safe_byte) {
                return Err(format!("disk id {:?} must be 1-20 of [A-Za-z0-9_-]", d.id));
            }
        }
        for s in &self.shares {
            if !ids.insert(("share", s.tag.as_str())) {
                return Err(format!("two shares have the tag {:?}", s.tag));
            }
            // The virtio-fs tag is at most 36 bytes.
            if s.tag.is_empty() || s.tag.len() > 36 || !s.tag.bytes().all(safe_byte) {
                return Err(format!(
                    "share tag {:?} must be 1-36 of [A-Za-z0-9_-]",
                    s.tag
                ));
            }
        }
        if self.vsock.guest_cid < 3 {
            return Err(format!(
                "vsock CID {} is reserved (guests have 3 or more)",
                self.vsock.guest_cid
            ));
        }
        Ok(())
    }
}

fn safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn example() -> VmSpec {
        VmSpec {
            name: "agentenv-vm-test".into(),
            arch: Arch::Aarch64,
            kernel: "/a/kernel".into(),
            initrd: Some("/a/initrd".into()),
            cmdline: "console=hvc0 quiet".into(),
            cpus: 2,
            memory_mib: 512,
            disks: vec![
                Disk {
                    id: "root".into(),
                    image: "/a/root.img".into(),
                    read_only: true,
                },
                Disk {
                    id: "store".into(),
                    image: "/e/store.img".into(),
                    read_only: false,
                },
            ],
            shares: vec![Share {
                tag: "project".into(),
                host_dir: "/src/app".into(),
                read_only: false,
            }],
            vsock: Vsock {
                guest_cid: 3,
                host_socket: "/run/vm/vsock".into(),
                host_ports: vec![1025],
            },
            console: Console::File {
                path: "/run/vm/console.log".into(),
            },
        }
    }

    #[test]
    fn a_description_survives_json_unchanged() {
        let spec = example();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"arch\":\"aarch64\""), "{json}");
        let back: VmSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn guest_connections_reach_a_listener_named_after_the_port() {
        assert_eq!(
            example().vsock.host_listener(1025),
            PathBuf::from("/run/vm/vsock_1025")
        );
    }

    #[test]
    fn the_example_is_valid() {
        assert_eq!(example().validate(), Ok(()));
    }

    #[test]
    fn duplicate_or_unsafe_ids_are_refused() {
        let mut spec = example();
        spec.disks[1].id = "root".into();
        assert!(spec.validate().unwrap_err().contains("two disks"));
        let mut spec = example();
        spec.shares[0].tag = "a,b".into();
        assert!(spec.validate().unwrap_err().contains("share tag"));
        let mut spec = example();
        spec.disks[0].id = "x".repeat(21);
        assert!(spec.validate().is_err());
    }

    #[test]
    fn too_little_of_anything_is_refused() {
        let mut spec = example();
        spec.cpus = 0;
        assert!(spec.validate().is_err());
        let mut spec = example();
        spec.memory_mib = 64;
        assert!(spec.validate().is_err());
        let mut spec = example();
        spec.vsock.guest_cid = 2;
        assert!(spec.validate().is_err());
    }

    #[test]
    fn architectures_parse_by_either_name() {
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!("x86_64".parse::<Arch>(), Ok(Arch::X86_64));
        assert!("riscv64".parse::<Arch>().is_err());
    }
}
