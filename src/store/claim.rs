//! Who writes an environment's store layer. Overlayfs leaves two mounts that share an upper
//! directory undefined, so one sandbox at a time owns the layer: an exclusive lock held as long
//! as the sandbox lives (its PID 1 inherits it). A sandbox of the same environment started
//! meanwhile sees the layer read-only under a scratch layer of its own: it has everything the
//! environment has, and what it writes to `/nix` is dropped when it ends.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rustix::fs::{flock, FlockOperation, Mode, OFlags};

use super::StoreView;

/// A `.new-` scratch directory with no lock file yet is a claim being made, unless older.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// The right to mount a view of an environment's store; see the module's documentation.
pub struct LayerClaim {
    view: StoreView,
    /// The scratch layer's directory, removed when the claim is dropped.
    scratch: Option<PathBuf>,
    /// Locked with flock(2) and never unlocked explicitly: the lock lasts until every copy of
    /// the descriptor is closed, so a sandbox's PID 1 that inherited it keeps it after this
    /// process has dropped its own.
    _lock: OwnedFd,
}

impl LayerClaim {
    /// Claims `view`'s layer through the lock file `lock`, or, while another sandbox holds it,
    /// a scratch layer above it in `scratch_root`.
    pub fn acquire(view: StoreView, lock: &Path, scratch_root: &Path) -> Result<Self> {
        if let Some(dir) = lock.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if let Some(lock) = try_lock(lock, true)? {
            sweep(scratch_root);
            return Ok(Self {
                view,
                scratch: None,
                _lock: lock,
            });
        }
        // While a long-lived owner (an `up` environment) holds the layer, runs beside it are
        // the only ones to clear what killed runs left.
        sweep(scratch_root);
        std::fs::create_dir_all(scratch_root)
            .with_context(|| format!("cannot create {}", scratch_root.display()))?;
        // Locked under a name the sweep leaves alone while young, then renamed: a sweep never
        // takes a layer that is being made.
        let fresh = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(scratch_root)
            .with_context(|| format!("cannot create a directory in {}", scratch_root.display()))?;
        let lock = try_lock(&fresh.path().join("lock"), true)?
            .context("cannot lock a fresh scratch layer")?;
        let name = fresh
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_start_matches(".new-").to_string())
            .unwrap_or_default();
        let dir = scratch_root.join(format!("{}-{name}", std::process::id()));
        std::fs::rename(fresh.path(), &dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Renamed away: nothing is left for the TempDir to remove.
        let _ = fresh.keep();
        tracing::debug!(dir = %dir.display(), "the store layer is in use: a scratch layer above it");
        Ok(Self {
            view: view.with_layer_above(&dir),
            scratch: Some(dir),
            _lock: lock,
        })
    }

    /// The view to mount.
    pub fn view(&self) -> &StoreView {
        &self.view
    }

    /// True when another sandbox owns the layer and this one writes to a scratch layer.
    pub fn is_scratch(&self) -> bool {
        self.scratch.is_some()
    }

    /// Leaves the claim to the sandbox that inherited its lock (a persistent environment): its
    /// scratch layer, if any, stays until that sandbox is gone and a later claim sweeps it.
    pub fn hand_over(mut self) {
        self.scratch = None;
    }
}

impl Drop for LayerClaim {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            if let Err(e) = crate::util::remove_tree(dir) {
                tracing::warn!("cannot remove the scratch layer {}: {e}", dir.display());
            }
        }
    }
}

/// An exclusive lock on `path` if no one holds it; `create` makes the file if missing. Held
/// through a read-only descriptor, as the sandbox's PID 1 keeps it open.
pub(crate) fn try_lock(path: &Path, create: bool) -> Result<Option<OwnedFd>> {
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE;
    }
    let fd = match rustix::fs::open(path, flags, Mode::from_raw_mode(0o644)) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Removes scratch layers whose sandbox is gone (killed before it could clean up, or a
/// persistent environment since stopped), and the remains of claims that never finished.
fn sweep(scratch_root: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let lock = path.join("lock");
        let gone = if lock.exists() {
            matches!(try_lock(&lock, false), Ok(Some(_)))
        } else if entry.file_name().to_string_lossy().starts_with('.') {
            // Still being made, unless long abandoned.
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ABANDONED_AFTER)
        } else {
            // A named layer always has its lock: this is a half-removed one.
            true
        };
        if gone {
            tracing::debug!(dir = %path.display(), "removing a scratch layer left behind");
            let _ = crate::util::remove_tree(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_gets_a_scratch_layer_above_the_first_and_drops_it() {
        let tmp = tempfile::tempdir().unwrap();
        let env = tmp.path();
        let view = StoreView::over_host(&env.join("store"));
        let first =
            LayerClaim::acquire(view.clone(), &env.join("lock"), &env.join("scratch")).unwrap();
        assert!(!first.is_scratch());
        assert_eq!(first.view(), &view);

        let second =
            LayerClaim::acquire(view.clone(), &env.join("lock"), &env.join("scratch")).unwrap();
        assert!(second.is_scratch());
        let v = second.view();
        assert_eq!(v.lowers, vec![view.upper.clone(), PathBuf::from("/nix")]);
        let dir = v.upper.parent().unwrap().to_path_buf();
        assert!(dir.starts_with(env.join("scratch")) && dir.is_dir());
        drop(second);
        assert!(!dir.exists(), "a scratch layer goes with its claim");

        drop(first);
        let again = LayerClaim::acquire(view, &env.join("lock"), &env.join("scratch")).unwrap();
        assert!(!again.is_scratch(), "the layer is free again");
    }

    #[test]
    fn later_claims_sweep_scratch_layers_whose_sandbox_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let env = tmp.path();
        let view = StoreView::over_host(&env.join("store"));
        let first =
            LayerClaim::acquire(view.clone(), &env.join("lock"), &env.join("scratch")).unwrap();
        let live =
            LayerClaim::acquire(view.clone(), &env.join("lock"), &env.join("scratch")).unwrap();
        let live_dir = live.view().upper.parent().unwrap().to_path_buf();
        // Handed over to no sandbox: its lock is gone, its directory stays, as after a kill.
        let gone =
            LayerClaim::acquire(view.clone(), &env.join("lock"), &env.join("scratch")).unwrap();
        let gone_dir = gone.view().upper.parent().unwrap().to_path_buf();
        gone.hand_over();
        assert!(gone_dir.is_dir());
        // The next run beside the owner clears it already.
        let _beside =
            LayerClaim::acquire(view.clone(), &env.join("lock"), &env.join("scratch")).unwrap();
        assert!(!gone_dir.exists(), "swept");
        assert!(live_dir.is_dir(), "a scratch layer in use stays");
        drop(first);
    }
}
