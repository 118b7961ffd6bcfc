//! Writing a session's tree: the memory's places from a commit (a fresh checkout), or a tree a
//! finished session left brought from its commit to another (only what differs), plus the
//! profile's links and the places' mount points. The tree may be one a session wrote: paths are
//! walked without following links.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::places::Place;
use super::repo::Repo;
use super::tree::{content_hash, known_of, open_dir_at, ProfileLinks, Snapshot};

/// Writes the places' files of `commit` into the empty directory `root`, then the profile's
/// links where the memory has nothing, then every place that is still missing (a directory,
/// or an empty file as a mount point). Returns the snapshot of what was written.
pub fn checkout(
    repo: &Repo,
    commit: &str,
    root: &Path,
    places: &[Place],
    profile_links: &ProfileLinks,
) -> Result<Snapshot> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let entries: Vec<_> = repo
        .ls_tree(commit)?
        .into_iter()
        .filter(|e| places.iter().any(|p| p.holds(&e.path)))
        .collect();
    let oids: Vec<&str> = entries.iter().map(|e| e.oid.as_str()).collect();
    let blobs = repo.read_blobs(&oids)?;
    let mut snapshot = Snapshot::new();
    for (entry, data) in entries.iter().zip(blobs) {
        let rel = std::ffi::OsStr::from_bytes(&entry.path);
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mode = u32::from_str_radix(&entry.mode, 8).unwrap_or(0o100644);
        write_entry(&path, mode, &data)?;
        let st = rustix::fs::lstat(&path)?;
        snapshot.insert(
            entry.path.clone(),
            known_of(&st, mode, content_hash(mode, &data)),
        );
    }
    complete(root, places, profile_links)?;
    Ok(snapshot)
}

/// Adds the profile's links where the memory has nothing, and every place still missing (a
/// directory, or an empty file as a mount point). Nothing is followed or replaced: a link
/// whose way is blocked is left out.
pub fn complete(root: &Path, places: &[Place], profile_links: &ProfileLinks) -> Result<()> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", root.display()))?;
    for (rel, target) in profile_links {
        let Some((dir, name)) = make_way(root_fd.as_fd(), rel)? else {
            continue;
        };
        match rustix::fs::symlinkat(target.as_slice(), dir.as_fd(), &name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).context("cannot link a profile's skill"),
        }
    }
    for place in places {
        let rel = place.path.as_os_str().as_bytes();
        let Some((dir, name)) = make_way(root_fd.as_fd(), rel)? else {
            continue;
        };
        let made = match place.dir {
            true => rustix::fs::mkdirat(dir.as_fd(), &name, Mode::from_raw_mode(0o755)),
            false => rustix::fs::openat(
                dir.as_fd(),
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop),
        };
        match made {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", place.path.display()))
            }
        }
    }
    Ok(())
}

/// The directory holding `path` below `root`, its missing directories made; `None` when
/// something that is not a directory is in the way (it is left as it is).
fn make_way(root: BorrowedFd<'_>, path: &[u8]) -> Result<Option<(OwnedFd, std::ffi::CString)>> {
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let Some((last, parents)) = comps.split_last() else {
        return Ok(None);
    };
    let mut dir = rustix::io::dup(root)?;
    for c in parents {
        let name = std::ffi::CString::new(*c)?;
        match rustix::fs::mkdirat(dir.as_fd(), &name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).context("cannot make a directory of the memory"),
        }
        dir = match open_dir_at(dir.as_fd(), &name) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e).context("cannot open a directory of the memory"),
        };
    }
    Ok(Some((dir, std::ffi::CString::new(*last)?)))
}

/// Brings a tree that holds the places of commit `from` (a finished session's, reused) to
/// commit `to`, writing only what differs, and keeps `snapshot` in step. The tree was written
/// by a session: every path is walked from `root` without following links, and whatever is in
/// the way of a path git has (a planted link, a file where a directory goes) is replaced.
pub fn update(
    repo: &Repo,
    from: &str,
    to: &str,
    root: &Path,
    places: &[Place],
    snapshot: &mut Snapshot,
) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let out = repo.run(&["diff-tree", "-r", "-z", "--no-renames", from, to])?;
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
        if !places.iter().any(|p| p.holds(path)) {
            continue;
        }
        // `:<old mode> <new mode> <old oid> <new oid> <status>`
        let meta = String::from_utf8_lossy(meta);
        let f: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [_, new_mode, _, new_oid, status] = f[..] else {
            anyhow::bail!("odd git diff-tree output: {meta}");
        };
        match status {
            "D" => deletes.push(path.to_vec()),
            _ => writes.push((path.to_vec(), new_mode.to_string(), new_oid.to_string())),
        }
    }
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", root.display()))?;
    for path in &deletes {
        let (dir, name) = parent_of(root_fd.as_fd(), path)?;
        remove_at(dir.as_fd(), &name)?;
        snapshot.remove(path);
    }
    let oids: Vec<&str> = writes.iter().map(|(_, _, o)| o.as_str()).collect();
    let blobs = repo.read_blobs(&oids)?;
    for ((path, mode, _), data) in writes.iter().zip(blobs) {
        let mode = u32::from_str_radix(mode, 8).unwrap_or(0o100644);
        let (dir, name) = parent_of(root_fd.as_fd(), path)?;
        remove_at(dir.as_fd(), &name)?;
        if mode == 0o120000 {
            rustix::fs::symlinkat(data.as_slice(), dir.as_fd(), &name)?;
        } else {
            let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
            let fd = rustix::fs::openat(
                dir.as_fd(),
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(perm),
            )?;
            use std::io::Write;
            std::fs::File::from(fd).write_all(&data)?;
        }
        let st = rustix::fs::statat(dir.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW)?;
        snapshot.insert(path.clone(), known_of(&st, mode, content_hash(mode, &data)));
    }
    Ok(())
}

/// The directory holding `path` below `root` (made as needed, never through a link) and the
/// path's last name.
fn parent_of(root: BorrowedFd<'_>, path: &[u8]) -> Result<(OwnedFd, std::ffi::CString)> {
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let (last, parents) = comps.split_last().context("an empty path")?;
    let mut dir = rustix::io::dup(root)?;
    for c in parents {
        let name = std::ffi::CString::new(*c)?;
        dir = match open_dir_at(dir.as_fd(), &name) {
            Ok(fd) => fd,
            Err(_) => {
                remove_at(dir.as_fd(), &name)?;
                rustix::fs::mkdirat(dir.as_fd(), &name, Mode::from_raw_mode(0o755))?;
                open_dir_at(dir.as_fd(), &name)?
            }
        };
    }
    Ok((dir, std::ffi::CString::new(*last)?))
}

/// Removes the profile's links `links` from the tree at `root`, where they are still as made.
pub fn remove_links(root: &Path, links: &ProfileLinks) -> Result<()> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (path, target) in links {
        let Ok(Some((dir, name))) = make_way(root_fd.as_fd(), path) else {
            continue;
        };
        let now = rustix::fs::readlinkat(dir.as_fd(), &name, Vec::new());
        if now.is_ok_and(|t| t.as_bytes() == target.as_slice()) {
            rustix::fs::unlinkat(dir.as_fd(), &name, AtFlags::empty())?;
        }
    }
    Ok(())
}

/// Removes `name` in `dir` (a whole directory, if it is one), if it is there.
fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let fd = open_dir_at(dir, name)?;
            let mut names = Vec::new();
            for e in rustix::fs::Dir::read_from(&fd)? {
                let n = e?.file_name().to_owned();
                if n.to_bytes() != b"." && n.to_bytes() != b".." {
                    names.push(n);
                }
            }
            for n in names {
                remove_at(fd.as_fd(), &n)?;
            }
            Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
        }
        Ok(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
    }
}

fn write_entry(path: &Path, mode: u32, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if mode == 0o120000 {
        return std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(data), path)
            .with_context(|| format!("cannot link {}", path.display()));
    }
    let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .with_context(|| format!("cannot write {}", path.display()))
}
