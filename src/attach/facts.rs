//! What a running target looks like, read from the host through `/proc/PID` without changing
//! anything: its environment, working directory, the top level of its root, whether it has a
//! `/nix`, which of its namespaces differ from ours, and what its processes may do (capability
//! sets, `no_new_privs`, seccomp mode). Plans are made from these facts.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sched::CloneFlags;

use super::target::Target;
use crate::diag::Diagnostic;

/// One entry of a directory of the target (its root, or where a tree needs a mount point).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEntry {
    pub name: OsString,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A symbolic link and what it points to.
    Link(PathBuf),
    /// A file, device, socket or fifo.
    Other,
}

/// The entries of a directory of the target, one level deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootListing {
    /// Permission bits of the directory.
    pub mode: u32,
    pub entries: Vec<RootEntry>,
}

/// Whether and how the target has a Nix store of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetNix {
    /// No `/nix` directory.
    Absent,
    /// `/nix/store` is a directory.
    Store,
    /// `/nix` is a directory without a `store` directory.
    NoStore,
    /// Its `/nix/store` is the toolbox's store itself (a process on the host).
    Shared,
}

/// A namespace kind, in the terms of `/proc/PID/ns` and setns(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Cgroup,
    Ipc,
    Uts,
    Net,
    User,
    Mount,
    Pid,
}

impl Namespace {
    pub const ALL: [Namespace; 7] = [
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::User,
        Namespace::Mount,
        Namespace::Pid,
    ];

    /// The file name under `/proc/PID/ns`.
    pub fn file(self) -> &'static str {
        match self {
            Namespace::Cgroup => "cgroup",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::User => "user",
            Namespace::Mount => "mnt",
            Namespace::Pid => "pid",
        }
    }

    pub fn flag(self) -> CloneFlags {
        match self {
            Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::User => CloneFlags::CLONE_NEWUSER,
            Namespace::Mount => CloneFlags::CLONE_NEWNS,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
        }
    }
}

/// Everything read about a target before attaching.
#[derive(Debug, Clone)]
pub struct TargetFacts {
    /// Its environment variables, in order.
    pub environ: Vec<(OsString, OsString)>,
    /// Its working directory, as it sees it (`/` when that is unknown).
    pub cwd: PathBuf,
    pub root: RootListing,
    pub nix: TargetNix,
    /// Its namespaces that are not ours (the mount namespace is always joined).
    pub foreign: Vec<Namespace>,
}

/// Reads the facts of `target`, whose `/nix/store` is compared with `toolbox_store` (the
/// toolbox's store on this machine). Fails with the path when `/proc` refuses.
pub fn read_facts(target: &Target, toolbox_store: &Path) -> Result<TargetFacts> {
    let proc_dir = PathBuf::from(format!("/proc/{}", target.pid));
    let environ_path = proc_dir.join("environ");
    let environ = std::fs::read(&environ_path)
        .with_context(|| format!("cannot read {}", environ_path.display()))?;
    let root_dir = proc_dir.join("root");
    check_proc(target, &root_dir)?;
    Ok(TargetFacts {
        environ: parse_environ(&environ),
        cwd: std::fs::read_link(proc_dir.join("cwd"))
            .ok()
            .filter(|p| p.is_absolute() && !p.as_os_str().as_bytes().ends_with(b" (deleted)"))
            .unwrap_or_else(|| PathBuf::from("/")),
        root: read_listing(&root_dir)?,
        nix: read_target_nix(&root_dir, toolbox_store),
        foreign: Namespace::ALL
            .into_iter()
            .filter(|ns| !same_namespace(&proc_dir, *ns))
            .collect(),
    })
}

/// The session's bash reads its start-up script as `/proc/self/fd/N` in the target's root: a
/// root without `/proc` (a chroot, say) cannot run it. lstat: `self` read from the host does not
/// resolve in a procfs of another PID namespace.
fn check_proc(target: &Target, root_dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(root_dir.join("proc/self")).is_ok() {
        return Ok(());
    }
    Err(Diagnostic::new(format!("the root of {} has no /proc", target.label))
        .detail("the session reads its start-up script through /proc/self in the target's root")
        .hint(format!(
            "mount one there (`mkdir -p {0}/proc && mount -t proc proc {0}/proc`), or attach to a process whose root has one",
            root_dir.display()
        ))
        .into())
}

/// `KEY=VALUE` strings separated by NUL bytes; entries without `=` are dropped.
pub fn parse_environ(data: &[u8]) -> Vec<(OsString, OsString)> {
    data.split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            (eq > 0).then(|| {
                (
                    OsStr::from_bytes(&kv[..eq]).to_os_string(),
                    OsStr::from_bytes(&kv[eq + 1..]).to_os_string(),
                )
            })
        })
        .collect()
}

/// The entries of the directory `root_dir` (a target's root, or a directory in it, read from
/// the host), sorted by name, and its permission bits.
pub fn read_listing(root_dir: &Path) -> Result<RootListing> {
    let meta = std::fs::metadata(root_dir)
        .with_context(|| format!("cannot read the root of {}", root_dir.display()))?;
    let mut entries = Vec::new();
    let listing = std::fs::read_dir(root_dir)
        .with_context(|| format!("cannot list {}", root_dir.display()))?;
    for e in listing {
        let e = e.with_context(|| format!("cannot list {}", root_dir.display()))?;
        let Ok(ft) = e.file_type() else { continue };
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            match std::fs::read_link(e.path()) {
                Ok(points_to) => EntryKind::Link(points_to),
                Err(_) => continue,
            }
        } else {
            EntryKind::Other
        };
        entries.push(RootEntry {
            name: e.file_name(),
            kind,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(RootListing {
        mode: meta.permissions().mode() & 0o7777,
        entries,
    })
}

fn read_target_nix(root_dir: &Path, toolbox_store: &Path) -> TargetNix {
    let nix = root_dir.join("nix");
    // lstat: an absolute link would be followed on the host's root, not the target's.
    if !std::fs::symlink_metadata(&nix).is_ok_and(|m| m.is_dir()) {
        return TargetNix::Absent;
    }
    match std::fs::symlink_metadata(nix.join("store")) {
        Ok(store) if store.is_dir() => {
            let toolbox = std::fs::metadata(toolbox_store);
            if toolbox.is_ok_and(|t| t.dev() == store.dev() && t.ino() == store.ino()) {
                TargetNix::Shared
            } else {
                TargetNix::Store
            }
        }
        _ => TargetNix::NoStore,
    }
}

fn same_namespace(proc_dir: &Path, ns: Namespace) -> bool {
    let theirs = std::fs::metadata(proc_dir.join("ns").join(ns.file()));
    let ours = std::fs::metadata(Path::new("/proc/self/ns").join(ns.file()));
    match (theirs, ours) {
        (Ok(t), Ok(o)) => t.dev() == o.dev() && t.ino() == o.ino(),
        _ => false,
    }
}

/// What a process may do, from its `/proc/PID/status`: the bounds a session stays within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    pub bounding: u64,
    pub permitted: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
    /// 0: no seccomp, 1: strict, 2: filters.
    pub seccomp: u32,
    /// Its effective user and group and its supplementary groups, as the reader's user
    /// namespace sees them.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The privileges of process `pid` (0: this process). Kernels too old to report a set
/// report it as full (bounding) or empty (ambient), as they behave.
pub fn read_privileges(pid: i32) -> Result<Privileges> {
    let process = match pid {
        0 => procfs::process::Process::myself(),
        pid => procfs::process::Process::new(pid),
    };
    let status = process
        .and_then(|p| p.status())
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(Privileges {
        bounding: status.capbnd.unwrap_or(u64::MAX),
        permitted: status.capprm,
        effective: status.capeff,
        inheritable: status.capinh,
        ambient: status.capamb.unwrap_or(0),
        no_new_privs: status.nonewprivs.is_some_and(|n| n != 0),
        seccomp: status.seccomp.unwrap_or(0),
        uid: status.euid,
        gid: status.egid,
        groups: status.groups,
    })
}

impl TargetFacts {
    /// The value of the target's variable `key`.
    pub fn var(&self, key: &str) -> Option<&OsStr> {
        self.environ
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_keeps_order_and_values_with_equals_signs() {
        let env = parse_environ(b"PATH=/bin:/usr/bin\0A=b=c\0junk\0=x\0EMPTY=\0");
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/bin:/usr/bin".into()),
                ("A".into(), "b=c".into()),
                ("EMPTY".into(), "".into()),
            ]
        );
    }

    #[test]
    fn own_process_shares_every_namespace_and_the_store() {
        let me = Target::of_pid(std::process::id() as i32).unwrap();
        let store = Path::new(crate::store::HOST_NIX).join("store");
        let facts = read_facts(&me, &store).unwrap();
        assert!(facts.foreign.is_empty(), "{:?}", facts.foreign);
        assert_eq!(facts.cwd, std::env::current_dir().unwrap());
        assert!(facts.root.entries.iter().any(|e| e.name == "proc"));
        if Path::new("/nix/store").is_dir() {
            assert_eq!(facts.nix, TargetNix::Shared);
        }
    }
}
