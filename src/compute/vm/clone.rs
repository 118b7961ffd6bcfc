//! Copy-on-write copies of disk images: an environment's writable `/nix` disk is a clone of the
//! golden store image. `FICLONE` shares every block (xfs with reflink, btrfs: constant time);
//! elsewhere a sparse copy moves only the data extents (`SEEK_DATA`/`SEEK_HOLE`), so an image
//! that is mostly holes costs what it holds. macOS's twin of this function is `clonefile`.

#[cfg(target_os = "linux")]
use std::fs::{File, OpenOptions};
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
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
#[cfg(target_os = "linux")]
pub fn clone_image(src: &Path, dst: &Path) -> Result<CloneKind> {
    let from = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
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

/// Makes `dst` (which must not exist) a clone of `src` (APFS `clonefile`), or a copy where
/// the volume cannot clone.
#[cfg(target_os = "macos")]
pub fn clone_image(src: &Path, dst: &Path) -> Result<CloneKind> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (s, d) = (c(src)?, c(dst)?);
    // SAFETY: both are NUL-terminated paths that live for the call.
    if unsafe { libc::clonefile(s.as_ptr(), d.as_ptr(), 0) } == 0 {
        return Ok(CloneKind::Reflink);
    }
    if dst.exists() {
        anyhow::bail!("{} exists already", dst.display());
    }
    std::fs::copy(src, dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    Ok(CloneKind::SparseCopy)
}

#[cfg(target_os = "linux")]
fn reflink(from: &File, to: &File) -> std::io::Result<CloneKind> {
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
#[cfg(target_os = "linux")]
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
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n =
                rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want)
                    .context("copy_file_range")?;
            if n == 0 {
                anyhow::bail!("the image shrank while it was copied");
            }
        }
        pos = hole;
    }
    to.sync_data().ok();
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
