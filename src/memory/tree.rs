//! A session's tree on the host, read back after the session (writing it is `checkout`'s job),
//! and the snapshot it is compared with. The session wrote this directory, so it is read without
//! following anything it planted: every directory is opened relative to its parent with
//! `O_NOFOLLOW`, a symlink is kept as a link (its target as data), and anything that is not a
//! regular file, a directory or a link is left out with a warning.

// The widths of stat fields differ between architectures: the casts are not the same everywhere.
#![allow(clippy::unnecessary_cast)]

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::places::Place;
use super::repo::Change;

/// Files larger than this are not kept (and said so): memory is notes and skills.
pub const MAX_FILE: u64 = 8 << 20;

/// What a file was when it was last written or committed: its stat (to skip reading it
/// again) and its content's hash (to tell a touch from a change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// `0o100644`, `0o100755` or `0o120000`.
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub hash: [u8; 32],
}

/// Every file of the session's places as of its base, by path.
pub type Snapshot = BTreeMap<Vec<u8>, Known>;

/// What a scan found: the changes since the snapshot, the snapshot after them, and what it
/// left out.
#[derive(Debug, Default)]
pub struct Scan {
    pub changes: Vec<Change>,
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
}

/// Links the profile put in a place (its skills): shown in the session, not the memory's.
pub type ProfileLinks = BTreeMap<Vec<u8>, Vec<u8>>;

fn git_mode(ft: FileType, perm: rustix::fs::RawMode) -> Option<u32> {
    match ft {
        FileType::RegularFile if perm & 0o111 != 0 => Some(0o100755),
        FileType::RegularFile => Some(0o100644),
        FileType::Symlink => Some(0o120000),
        _ => None,
    }
}

pub(super) fn known_of(st: &rustix::fs::Stat, mode: u32, hash: [u8; 32]) -> Known {
    Known {
        mode,
        size: st.st_size as u64,
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        ino: st.st_ino as u64,
        hash,
    }
}

fn same_stat(a: &Known, st: &rustix::fs::Stat, mode: u32) -> bool {
    a.mode == mode
        && a.size == st.st_size as u64
        && a.mtime == (st.st_mtime as i64, st.st_mtime_nsec as i64)
        && a.ctime == (st.st_ctime as i64, st.st_ctime_nsec as i64)
        && a.ino == st.st_ino as u64
}

pub(super) fn content_hash(mode: u32, data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(if mode == 0o120000 { b"l" } else { b"f" });
    h.update(data);
    *h.finalize().as_bytes()
}

/// A file changed within this long of a scan may change again within the same timestamp tick
/// with the same size, and its stat would not show it: such files are read again next time.
/// (Files written by `checkout` are not: the session cannot write before it starts, well after
/// their stat was taken, and a stat makes the kernel give the next change a finer time.)
const RACY_NS: i128 = 100_000_000;

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

pub(super) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Reads the places of the tree at `root` and compares them with `snapshot`.
pub fn scan(
    root: &Path,
    places: &[Place],
    snapshot: &Snapshot,
    skip: &ProfileLinks,
) -> Result<Scan> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", root.display()))?;
    let mut scan = Scan::default();
    let racy_after = now_ns() - RACY_NS;
    let mut found: Vec<Vec<u8>> = Vec::new();
    for place in places {
        let rel = place.path.as_os_str().as_bytes();
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        // The directories on the way are agentenv's (the session sees only the places).
        let Some(dir) = open_path(root_fd.as_fd(), parent)? else {
            continue;
        };
        let mut walker = Walker {
            snapshot,
            skip,
            racy_after,
            scan: &mut scan,
            found: &mut found,
        };
        let cname = std::ffi::CString::new(name).context("a place's name holds a NUL")?;
        walker.entry(dir.as_fd(), &cname, rel.to_vec(), !place.dir)?;
    }
    found.sort();
    for (path, _) in snapshot.range::<Vec<u8>, _>(..) {
        if !places.iter().any(|p| p.holds(path)) {
            continue;
        }
        if found.binary_search(path).is_err() {
            scan.changes.push(Change::Delete { path: path.clone() });
        }
    }
    Ok(scan)
}

/// Opens the directory `rel` below `root` without following links; `None` if it is missing.
fn open_path(root: BorrowedFd<'_>, rel: &[u8]) -> Result<Option<OwnedFd>> {
    let mut fd = rustix::io::dup(root)?;
    for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let c = std::ffi::CString::new(comp).context("a path holds a NUL")?;
        fd = match open_dir_at(fd.as_fd(), &c) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e).context("cannot open a directory of the memory"),
        };
    }
    Ok(Some(fd))
}

struct Walker<'a> {
    snapshot: &'a Snapshot,
    skip: &'a ProfileLinks,
    racy_after: i128,
    scan: &'a mut Scan,
    found: &'a mut Vec<Vec<u8>>,
}

impl Walker<'_> {
    /// Looks at `name` in `dir` (its memory path is `path`); `file_place` when it is a file
    /// place itself.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: Vec<u8>,
        file_place: bool,
    ) -> Result<()> {
        let shown = String::from_utf8_lossy(&path).into_owned();
        if name.to_bytes() == b".git" {
            self.scan
                .warnings
                .push(format!("left out {shown}: git keeps no entry named .git"));
            return Ok(());
        }
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {shown}")),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            let fd = match open_dir_at(dir, name) {
                Ok(fd) => fd,
                // Replaced by something else meanwhile: seen next time.
                Err(
                    rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR,
                ) => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("cannot open {shown}")),
            };
            let mut names = Vec::new();
            for e in
                rustix::fs::Dir::read_from(&fd).with_context(|| format!("cannot list {shown}"))?
            {
                let e = e.with_context(|| format!("cannot list {shown}"))?;
                let n = e.file_name();
                if n.to_bytes() != b"." && n.to_bytes() != b".." {
                    names.push(n.to_owned());
                }
            }
            names.sort();
            for n in names {
                let mut child = path.clone();
                child.push(b'/');
                child.extend(n.to_bytes());
                self.entry(fd.as_fd(), &n, child, false)?;
            }
            return Ok(());
        }
        let Some(mode) = git_mode(ft, st.st_mode) else {
            self.scan.warnings.push(format!(
                "left out {shown}: only files, directories and links are kept"
            ));
            return Ok(());
        };
        if mode == 0o120000 {
            if let Some(target) = self.skip.get(&path) {
                let now = rustix::fs::readlinkat(dir, name, Vec::new()).ok();
                if now.is_some_and(|t| t.as_bytes() == target.as_slice()) {
                    return Ok(());
                }
            }
        }
        let old = self.snapshot.get(&path);
        let mtime_ns = st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128;
        if let Some(old) = old {
            if same_stat(old, &st, mode) {
                self.found.push(path.clone());
                self.scan.snapshot.insert(path, old.clone());
                return Ok(());
            }
        }
        if st.st_size as u64 > MAX_FILE {
            self.scan.warnings.push(format!(
                "left out {shown}: {} bytes, more than the {} a memory file may have",
                st.st_size, MAX_FILE
            ));
            // Still there: not a deletion of what the memory has.
            if let Some(old) = old {
                self.found.push(path.clone());
                self.scan.snapshot.insert(path, old.clone());
            }
            return Ok(());
        }
        let (data, st) = if mode == 0o120000 {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())
                .with_context(|| format!("cannot read the link {shown}"))?;
            (target.into_bytes(), st)
        } else {
            match read_regular(dir, name, &st) {
                Ok(Some(read)) => read,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
            }
        };
        let hash = content_hash(mode, &data);
        self.found.push(path.clone());
        // A new empty file where a file place is: the mount point agentenv made, not memory.
        if old.is_none() && data.is_empty() && mode != 0o120000 && file_place {
            return Ok(());
        }
        let mut known = known_of(&st, mode, hash);
        if mtime_ns >= self.racy_after {
            // Read again next time, whatever its stat says.
            known.mtime = (0, 0);
        }
        if old.is_some_and(|o| o.hash == hash && o.mode == mode) {
            self.scan.snapshot.insert(path, known);
            return Ok(());
        }
        self.scan.changes.push(Change::Write {
            path: path.clone(),
            mode,
            data,
        });
        self.scan.snapshot.insert(path, known);
        Ok(())
    }
}

/// Reads a regular file through a descriptor opened without following links or blocking;
/// `None` if it is no longer a regular file.
fn read_regular(
    dir: BorrowedFd<'_>,
    name: &CStr,
    st: &rustix::fs::Stat,
) -> Result<Option<(Vec<u8>, rustix::fs::Stat)>> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let now = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(now.st_mode) != FileType::RegularFile || now.st_ino != st.st_ino {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(now.st_size as usize);
    std::fs::File::from(fd)
        .take(MAX_FILE + 1)
        .read_to_end(&mut data)?;
    Ok(Some((data, now)))
}

/// The snapshot as bytes: NUL-separated fields, nine per file (paths hold no NUL).
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(snapshot.len() * 160);
    for (path, k) in snapshot {
        out.extend(path);
        out.push(0);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{:o}\0{}\0{}\0{}\0{}\0{}\0{}\0",
            k.mode, k.size, k.mtime.0, k.mtime.1, k.ctime.0, k.ctime.1, k.ino
        );
        hex_into(&k.hash, &mut out);
        out.push(0);
    }
    out
}

fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

/// Reads what `encode` wrote.
pub fn decode(data: &[u8]) -> Result<Snapshot> {
    let mut fields = data.split(|&b| b == 0);
    let mut out = Snapshot::new();
    while let Some(path) = fields.next().filter(|p| !p.is_empty()) {
        let mut next = || -> Result<&str> {
            let f = fields.next().context("a snapshot record is cut short")?;
            std::str::from_utf8(f).context("a snapshot field is not text")
        };
        let mode = u32::from_str_radix(next()?, 8)?;
        let size = next()?.parse()?;
        let mtime = (next()?.parse()?, next()?.parse()?);
        let ctime = (next()?.parse()?, next()?.parse()?);
        let ino = next()?.parse()?;
        let hash = unhex(next()?).context("a snapshot hash is odd")?;
        out.insert(
            path.to_vec(),
            Known {
                mode,
                size,
                mtime,
                ctime,
                ino,
                hash,
            },
        );
    }
    Ok(out)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn places() -> Vec<Place> {
        vec![
            Place {
                path: PathBuf::from(".claude/CLAUDE.md"),
                dir: false,
            },
            Place {
                path: PathBuf::from(".agent-memory"),
                dir: true,
            },
        ]
    }

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn new_changed_and_removed_files_are_found_and_links_kept_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".claude/CLAUDE.md", "a\n");
        write(root, ".agent-memory/old.md", "old\n");
        let first = scan(root, &places(), &Snapshot::new(), &ProfileLinks::new()).unwrap();
        assert_eq!(first.changes.len(), 2);
        std::fs::remove_file(root.join(".agent-memory/old.md")).unwrap();
        write(root, ".agent-memory/new.md", "new\n");
        std::os::unix::fs::symlink("/etc/shadow", root.join(".agent-memory/secret")).unwrap();
        let second = scan(root, &places(), &first.snapshot, &ProfileLinks::new()).unwrap();
        let mut got: Vec<String> = second
            .changes
            .iter()
            .map(|c| match c {
                Change::Write { path, mode, data } => format!(
                    "write {} {mode:o} {}",
                    String::from_utf8_lossy(path),
                    String::from_utf8_lossy(data).trim()
                ),
                Change::Delete { path } => format!("delete {}", String::from_utf8_lossy(path)),
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "delete .agent-memory/old.md",
                "write .agent-memory/new.md 100644 new",
                "write .agent-memory/secret 120000 /etc/shadow",
            ]
        );
    }

    #[test]
    fn a_directory_place_replaced_by_a_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", "s3cret\n");
        let root = dir.path();
        std::fs::create_dir_all(root.join(".agent-memory")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join(".agent-memory/sub")).unwrap();
        let s = scan(root, &places(), &Snapshot::new(), &ProfileLinks::new()).unwrap();
        assert_eq!(s.changes.len(), 1);
        assert!(matches!(
            &s.changes[0],
            Change::Write { mode: 0o120000, .. }
        ));
    }

    #[test]
    fn a_touch_is_no_change_and_the_snapshot_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".agent-memory/a.md", "a\n");
        let first = scan(root, &places(), &Snapshot::new(), &ProfileLinks::new()).unwrap();
        let back = decode(&encode(&first.snapshot)).unwrap();
        assert_eq!(back, first.snapshot);
        write(root, ".agent-memory/a.md", "a\n");
        let second = scan(root, &places(), &back, &ProfileLinks::new()).unwrap();
        assert!(second.changes.is_empty(), "{:?}", second.changes);
    }
}
