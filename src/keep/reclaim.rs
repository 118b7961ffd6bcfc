//! Removing kept state so that a crash at any point leaves nothing a later start trips on:
//! the lock its users take is taken first (something busy is skipped), the tree is renamed
//! into a trash directory in one step (a start then finds it missing and makes it anew), the
//! index records and nix GC roots that named it go, and only then is the trash deleted.
//! A trash left by a killed `gc` is emptied by the next one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Kept, Kind};
use crate::paths::StateDirs;
use crate::runtime::process_start_time;

/// Where nix keeps the indirect GC roots it makes for `--profile` and `--out-link` outside
/// the store.
pub const AUTO_ROOTS: &str = "/nix/var/nix/gcroots/auto";

/// What became of one removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    /// Something holds its lock (a start, an evaluation): left alone.
    Busy,
}

/// nix's indirect GC roots: each link in `AUTO_ROOTS` and the path it names.
pub struct AutoRoots {
    links: Vec<(PathBuf, PathBuf)>,
}

impl AutoRoots {
    pub fn read() -> Self {
        let links = std::fs::read_dir(AUTO_ROOTS)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| Some((e.path(), std::fs::read_link(e.path()).ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        Self { links }
    }

    /// Removes the roots that name something inside `dir`. Where nix's directory is not
    /// writable (nix through its daemon), the dangling roots are left for nix, which drops
    /// them itself at its next collection.
    fn remove_under(&mut self, dir: &Path) -> usize {
        let mut removed = 0;
        self.links.retain(|(link, target)| {
            if !target.starts_with(dir) {
                return true;
            }
            match std::fs::remove_file(link) {
                Ok(()) => removed += 1,
                Err(e) => tracing::debug!("cannot remove the GC root {}: {e}", link.display()),
            }
            false
        });
        removed
    }
}

/// Removes `k`, unless something holds its lock.
pub fn remove(k: &Kept, state: &StateDirs, roots: &mut AutoRoots) -> Result<Outcome> {
    // Held until the tree is renamed away: a start waiting for it then finds nothing.
    let _held = match &k.lock {
        Some(lock) if lock.exists() => match crate::store::claim::try_lock(lock, false)? {
            Some(fd) => Some(fd),
            None => return Ok(Outcome::Busy),
        },
        _ => None,
    };
    let trash = trash_dir(k, state);
    std::fs::create_dir_all(&trash)
        .with_context(|| format!("cannot create {}", trash.display()))?;
    let name = k
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let moved = trash.join(format!("{}-{name}", std::process::id()));
    std::fs::rename(&k.path, &moved)
        .with_context(|| format!("cannot move {} to {}", k.path.display(), trash.display()))?;
    for record in &k.records {
        let _ = std::fs::remove_file(record);
    }
    roots.remove_under(&k.path);
    if let Ok(real) = std::fs::canonicalize(k.path.parent().unwrap_or(&k.path)) {
        roots.remove_under(&real.join(&name));
    }
    if let Some(lock) = &k.lock {
        let _ = std::fs::remove_file(lock);
    }
    crate::util::remove_tree(&moved)
        .with_context(|| format!("cannot remove {}", moved.display()))?;
    Ok(Outcome::Removed)
}

/// The trash beside `k`'s tree, on the same filesystem (cache and data may be on two).
fn trash_dir(k: &Kept, state: &StateDirs) -> PathBuf {
    match k.kind {
        Kind::DevShell | Kind::ProfileTools => state.cache.join(".trash"),
        Kind::Environment | Kind::AttachHome => state.data.join(".trash"),
    }
}

/// Empties what killed `gc`s left in the trash (a live one's is named after its PID), and
/// removes index records that point to no entry. Returns the bytes freed.
pub fn sweep_leftovers(state: &StateDirs) -> u64 {
    let mut freed = 0;
    for trash in [state.cache.join(".trash"), state.data.join(".trash")] {
        let Ok(rd) = std::fs::read_dir(&trash) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let pid = name
                .to_string_lossy()
                .split('-')
                .next()
                .and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(|p| process_start_time(p).is_some()) {
                continue;
            }
            freed += super::size::disk_usage(&e.path());
            let _ = crate::util::remove_tree(&e.path());
        }
    }
    for root in [
        state.devenv_cache(),
        crate::profile::tools::cache_root(state),
    ] {
        let cache = crate::nix::cache::DevEnvCache::new(root);
        for r in cache.index_records() {
            let dangling = !r
                .content_key
                .as_ref()
                .is_some_and(|ck| cache.entry_dir(ck).exists());
            if dangling {
                let _ = std::fs::remove_file(&r.path);
            }
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    #[test]
    fn a_locked_tree_is_left_and_a_free_one_goes_with_its_records() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDirs::under(tmp.path());
        let dir = state.devenv_cache().join("entries/k1");
        std::fs::create_dir_all(dir.join("w")).unwrap();
        let record = state.devenv_cache().join("index/r.json");
        std::fs::create_dir_all(record.parent().unwrap()).unwrap();
        std::fs::write(&record, "{}").unwrap();
        let lock = state.devenv_cache().join("locks/k1.lock");
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        let k = Kept {
            kind: Kind::DevShell,
            project: None,
            shell: None,
            id: None,
            path: dir.clone(),
            bytes: 0,
            last_used: 0,
            status: Status::Superseded,
            lock: Some(lock.clone()),
            records: vec![record.clone()],
        };
        let mut roots = AutoRoots { links: Vec::new() };
        let held = crate::store::claim::try_lock(&lock, true).unwrap().unwrap();
        assert_eq!(remove(&k, &state, &mut roots).unwrap(), Outcome::Busy);
        assert!(dir.is_dir());
        drop(held);
        assert_eq!(remove(&k, &state, &mut roots).unwrap(), Outcome::Removed);
        assert!(!dir.exists() && !record.exists() && !lock.exists());
        assert_eq!(
            std::fs::read_dir(state.cache.join(".trash"))
                .unwrap()
                .count(),
            0
        );
    }
}
