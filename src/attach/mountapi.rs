//! The seam between the graft and the kernel's new mount API: detached copies of mount trees
//! (`open_tree`), fresh detached tmpfs mounts (`fsopen`/`fsmount`), moving a tree into place
//! (`move_mount`) and making entries inside a tmpfs of our own. `LinuxMountApi` does it;
//! `RecordingMountApi` writes it down next to a `RecordingSyscall`, so a graft's whole sequence
//! can be checked without privileges. Classic mounts and the pivot stay in `guest::syscall`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use crate::guest::syscall::RecordingSyscall;

/// Where a detached tree is attached: a path in the current mount namespace, or an entry of a
/// tree that is already attached.
pub enum Place<'a, T> {
    Path(&'a Path),
    In(&'a T, &'a OsStr),
}

/// The mount-API operations a graft is made of. Each error names the path it was about.
pub trait MountApi {
    /// A handle on a mount tree (an fd on Linux).
    type Tree;
    /// A detached copy of the mount at `path` and every mount below it.
    fn clone_tree(&self, path: &Path) -> Result<Self::Tree>;
    /// Makes every mount of a detached tree read-only, nosuid, nodev and private.
    fn seal_tree(&self, tree: &Self::Tree) -> Result<()>;
    /// Makes every mount of a detached tree nosuid, nodev and private, read-only if asked, and
    /// with `userns` its files' owners are read through that namespace's id maps (an idmapped
    /// mount: a file the host's root owns is owned by that namespace's root).
    fn share_tree(
        &self,
        tree: &Self::Tree,
        read_only: bool,
        userns: Option<BorrowedFd<'_>>,
    ) -> Result<()>;
    /// A fresh, detached tmpfs whose root directory has `mode`.
    fn new_tmpfs(&self, mode: u32) -> Result<Self::Tree>;
    /// Attaches `tree` at `place`, on top of whatever is there.
    fn attach(&self, tree: &Self::Tree, place: Place<'_, Self::Tree>) -> Result<()>;
    /// A directory `name` at the root of `dir` (a tmpfs of our own).
    fn mkdir_in(&self, dir: &Self::Tree, name: &OsStr, mode: u32) -> Result<()>;
    /// An empty file `name` at the root of `dir`, to bind a non-directory onto.
    fn file_in(&self, dir: &Self::Tree, name: &OsStr) -> Result<()>;
    /// A symbolic link `name` at the root of `dir`.
    fn symlink_in(&self, dir: &Self::Tree, name: &OsStr, points_to: &Path) -> Result<()>;
    /// Makes the root of `tree` the working directory.
    fn enter(&self, tree: &Self::Tree) -> Result<()>;
}

/// A mount tree held by an fd, with the path it came from for error messages.
#[derive(Debug)]
pub struct TreeFd {
    pub fd: OwnedFd,
    pub what: PathBuf,
}

/// The real kernel.
pub struct LinuxMountApi;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on every mount of `tree`: `set`, private propagation, and the id maps of
/// `userns` when given.
fn set_tree_attr(tree: &TreeFd, set: u64, userns: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from `attr`, a live
    // `#[repr(C)]` struct laid out as the kernel's `struct mount_attr` (version 0), and the
    // path is an empty NUL-terminated string; the tree's fd and `userns` (borrowed, so open)
    // stay open for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl MountApi for LinuxMountApi {
    type Tree = TreeFd;

    fn clone_tree(&self, path: &Path) -> Result<TreeFd> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        let fd = open_tree(CWD, path, flags)
            .with_context(|| format!("cannot copy the mounts at {}", path.display()))?;
        Ok(TreeFd {
            fd,
            what: path.to_path_buf(),
        })
    }

    fn seal_tree(&self, tree: &TreeFd) -> Result<()> {
        set_tree_attr(
            tree,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            None,
        )
        .with_context(|| format!("cannot make the copy of {} read-only", tree.what.display()))
    }

    fn share_tree(
        &self,
        tree: &TreeFd,
        read_only: bool,
        userns: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if read_only {
            set |= MOUNT_ATTR_RDONLY;
        }
        if userns.is_some() {
            set |= MOUNT_ATTR_IDMAP;
        }
        set_tree_attr(tree, set, userns).with_context(|| {
            let how = match userns {
                Some(_) => "with the target's user ids",
                None => "private",
            };
            format!("cannot make the copy of {} {how}", tree.what.display())
        })
    }

    fn new_tmpfs(&self, mode: u32) -> Result<TreeFd> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).context("cannot create a tmpfs")?;
        fsconfig_set_string(fs.as_fd(), "mode", format!("{mode:o}"))
            .and_then(|()| fsconfig_set_string(fs.as_fd(), "size", "1m"))
            .and_then(|()| fsconfig_create(fs.as_fd()))
            .context("cannot configure a tmpfs")?;
        let fd = fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .context("cannot mount a tmpfs")?;
        Ok(TreeFd {
            fd,
            what: PathBuf::from("tmpfs"),
        })
    }

    fn attach(&self, tree: &TreeFd, place: Place<'_, TreeFd>) -> Result<()> {
        let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
        let (result, at) = match place {
            Place::Path(path) => (
                move_mount(tree.fd.as_fd(), "", CWD, path, flags),
                path.to_path_buf(),
            ),
            Place::In(dir, name) => (
                move_mount(tree.fd.as_fd(), "", dir.fd.as_fd(), name, flags),
                Path::new("/").join(name),
            ),
        };
        result.with_context(|| {
            format!(
                "cannot attach the copy of {} at {}",
                tree.what.display(),
                at.display()
            )
        })
    }

    fn mkdir_in(&self, dir: &TreeFd, name: &OsStr, mode: u32) -> Result<()> {
        rustix::fs::mkdirat(dir.fd.as_fd(), name, Mode::from_raw_mode(mode))
            .with_context(|| format!("cannot create /{} in a tmpfs", name.to_string_lossy()))
    }

    fn file_in(&self, dir: &TreeFd, name: &OsStr) -> Result<()> {
        rustix::fs::openat(
            dir.fd.as_fd(),
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop)
        .with_context(|| format!("cannot create /{} in a tmpfs", name.to_string_lossy()))
    }

    fn symlink_in(&self, dir: &TreeFd, name: &OsStr, points_to: &Path) -> Result<()> {
        rustix::fs::symlinkat(points_to, dir.fd.as_fd(), name).with_context(|| {
            format!(
                "cannot link /{} to {} in a tmpfs",
                name.to_string_lossy(),
                points_to.display()
            )
        })
    }

    fn enter(&self, tree: &TreeFd) -> Result<()> {
        rustix::process::fchdir(tree.fd.as_fd())
            .with_context(|| format!("cannot enter {}", tree.what.display()))
    }
}

/// Writes each operation as a line into the log of a `RecordingSyscall`, so that classic mounts
/// and mount-API calls appear in one sequence. Trees are named `t1`, `t2`, ... with their origin.
pub struct RecordingMountApi<'a> {
    pub log: &'a RecordingSyscall,
    next: std::cell::Cell<usize>,
}

impl<'a> RecordingMountApi<'a> {
    pub fn new(log: &'a RecordingSyscall) -> Self {
        Self {
            log,
            next: std::cell::Cell::new(0),
        }
    }

    fn push(&self, line: String) {
        self.log.calls.borrow_mut().push(line);
    }

    fn new_tree(&self, what: &str) -> String {
        self.next.set(self.next.get() + 1);
        format!("t{}({what})", self.next.get())
    }
}

impl MountApi for RecordingMountApi<'_> {
    type Tree = String;

    fn clone_tree(&self, path: &Path) -> Result<String> {
        let t = self.new_tree(&path.display().to_string());
        self.push(format!("clone_tree {} -> {t}", path.display()));
        Ok(t)
    }
    fn seal_tree(&self, tree: &String) -> Result<()> {
        self.push(format!("seal {tree}"));
        Ok(())
    }
    fn share_tree(
        &self,
        tree: &String,
        read_only: bool,
        userns: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let ro = if read_only { " read-only" } else { "" };
        let ids = if userns.is_some() { " idmapped" } else { "" };
        self.push(format!("share {tree}{ro}{ids}"));
        Ok(())
    }
    fn new_tmpfs(&self, mode: u32) -> Result<String> {
        let t = self.new_tree("tmpfs");
        self.push(format!("new_tmpfs {mode:o} -> {t}"));
        Ok(t)
    }
    fn attach(&self, tree: &String, place: Place<'_, String>) -> Result<()> {
        let at = match place {
            Place::Path(p) => p.display().to_string(),
            Place::In(dir, name) => format!("{dir}/{}", name.to_string_lossy()),
        };
        self.push(format!("attach {tree} at {at}"));
        Ok(())
    }
    fn mkdir_in(&self, dir: &String, name: &OsStr, mode: u32) -> Result<()> {
        self.push(format!("mkdir {dir}/{} {mode:o}", name.to_string_lossy()));
        Ok(())
    }
    fn file_in(&self, dir: &String, name: &OsStr) -> Result<()> {
        self.push(format!("file {dir}/{}", name.to_string_lossy()));
        Ok(())
    }
    fn symlink_in(&self, dir: &String, name: &OsStr, points_to: &Path) -> Result<()> {
        self.push(format!(
            "symlink {dir}/{} -> {}",
            name.to_string_lossy(),
            points_to.display()
        ));
        Ok(())
    }
    fn enter(&self, tree: &String) -> Result<()> {
        self.push(format!("enter {tree}"));
        Ok(())
    }
}
