//! Small helpers shared by several layers: PATH lookup, atomic writes, shell words.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The first executable file named `name` in the directories of `$PATH`.
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    find_in_dirs(name, std::env::split_paths(&path))
}

/// The first executable file named `name` in `dirs`.
pub fn find_in_dirs(name: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `s` as one word for a POSIX shell, for a command shown to the user: as it is when nothing in
/// it is special to a shell, else in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    // `#` starts a comment only at the start of a word.
    let safe = !s.is_empty() && !s.starts_with('#') && s.chars().all(|c| plain(c) || c == '#');
    match safe {
        true => s.to_string(),
        false => crate::profile::env::quote(s),
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so readers see the old
/// content or the new one, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Hex of the first `n` bytes of a blake3 hash of `parts`, each length-prefixed so that
/// ("ab","c") and ("a","bc") differ.
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>, n: usize) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex()[..n * 2].to_string()
}

/// Removes a directory tree even where overlayfs left directories with mode 000 (its work
/// directory), which a plain `remove_dir_all` by their unprivileged owner cannot enter.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn open_up(dir: &Path) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            open_up(path);
            std::fs::remove_dir_all(path)
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes an exclusive lock on the file `path` (created if missing), held until the returned
/// value is dropped. If another agentenv holds it, says so on stderr (naming `what` it is
/// doing) and waits.
pub fn lock_file(path: &Path, what: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    match try_lock_file(path)? {
        Ok(lock) => Ok(lock),
        Err(file) => {
            eprintln!("waiting for another agentenv {what}");
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Tries an exclusive lock on the file `path` (created if missing): the lock, or the open
/// file back when another process holds it.
pub fn try_lock_file(
    path: &Path,
) -> Result<std::result::Result<nix::fcntl::Flock<std::fs::File>, std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(file, _)| file))
}

/// An absolute `path` without `.` and `..`, worked out on the text alone.
pub fn lexical_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                // `..` of the root is the root.
                if out.parent().is_some() {
                    out.pop();
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether `id` is a plain id (letters and digits only): safe as one component of a path,
/// local or remote. Session and dispatch ids are such.
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A pipe whose ends close on exec (`pipe2(O_CLOEXEC)` where the OS has it).
pub fn cloexec_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    #[cfg(target_os = "linux")]
    let ends = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    #[cfg(not(target_os = "linux"))]
    let ends = {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let (r, w) = nix::unistd::pipe().context("cannot create a pipe")?;
        for end in [&r, &w] {
            fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("cannot set FD_CLOEXEC")?;
        }
        (r, w)
    };
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_a_shell_would_split_them() {
        assert_eq!(shell_word("/src/app#tools"), "/src/app#tools");
        assert_eq!(shell_word("/tmp/my proj"), "'/tmp/my proj'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("#x"), "'#x'");
        assert_eq!(shell_word("a$b"), "'a$b'");
        assert_eq!(shell_word(""), "''");
    }
}
