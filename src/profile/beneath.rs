//! A home reached through directory descriptors. Every path below it is opened one directory
//! at a time from a descriptor of the home, never through a symlink that a sandbox or a
//! container could have planted (in the user's own `$HOME` on a plain host, only through
//! symlinks that stay inside it), and every change is made relative to the descriptor of its
//! parent: a directory swapped for a symlink between two steps cannot lead a change outside.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

/// Which symlinks below a home may be gone through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HomeLinks {
    /// None: a home that a sandbox or a container writes (the default, also for journals
    /// written before this was recorded).
    #[default]
    Refused,
    /// Those that stay inside the home: the user's own `$HOME`, where `~/.config` may be a
    /// link to `~/dotfiles/config`.
    InHome,
}

/// How many symlinks a walk goes through at most (as the kernel's limit).
const MAX_HOPS: usize = 40;

/// Directories are opened only to be walked through and changed relative to: on Linux an
/// `O_PATH` descriptor, which needs no read permission.
#[cfg(target_os = "linux")]
const DIR_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
#[cfg(not(target_os = "linux"))]
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A home opened once; paths below it are reached from this descriptor.
#[derive(Debug)]
pub struct HomeDir {
    /// As the journal names it.
    path: PathBuf,
    /// Resolved: an absolute symlink in the home may name either.
    real: PathBuf,
    root: OwnedFd,
    links: HomeLinks,
}

/// One entry: its name in an open directory (shared, so that the entries of one directory
/// reuse one descriptor).
#[derive(Debug, Clone)]
pub struct Place {
    dir: Rc<OwnedFd>,
    name: OsString,
    /// The directory's path in the home, for `place_near`.
    parent: Option<PathBuf>,
}

impl HomeDir {
    /// Opens `home` (its own path is the caller's and is trusted; what is below it is not).
    pub fn open(home: &Path, links: HomeLinks) -> Result<Self> {
        let root = rustix::fs::open(
            home,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open the home directory {}", home.display()))?;
        let real = std::fs::canonicalize(home)
            .with_context(|| format!("cannot resolve the home directory {}", home.display()))?;
        Ok(Self {
            path: home.to_path_buf(),
            real,
            root,
            links,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The home's own owner and group.
    pub fn owner(&self) -> Result<(u32, u32)> {
        let st = rustix::fs::fstat(&self.root)
            .with_context(|| format!("cannot inspect {}", self.path.display()))?;
        Ok((st.st_uid, st.st_gid))
    }

    /// True if `path` is the home or below it, by name.
    pub fn holds(&self, path: &Path) -> bool {
        path.starts_with(&self.path)
    }

    /// The entry at `path` (absolute, below the home), its parent opened without following a
    /// symlink the home's policy refuses. `ELOOP`, `ENOTDIR` or `EXDEV` if a directory on the
    /// way is not one (a symlink, a file) or leads out; `ENOENT` if one is missing.
    pub fn place(&self, path: &Path) -> std::io::Result<Place> {
        let (rel, name) = self.split(path)?;
        Ok(Place {
            dir: Rc::new(self.open_dir(rel)?),
            name,
            parent: path.parent().map(Path::to_path_buf),
        })
    }

    /// `place`, reusing the descriptor of `cached` when it is of the same directory.
    pub fn place_near(&self, path: &Path, cached: Option<&Place>) -> std::io::Result<Place> {
        match cached {
            Some(c) if c.parent.is_some() && c.parent.as_deref() == path.parent() => {
                let (_, name) = self.split(path)?;
                Ok(Place {
                    dir: Rc::clone(&c.dir),
                    name,
                    parent: c.parent.clone(),
                })
            }
            _ => self.place(path),
        }
    }

    /// `path`'s parent relative to the home, and its name.
    fn split<'a>(&self, path: &'a Path) -> std::io::Result<(&'a Path, OsString)> {
        let rel = path.strip_prefix(&self.path).map_err(|_| Errno::XDEV)?;
        match rel.components().next_back() {
            Some(Component::Normal(n)) => {
                Ok((rel.parent().unwrap_or(Path::new("")), n.to_os_string()))
            }
            _ => Err(Errno::INVAL.into()),
        }
    }

    /// The directory `rel` (relative to the home, only plain names) opened for `*at` calls.
    pub fn open_dir(&self, rel: &Path) -> std::io::Result<OwnedFd> {
        let mut names = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n.to_os_string()),
                Component::CurDir => {}
                _ => return Err(Errno::INVAL.into()),
            }
        }
        if names.is_empty() {
            return Ok(rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?);
        }
        #[cfg(target_os = "linux")]
        if self.links == HomeLinks::Refused {
            use rustix::fs::ResolveFlags;
            let resolve =
                ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            let joined: PathBuf = names.iter().collect();
            match rustix::fs::openat2(&self.root, &joined, DIR_FLAGS, Mode::empty(), resolve) {
                // Linux before 5.6: walk one name at a time instead.
                Err(Errno::NOSYS) => {}
                r => return Ok(r?),
            }
        }
        self.walk(names)
    }

    /// `open_dir` one name at a time, each opened with `O_NOFOLLOW`; a symlink met on the way
    /// is gone through only if the policy allows it and it stays in the home.
    fn walk(&self, names: Vec<OsString>) -> std::io::Result<OwnedFd> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut todo: Vec<OsString> = names.into_iter().rev().collect();
        let mut hops = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                stack.pop().ok_or(Errno::XDEV)?;
                continue;
            }
            if name == "." || name.is_empty() {
                continue;
            }
            let at = stack.last().map_or(self.root.as_fd(), |f| f.as_fd());
            match rustix::fs::openat(at, &name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => stack.push(fd),
                Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                    let target = match rustix::fs::readlinkat(at, &name, Vec::new()) {
                        Ok(t) => PathBuf::from(OsString::from_vec(t.into_bytes())),
                        // Not a symlink: a file where a directory must be.
                        Err(_) => return Err(Errno::NOTDIR.into()),
                    };
                    hops += 1;
                    if self.links == HomeLinks::Refused || hops > MAX_HOPS {
                        return Err(Errno::LOOP.into());
                    }
                    let rest = if target.is_absolute() {
                        stack.clear();
                        target
                            .strip_prefix(&self.path)
                            .or_else(|_| target.strip_prefix(&self.real))
                            .map_err(|_| Errno::XDEV)?
                            .to_path_buf()
                    } else {
                        target
                    };
                    for c in rest.components().rev() {
                        match c {
                            Component::Normal(n) => todo.push(n.to_os_string()),
                            Component::ParentDir => todo.push("..".into()),
                            _ => {}
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => Ok(rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?),
        }
    }

    /// Creates the directory `rel` and the missing ones above it, below the home.
    pub fn create_dirs(&self, rel: &Path) -> Result<()> {
        let mut at = PathBuf::new();
        for c in rel.components() {
            at.push(c);
            let place = self
                .place(&self.path.join(&at))
                .with_context(|| format!("cannot reach {}", self.path.join(&at).display()))?;
            match place.mkdir() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create {}", self.path.join(&at).display())
                    })
                }
            }
        }
        // What is there must be a directory reached without a refused symlink.
        self.open_dir(rel)
            .map(drop)
            .with_context(|| format!("cannot reach {}", self.path.join(rel).display()))
    }
}

impl Place {
    /// The entry `name` in the directory `dir` (a directory of agentenv's own, not the home's).
    pub fn in_dir(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Self> {
        Ok(Self {
            dir: Rc::new(rustix::io::fcntl_dupfd_cloexec(dir, 0)?),
            name: name.to_os_string(),
            parent: None,
        })
    }

    /// The entry itself, not what it points to; `None` if nothing is there.
    pub fn stat(&self) -> std::io::Result<Option<Stat>> {
        match rustix::fs::statat(&*self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn exists(&self) -> bool {
        self.stat().is_ok_and(|s| s.is_some())
    }

    /// The device of the directory holding the entry.
    pub fn dir_dev(&self) -> std::io::Result<u64> {
        Ok(rustix::fs::fstat(&*self.dir)?.st_dev as u64)
    }

    pub fn is_symlink(&self) -> bool {
        self.stat()
            .ok()
            .flatten()
            .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
    }

    pub fn read_link(&self) -> std::io::Result<PathBuf> {
        let t = rustix::fs::readlinkat(&*self.dir, &self.name, Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(t.into_bytes())))
    }

    pub fn mkdir(&self) -> std::io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &*self.dir,
            &self.name,
            Mode::from_raw_mode(0o777),
        )?)
    }

    pub fn symlink(&self, target: &Path) -> std::io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &*self.dir, &self.name)?)
    }

    /// Removes a symlink or a file.
    pub fn unlink(&self) -> std::io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &*self.dir,
            &self.name,
            AtFlags::empty(),
        )?)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self) -> std::io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &*self.dir,
            &self.name,
            AtFlags::REMOVEDIR,
        )?)
    }

    /// Renames the entry to `to`.
    pub fn rename_to(&self, to: &Place) -> std::io::Result<()> {
        Ok(rustix::fs::renameat(
            &*self.dir, &self.name, &*to.dir, &to.name,
        )?)
    }
}

/// True for the errors of a place that cannot be reached because a directory on its way is
/// not one any more (a symlink, a file) or leads out of the home.
pub fn is_blocked(e: &std::io::Error) -> bool {
    [libc::ELOOP, libc::ENOTDIR, libc::EXDEV]
        .iter()
        .any(|c| e.raw_os_error() == Some(*c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn home_with_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let home = root.join("home");
        let outside = root.join("outside");
        std::fs::create_dir_all(home.join(".config/real")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (tmp, home, outside)
    }

    #[test]
    fn a_symlinked_directory_is_never_gone_through_in_a_refused_home() {
        let (_tmp, home, outside) = home_with_outside();
        symlink(&outside, home.join(".config/out")).unwrap();
        symlink("real", home.join(".config/in")).unwrap();
        let h = HomeDir::open(&home, HomeLinks::Refused).unwrap();
        for dir in [".config/out", ".config/in"] {
            let err = h.place(&home.join(dir).join("x")).unwrap_err();
            assert!(is_blocked(&err), "{dir}: {err}");
        }
        // The portable walk refuses them the same way.
        let err = h.walk(vec![".config".into(), "out".into()]).unwrap_err();
        assert!(is_blocked(&err), "{err}");
        let p = h.place(&home.join(".config/real/x")).unwrap();
        p.mkdir().unwrap();
        assert!(home.join(".config/real/x").is_dir());
        assert!(h.create_dirs(Path::new(".config/out/made")).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn the_users_own_home_goes_through_symlinks_that_stay_in_it() {
        let (_tmp, home, outside) = home_with_outside();
        symlink(home.join(".config/real"), home.join(".abs")).unwrap();
        symlink("../.config/./real", home.join(".config/rel")).unwrap();
        symlink(&outside, home.join(".out")).unwrap();
        symlink("../../outside", home.join(".config/up")).unwrap();
        symlink(".loop", home.join(".loop")).unwrap();
        let h = HomeDir::open(&home, HomeLinks::InHome).unwrap();
        h.place(&home.join(".abs/a")).unwrap().mkdir().unwrap();
        h.place(&home.join(".config/rel/b"))
            .unwrap()
            .mkdir()
            .unwrap();
        assert!(home.join(".config/real/a").is_dir() && home.join(".config/real/b").is_dir());
        for dir in [".out", ".config/up", ".loop"] {
            let err = h.place(&home.join(dir).join("x")).unwrap_err();
            assert!(is_blocked(&err), "{dir}: {err}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}
