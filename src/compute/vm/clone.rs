//! Copy-on-write copies of disk images: an environment's writable `/nix` disk is a clone of the
//! golden store image. `FICLONE` shares every block (xfs with reflink, btrfs: constant time);
//! elsewhere a sparse copy moves only the data extents (`SEEK_DATA`/`SEEK_HOLE`), so an image
//! that is mostly holes costs what it holds. macOS's twin of this function is `clonefile`.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result};

/// How a clone was made (`doctor` and the figures say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneKind {
    Reflink,
    SparseCopy,
}

/// Makes `dst` (which must not exist) a copy of `src` that shares its blocks where the
/// filesystem can, and otherwise copies only its data.
pub fn clone_image(src: &Path, dst: &Path) -> Result<CloneKind> {
    let from = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    // APFS: clonefile(2) makes `dst` itself, sharing every block, in constant time.
    #[cfg(target_os = "macos")]
    match clonefile(src, dst) {
        Ok(()) => return Ok(CloneKind::Reflink),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("cannot create {}", dst.display()))
        }
        Err(e) => tracing::debug!("clonefile {} failed ({e}); copying sparsely", src.display()),
    }
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .with_context(|| format!("cannot create {}", dst.display()))?;
    let result = reflink(&from, &to).or_else(|reflink_err| {
        tracing::debug!(
            "reflink {} failed ({reflink_err}); copying sparsely",
            src.display()
        );
        sparse_copy(&from, &to).map(|()| CloneKind::SparseCopy)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result.with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))
}

#[cfg(target_os = "macos")]
fn clonefile(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (src, dst) = (c(src)?, c(dst)?);
    // <sys/clonefile.h>; the libc crate does not name it.
    const CLONE_NOFOLLOW: u32 = 0x0001;
    // SAFETY: both are NUL-terminated paths that live across the call.
    let r = unsafe { libc::clonefile(src.as_ptr(), dst.as_ptr(), CLONE_NOFOLLOW) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// macOS shares blocks by path (`clonefile`, tried first); between two open files it cannot.
#[cfg(not(target_os = "linux"))]
fn reflink(_from: &File, _to: &File) -> std::io::Result<CloneKind> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(target_os = "linux")]
fn reflink(from: &File, to: &File) -> std::io::Result<CloneKind> {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // for the duration of the call.
    let r = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if r == 0 {
        Ok(CloneKind::Reflink)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Copies the data extents of `from` into `to` at the same offsets, leaving holes as holes.
fn sparse_copy(from: &File, to: &File) -> Result<()> {
    use rustix::fs::{seek, SeekFrom};
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(from, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e).context("SEEK_DATA"),
        };
        let hole = seek(from, SeekFrom::Hole(data)).context("SEEK_HOLE")?;
        copy_range(from, to, data, hole)?;
        pos = hole;
    }
    to.sync_data().ok();
    Ok(())
}

/// Copies bytes `start..end` of `from` to the same offsets in `to`, in the kernel.
#[cfg(target_os = "linux")]
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> Result<()> {
    let mut off_in = start;
    let mut off_out = start;
    while off_in < end {
        let want = (end - off_in) as usize;
        let n = rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want)
            .context("copy_file_range")?;
        if n == 0 {
            anyhow::bail!("the image shrank while it was copied");
        }
    }
    Ok(())
}

/// Copies bytes `start..end` of `from` to the same offsets in `to` (no copy_file_range here).
#[cfg(not(target_os = "linux"))]
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = start;
    while off < end {
        let want = buf.len().min((end - off) as usize);
        let n = from.read_at(&mut buf[..want], off).context("read")?;
        if n == 0 {
            anyhow::bail!("the image shrank while it was copied");
        }
        to.write_all_at(&buf[..n], off).context("write")?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_clone_has_the_same_bytes_and_keeps_holes() {
        let dir = tempfile::Builder::new()
            .prefix("agentenv-vm-clone")
            .tempdir()
            .unwrap();
        let src = dir.path().join("golden.img");
        let mut f = File::create(&src).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let dst = dir.path().join("env.img");
        clone_image(&src, &dst).unwrap();
        let a = std::fs::read(&src).unwrap();
        let b = std::fs::read(&dst).unwrap();
        assert_eq!(a, b);
        // 64 MiB apparent, a few blocks really.
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 < 4 << 20);
    }

    #[test]
    fn a_clone_never_overwrites_and_writes_stay_in_it() {
        let dir = tempfile::Builder::new()
            .prefix("agentenv-vm-clone")
            .tempdir()
            .unwrap();
        let src = dir.path().join("golden.img");
        std::fs::write(&src, b"golden").unwrap();
        let dst = dir.path().join("env.img");
        clone_image(&src, &dst).unwrap();
        assert!(clone_image(&src, &dst).is_err());
        std::fs::write(&dst, b"changed").unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), b"golden");
    }
}
