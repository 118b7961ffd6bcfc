//! The seam between agentenv and the kernel for building a sandbox root: every mount, pivot and
//! file it makes goes through `Syscall`. `LinuxSyscall` does it; `RecordingSyscall` writes down
//! what would be done, so plans can be checked without privileges.

use std::cell::RefCell;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};

/// The operations a sandbox root is built with. Each error names the path it was about.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount_detach(&self, target: &Path) -> Result<()>;
    /// Binds `source` on the existing `rel` below `root`, a path no component of which may be
    /// a symlink (the tree is written by the sandbox, which could plant one); `file` says
    /// which kind the mount point must be.
    fn bind_beneath(&self, source: &Path, root: &Path, rel: &Path, file: bool) -> Result<()>;
    /// Makes the mount at `target` and every mount under it nosuid and nodev (and read-only
    /// with `read_only`). A no-op on kernels without mount_setattr(2).
    fn restrict_tree(&self, target: &Path, read_only: bool) -> Result<()>;
    /// Makes `new_root` the root of this mount namespace and detaches the old one.
    fn pivot_root(&self, new_root: &Path) -> Result<()>;
    fn sethostname(&self, name: &str) -> Result<()>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()>;
    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()>;
    fn symlink(&self, points_to: &Path, link: &Path) -> Result<()>;
    fn chdir(&self, path: &Path) -> Result<()>;
}

/// The real kernel.
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).with_context(|| {
            format!(
                "cannot mount {} on {} ({})",
                source
                    .map(|s| s.display().to_string())
                    .unwrap_or_else(|| fstype.unwrap_or("-").to_string()),
                target.display(),
                fstype.unwrap_or("bind")
            )
        })
    }

    fn umount_detach(&self, target: &Path) -> Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", target.display()))
    }

    fn bind_beneath(&self, source: &Path, root: &Path, rel: &Path, file: bool) -> Result<()> {
        use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
        let refused = || {
            format!(
                "cannot show {} at {}: it is not a {} reached without links",
                source.display(),
                root.join(rel).display(),
                if file { "file" } else { "directory" }
            )
        };
        let dir = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", root.display()))?;
        let fd = rustix::fs::openat2(
            &dir,
            rel,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .with_context(refused)?;
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd).with_context(refused)?.st_mode);
        let want = if file {
            FileType::RegularFile
        } else {
            FileType::Directory
        };
        if kind != want {
            anyhow::bail!(refused());
        }
        use std::os::fd::AsRawFd;
        let at = format!("/proc/self/fd/{}", fd.as_raw_fd());
        nix::mount::mount(
            Some(source),
            at.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "cannot mount {} on {}",
                source.display(),
                root.join(rel).display()
            )
        })
    }

    fn restrict_tree(&self, target: &Path, read_only: bool) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if read_only {
            set |= libc::MOUNT_ATTR_RDONLY;
        }
        let attr = libc::mount_attr {
            attr_set: set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let path = std::ffi::CString::new(target.as_os_str().as_bytes())
            .with_context(|| format!("{} contains a NUL byte", target.display()))?;
        // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from `attr`, a live
        // struct of the kernel's layout, and the NUL-terminated `path`; both outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::AT_RECURSIVE,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        };
        match std::io::Error::last_os_error() {
            _ if rc == 0 => Ok(()),
            e if e.raw_os_error() == Some(libc::ENOSYS) => Ok(()),
            e => Err(e).with_context(|| {
                format!(
                    "cannot make the mounts under {} nosuid,nodev",
                    target.display()
                )
            }),
        }
    }

    fn pivot_root(&self, new_root: &Path) -> Result<()> {
        // pivot_root(".", ".") stacks the old root under the new one at "/", so no directory
        // for it is needed; unmounting "." then drops it.
        nix::unistd::chdir(new_root)
            .with_context(|| format!("cannot enter {}", new_root.display()))?;
        nix::unistd::pivot_root(".", ".")
            .with_context(|| format!("cannot make {} the root", new_root.display()))?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).context("cannot detach the old root")?;
        nix::unistd::chdir("/").context("cannot enter the new root")
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).with_context(|| format!("cannot set the hostname to {name}"))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .with_context(|| format!("cannot create {}", path.display()))
    }

    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(contents))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn symlink(&self, points_to: &Path, link: &Path) -> Result<()> {
        std::os::unix::fs::symlink(points_to, link)
            .with_context(|| format!("cannot link {} to {}", link.display(), points_to.display()))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).with_context(|| format!("cannot enter {}", path.display()))
    }
}

/// Records calls as lines of text instead of making them; every call succeeds.
#[derive(Default)]
pub struct RecordingSyscall {
    pub calls: RefCell<Vec<String>>,
}

impl RecordingSyscall {
    fn push(&self, s: String) -> Result<()> {
        self.calls.borrow_mut().push(s);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.push(format!(
            "mount {} {} {} {:?} {}",
            source
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| "-".into()),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ))
    }
    fn umount_detach(&self, target: &Path) -> Result<()> {
        self.push(format!("umount {}", target.display()))
    }
    fn bind_beneath(&self, source: &Path, root: &Path, rel: &Path, file: bool) -> Result<()> {
        self.push(format!(
            "bind_beneath {} {}/{} file={file}",
            source.display(),
            root.display(),
            rel.display()
        ))
    }

    fn restrict_tree(&self, target: &Path, read_only: bool) -> Result<()> {
        self.push(format!("restrict_tree {} ro={read_only}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path) -> Result<()> {
        self.push(format!("pivot_root {}", new_root.display()))
    }
    fn sethostname(&self, name: &str) -> Result<()> {
        self.push(format!("sethostname {name}"))
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        self.push(format!("mkdir {} {mode:o}", path.display()))
    }
    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        self.push(format!(
            "write {} {mode:o} {}B",
            path.display(),
            contents.len()
        ))
    }
    fn symlink(&self, points_to: &Path, link: &Path) -> Result<()> {
        self.push(format!(
            "symlink {} -> {}",
            link.display(),
            points_to.display()
        ))
    }
    fn chdir(&self, path: &Path) -> Result<()> {
        self.push(format!("chdir {}", path.display()))
    }
}
