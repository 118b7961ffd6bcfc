//! The root filesystem of an environment, as a plan of plain data (`RootfsPlan`) and the code
//! that builds it through a `Syscall`. Which mounts a backend wants is decided by the backend;
//! this module only knows how to make them, in order, under a fresh tmpfs.

#[cfg(target_os = "linux")]
use std::path::Component;
use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
use anyhow::{bail, Context, Result};
#[cfg(target_os = "linux")]
use nix::mount::MsFlags;
#[cfg(target_os = "linux")]
use nix::sys::statvfs::{statvfs, FsFlags};

#[cfg(target_os = "linux")]
use super::syscall::Syscall;

/// One step in building a root. Every `path` is absolute inside the new root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RootOp {
    /// A directory in the root tmpfs.
    Dir { path: PathBuf, mode: u32 },
    /// A fresh tmpfs.
    Tmpfs { path: PathBuf, mode: u32 },
    /// A host file or directory tree made visible at `path`, nosuid and nodev.
    Bind {
        source: PathBuf,
        path: PathBuf,
        file: bool,
        read_only: bool,
    },
    /// A host file or directory bound at `path`, whose mount point lies in a tree the sandbox
    /// writes (its home): reached without following links, or refused.
    BindBeneath {
        source: PathBuf,
        path: PathBuf,
        file: bool,
    },
    /// A copy-on-write view: `lowers` below (the first on top), writes into `upper`; with
    /// `layer_in_memory`, `upper` and `work` are made on a tmpfs of the sandbox's own.
    Overlay {
        path: PathBuf,
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        userxattr: bool,
        #[serde(default)]
        layer_in_memory: bool,
    },
    /// A host device node (`/dev/null`...) made usable at `path`: nosuid, noexec.
    Device { source: PathBuf, path: PathBuf },
    /// `/proc` of the new PID namespace.
    Proc { path: PathBuf },
    /// Something of `/proc` hidden, if it exists: an empty read-only tmpfs over a directory,
    /// `/dev/null` over a file.
    Mask { path: PathBuf },
    /// Something already mounted (part of `/proc`), made read-only where it is, if it exists.
    ReadOnly { path: PathBuf },
    /// A private devpts instance.
    Devpts { path: PathBuf },
    /// A generated file.
    File {
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
    },
    /// A symbolic link at `path`.
    Symlink { path: PathBuf, points_to: PathBuf },
}

impl RootOp {
    /// The path inside the root this step creates.
    pub fn path(&self) -> &Path {
        match self {
            RootOp::Dir { path, .. }
            | RootOp::Tmpfs { path, .. }
            | RootOp::Bind { path, .. }
            | RootOp::Device { path, .. }
            | RootOp::BindBeneath { path, .. }
            | RootOp::Overlay { path, .. }
            | RootOp::Proc { path }
            | RootOp::Mask { path }
            | RootOp::ReadOnly { path }
            | RootOp::Devpts { path }
            | RootOp::File { path, .. }
            | RootOp::Symlink { path, .. } => path,
        }
    }

    fn is_mount(&self) -> bool {
        matches!(
            self,
            RootOp::Tmpfs { .. }
                | RootOp::Bind { .. }
                | RootOp::Device { .. }
                | RootOp::BindBeneath { .. }
                | RootOp::Overlay { .. }
                | RootOp::Proc { .. }
                | RootOp::Mask { .. }
                | RootOp::ReadOnly { .. }
                | RootOp::Devpts { .. }
        )
    }
}

/// A whole root: a tmpfs mounted on `staging`, the steps applied in order, then a pivot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootfsPlan {
    /// A directory on the current root where the new root is assembled.
    pub staging: PathBuf,
    pub ops: Vec<RootOp>,
    /// Remount the root tmpfs read-only at the end, as on a real system.
    pub read_only_root: bool,
}

impl RootfsPlan {
    /// Orders the steps so that a mount never hides what an earlier step made: mounts by
    /// depth (a parent before its children), then files and links, which may live inside them.
    pub fn sorted(mut self) -> Self {
        let depth = |p: &Path| p.components().count();
        self.ops
            .sort_by_key(|op| (!op.is_mount(), depth(op.path())));
        self
    }
}

#[cfg(target_os = "linux")]
/// `path` (absolute, inside the root) as a path under `staging`.
fn under(staging: &Path, path: &Path) -> Result<PathBuf> {
    let mut out = staging.to_path_buf();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => bail!("{} is not a plain absolute path", path.display()),
        }
    }
    Ok(out)
}

#[cfg(target_os = "linux")]
/// Builds `plan` and pivots into it. Must run in a private mount namespace.
pub fn build_root(plan: &RootfsPlan, sys: &dyn Syscall) -> Result<()> {
    make_mounts_private(sys)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &plan.staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    for op in &plan.ops {
        apply(op, &plan.staging, sys)
            .with_context(|| format!("cannot set up {}", op.path().display()))?;
    }
    sys.pivot_root(&plan.staging)?;
    if plan.read_only_root {
        remount_read_only(Path::new("/"), sys)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
/// Makes every mount of this (new) mount namespace private, so that nothing mounted from here
/// on propagates back to the namespace it was copied from.
pub fn make_mounts_private(sys: &dyn Syscall) -> Result<()> {
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
}

#[cfg(target_os = "linux")]
/// Makes a tmpfs we mounted at `at` (the root, after a pivot) read-only, as a real system's
/// root is to its users.
pub fn remount_read_only(at: &Path, sys: &dyn Syscall) -> Result<()> {
    sys.mount(
        None,
        at,
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None,
    )
}

#[cfg(target_os = "linux")]
/// Applies one step, making `op.path()` under `staging`.
pub fn apply(op: &RootOp, staging: &Path, sys: &dyn Syscall) -> Result<()> {
    let target = under(staging, op.path())?;
    let parent = target.parent().unwrap_or(staging);
    match op {
        RootOp::Dir { mode, .. } => sys.mkdir_all(&target, *mode),
        RootOp::Tmpfs { mode, .. } => {
            sys.mkdir_all(&target, 0o755)?;
            sys.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&format!("mode={mode:o}")),
            )
        }
        RootOp::Bind {
            source,
            file,
            read_only,
            ..
        } => {
            if *file {
                sys.mkdir_all(parent, 0o755)?;
                sys.write_file(&target, b"", 0o644)?;
            } else {
                sys.mkdir_all(&target, 0o755)?;
            }
            sys.mount(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            // No setuid file or device node of the host works through it. A remount must
            // keep the flags the kernel locked on the source mount.
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | locked_flags(source);
            if *read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                None,
            )?;
            // The remount covers the top mount only; mounts under the source came along.
            sys.restrict_tree(&target, *read_only)
        }
        RootOp::Device { source, .. } => {
            sys.mkdir_all(parent, 0o755)?;
            sys.write_file(&target, b"", 0o644)?;
            sys.mount(Some(source), &target, None, MsFlags::MS_BIND, None)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | locked_flags(source);
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                None,
            )
        }
        RootOp::Mask { .. } => match std::fs::symlink_metadata(&target) {
            Err(_) => Ok(()),
            Ok(m) if m.is_dir() => sys.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=0555"),
            ),
            Ok(_) => sys.mount(
                Some(Path::new("/dev/null")),
                &target,
                None,
                MsFlags::MS_BIND,
                None,
            ),
        },
        RootOp::ReadOnly { .. } => {
            if std::fs::symlink_metadata(&target).is_err() {
                return Ok(());
            }
            sys.mount(
                Some(&target),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let flags = MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | locked_flags(&target);
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                None,
            )
        }
        RootOp::BindBeneath { source, path, file } => {
            let rel = path.strip_prefix("/").unwrap_or(path);
            sys.bind_beneath(source, staging, rel, *file)?;
            // Nothing inside runs yet, so the path is still the one just bound: like every host
            // tree bound in, nosuid and nodev.
            sys.restrict_tree(&target, false)
        }
        RootOp::Overlay {
            lowers,
            upper,
            work,
            userxattr,
            layer_in_memory,
            ..
        } => {
            let layer = super::overlay::OverlayLayers {
                lowers,
                upper,
                work,
                userxattr: *userxattr,
                in_memory: *layer_in_memory,
            };
            super::overlay::mount_overlay(&layer, &target, sys)
        }
        RootOp::Proc { .. } => {
            sys.mkdir_all(&target, 0o555)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            sys.mount(Some(Path::new("proc")), &target, Some("proc"), flags, None)
                .or_else(|e| {
                    // A container's masked /proc makes a fresh proc mount "too revealing";
                    // the host's /proc then stands in, with the host's process list.
                    tracing::warn!("{e:#}; showing the host's /proc instead");
                    sys.mount(
                        Some(Path::new("/proc")),
                        &target,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                })
        }
        RootOp::Devpts { .. } => {
            sys.mkdir_all(&target, 0o755)?;
            sys.mount(
                Some(Path::new("devpts")),
                &target,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620"),
            )
        }
        RootOp::File { contents, mode, .. } => {
            sys.mkdir_all(parent, 0o755)?;
            sys.write_file(&target, contents, *mode)
        }
        RootOp::Symlink { points_to, .. } => {
            sys.mkdir_all(parent, 0o755)?;
            sys.symlink(points_to, &target)
        }
    }
}

#[cfg(target_os = "linux")]
fn locked_flags(source: &Path) -> MsFlags {
    let Ok(st) = statvfs(source) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::syscall::RecordingSyscall;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn mounts_go_parent_first_and_files_last() {
        let plan = RootfsPlan {
            staging: p("/s"),
            ops: vec![
                RootOp::File {
                    path: p("/etc/hosts"),
                    contents: b"x".to_vec(),
                    mode: 0o644,
                },
                RootOp::Bind {
                    source: p("/h/proj"),
                    path: p("/tmp/a/proj"),
                    file: false,
                    read_only: false,
                },
                RootOp::Tmpfs {
                    path: p("/tmp"),
                    mode: 0o1777,
                },
            ],
            read_only_root: true,
        }
        .sorted();
        let order: Vec<_> = plan.ops.iter().map(|o| o.path().to_path_buf()).collect();
        assert_eq!(order, vec![p("/tmp"), p("/tmp/a/proj"), p("/etc/hosts")]);
    }

    #[test]
    fn build_root_mounts_under_staging_then_pivots() {
        let plan = RootfsPlan {
            staging: p("/s"),
            ops: vec![
                RootOp::Overlay {
                    path: p("/nix"),
                    lowers: vec![p("/nix")],
                    upper: p("/u"),
                    work: p("/w"),
                    userxattr: true,
                    layer_in_memory: false,
                },
                RootOp::Symlink {
                    path: p("/bin/sh"),
                    points_to: p("/nix/store/b/bin/bash"),
                },
            ],
            read_only_root: false,
        };
        let sys = RecordingSyscall::default();
        build_root(&plan, &sys).unwrap();
        let calls = sys.calls.into_inner();
        assert!(
            calls[0].starts_with("mount - / - MsFlags(MS_REC | MS_PRIVATE)"),
            "{calls:?}"
        );
        assert!(calls.iter().any(|c| c == "mount overlay /s/nix overlay MsFlags(MS_NOSUID | MS_NODEV) lowerdir=/nix,upperdir=/u,workdir=/w,userxattr"), "{calls:?}");
        assert!(calls.contains(&"symlink /s/bin/sh -> /nix/store/b/bin/bash".to_string()));
        assert_eq!(calls.last().unwrap(), "pivot_root /s");
    }

    #[test]
    fn relative_or_dotted_paths_are_refused() {
        assert!(under(Path::new("/s"), Path::new("/a/../b")).is_err());
        assert_eq!(
            under(Path::new("/s"), Path::new("/a/b")).unwrap(),
            p("/s/a/b")
        );
    }
}
