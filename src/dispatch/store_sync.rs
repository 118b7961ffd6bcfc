//! The toolbox's store closure on a host, content-addressed: each store path lands whole in the
//! host's cache as `STORE/<hash>-<name>` (a store path's name already names its content), so
//! only the paths the host lacks cross the wire, in one tar stream, unpacked by agentenv itself
//! on the host (which may have no tar). A path appears under its name only once complete.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ssh::{quote, SshConnection};
use crate::diag::Diagnostic;
use crate::nix::cli::NixCli;

/// Where store paths live on the build side.
const STORE: &str = "/nix/store";

/// `closure_of`, remembered in `cache` (a directory): a store path's closure never changes, so
/// it is asked of nix once, and taken from the cache while every path of it is still there.
pub fn closure_cached(paths: &[PathBuf], cache: &Path) -> Result<Vec<PathBuf>> {
    let key = crate::util::hash_parts(paths.iter().map(|p| p.as_os_str().as_encoded_bytes()), 16);
    let file = cache.join(key);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let closure: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
        let whole = !closure.is_empty()
            && paths
                .iter()
                .all(|p| closure.iter().any(|c| p.starts_with(c)))
            && closure.iter().all(|p| std::fs::symlink_metadata(p).is_ok());
        if whole {
            return Ok(closure);
        }
    }
    let closure = closure_of(paths)?;
    let text: String = closure
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    // A cache: not keeping it costs a nix call next time.
    if std::fs::create_dir_all(cache).is_ok() {
        forget_collected(cache);
        let _ = crate::util::write_atomic(&file, text.as_bytes());
    }
    Ok(closure)
}

/// Removes the remembered closures whose paths nix has collected since: the cache holds only
/// closures that could still be sent.
fn forget_collected(cache: &Path) {
    let Ok(listing) = std::fs::read_dir(cache) else {
        return;
    };
    for e in listing.flatten() {
        let gone = std::fs::read_to_string(e.path())
            .is_ok_and(|text| text.lines().any(|p| std::fs::symlink_metadata(p).is_err()));
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The closure of `paths` (every store path they reference, themselves included), sorted.
pub fn closure_of(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let nix = NixCli::find()?;
    let mut cmd = nix.command();
    cmd.args(["path-info", "--recursive"]).args(paths);
    let out = nix.run(cmd, "listing the toolbox's store paths")?;
    if !out.success {
        return Err(Diagnostic::new("nix cannot list the toolbox's store paths")
            .detail(out.stderr.trim_end().to_string())
            .into());
    }
    let mut all: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(STORE))
        .map(PathBuf::from)
        .collect();
    all.sort();
    all.dedup();
    Ok(all)
}

/// The base names of `closure` that are not in `present`.
pub fn missing_paths<'a>(closure: &'a [PathBuf], present: &BTreeSet<String>) -> Vec<&'a Path> {
    closure
        .iter()
        .filter(|p| {
            p.file_name()
                .map(|n| !present.contains(&*n.to_string_lossy()))
                .unwrap_or(false)
        })
        .map(PathBuf::as_path)
        .collect()
}

/// What a sync sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub paths_total: usize,
    pub paths_sent: usize,
    pub bytes_sent: u64,
}

/// Sends the paths of `closure` that the host's `store_dir` lacks; `agentenv` there is
/// `remote_bin`.
pub fn sync_closure(
    ssh: &SshConnection,
    closure: &[PathBuf],
    present: &BTreeSet<String>,
    remote_bin: &str,
    store_dir: &str,
) -> Result<SyncStats> {
    let missing = missing_paths(closure, present);
    let mut stats = SyncStats {
        paths_total: closure.len(),
        ..SyncStats::default()
    };
    if missing.is_empty() {
        return Ok(stats);
    }
    let script = format!(
        "exec {} __remote unpack-store {}\n",
        quote(remote_bin)?,
        quote(store_dir)?
    );
    let mut child = ssh.spawn_script(&script)?;
    let stdin = child.stdin.take().context("ssh has no stdin")?;
    // Large writes: a tar stream is many small headers between file contents.
    let mut counted = std::io::BufWriter::with_capacity(
        1 << 20,
        CountingWriter {
            inner: stdin,
            bytes: 0,
        },
    );
    let sent = send_paths(&mut counted, &missing).and_then(|()| {
        counted.flush().context("cannot send the store paths")?;
        Ok(())
    });
    stats.bytes_sent = counted.get_ref().bytes;
    stats.paths_sent = missing.len();
    drop(counted);
    let out = child.wait_with_output().context("cannot wait for ssh")?;
    if !out.status.success() || sent.is_err() {
        return Err(Diagnostic::new(format!(
            "the host {} could not take the toolbox's store paths",
            ssh.target()
        ))
        .detail(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        .into());
    }
    Ok(stats)
}

/// Writes `paths` as one tar stream, each under its store name.
fn send_paths(out: &mut impl Write, paths: &[&Path]) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for path in paths {
        let name = path.file_name().context("a store path has no name")?;
        tar.append_dir_all(name, path)
            .or_else(|e| append_non_dir(&mut tar, path, name, e))
            .with_context(|| format!("cannot send {}", path.display()))?;
    }
    tar.finish().context("cannot finish the store stream")?;
    Ok(())
}

/// A store path that is a single file or a link, not a directory.
fn append_non_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &std::ffi::OsStr,
    dir_err: std::io::Error,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        return Err(dir_err);
    }
    tar.append_path_with_name(path, name)
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// On the host: unpacks a tar stream of store paths from `input` into `store_dir`, each
/// top-level entry first under a private incoming directory and then renamed into place.
pub fn unpack_store(store_dir: &Path, input: impl Read) -> Result<usize> {
    std::fs::create_dir_all(store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let incoming = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(store_dir)
        .with_context(|| format!("cannot create a directory in {}", store_dir.display()))?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    archive
        .unpack(incoming.path())
        .context("cannot unpack the store paths")?;
    let mut n = 0;
    for entry in std::fs::read_dir(incoming.path()).context("cannot list unpacked paths")? {
        let entry = entry?;
        let dest = store_dir.join(entry.file_name());
        if std::fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        move_into_place(&entry.path(), &dest)
            .with_context(|| format!("cannot move {} into place", dest.display()))?;
        n += 1;
    }
    // What is left (a path another session unpacked meanwhile) goes with the directory; store
    // paths are read-only, so make them removable first.
    make_writable(incoming.path());
    Ok(n)
}

/// Renames `from` to `to`. A directory moved to another parent must be writable (its `..`
/// changes), and store paths are not: it is for the moment of the rename.
fn move_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from)?;
    if !meta.is_dir() {
        return std::fs::rename(from, to);
    }
    let mode = meta.permissions().mode();
    std::fs::set_permissions(from, std::fs::Permissions::from_mode(mode | 0o200))?;
    let moved = std::fs::rename(from, to);
    let at = if moved.is_ok() { to } else { from };
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))?;
    moved
}

/// Gives the owner write permission on every directory below `dir`, so it can be removed.
pub fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(meta) = std::fs::symlink_metadata(&d) {
            if meta.is_dir() {
                let mode = meta.permissions().mode();
                let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o700));
                if let Ok(rd) = std::fs::read_dir(&d) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_closure_serves_while_its_paths_exist() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("aaa-env");
        let b = dir.path().join("bbb-bash");
        std::fs::create_dir_all(a.join("bin")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let cache = dir.path().join("closures");
        std::fs::create_dir_all(&cache).unwrap();
        let asked = [a.clone(), b.join("bin/bash")];
        let key =
            crate::util::hash_parts(asked.iter().map(|p| p.as_os_str().as_encoded_bytes()), 16);
        let text = format!("{}\n{}\n", a.display(), b.display());
        std::fs::write(cache.join(&key), &text).unwrap();
        // A closure of a path that is gone is forgotten.
        std::fs::write(cache.join("stale"), "/nonexistent/xxx-gone\n").unwrap();
        forget_collected(&cache);
        assert!(!cache.join("stale").exists());
        // No nix is asked: every path of the remembered closure is there.
        assert_eq!(closure_cached(&asked, &cache).unwrap(), vec![a, b]);
    }

    #[test]
    fn only_absent_paths_are_missing() {
        let closure = vec![
            PathBuf::from("/nix/store/aaa-bash"),
            PathBuf::from("/nix/store/bbb-env"),
        ];
        let present: BTreeSet<String> = ["aaa-bash".to_string()].into();
        assert_eq!(
            missing_paths(&closure, &present),
            vec![Path::new("/nix/store/bbb-env")]
        );
    }

    #[test]
    fn unpacked_paths_arrive_whole_and_read_only_modes_survive() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("abc-tool");
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::write(p.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p.join("bin/tool"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        std::os::unix::fs::symlink("bin/tool", p.join("link")).unwrap();
        let mut buf = Vec::new();
        {
            let mut tar = tar::Builder::new(&mut buf);
            tar.follow_symlinks(false);
            tar.append_dir_all("abc-tool", &p).unwrap();
            tar.finish().unwrap();
        }
        let dest = tempfile::tempdir().unwrap();
        let store = dest.path().join("store");
        assert_eq!(unpack_store(&store, &buf[..]).unwrap(), 1);
        let tool = store.join("abc-tool/bin/tool");
        assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::metadata(&tool).unwrap().permissions().mode() & 0o777,
            0o555
        );
        assert_eq!(
            std::fs::read_link(store.join("abc-tool/link")).unwrap(),
            Path::new("bin/tool")
        );
        // A second copy of the same path is left as the first was; nothing else remains.
        assert_eq!(unpack_store(&store, &buf[..]).unwrap(), 0);
        let names: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("abc-tool")]);
    }
}
