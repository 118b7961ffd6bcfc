//! Who writes an environment's store layer. Overlayfs leaves two mounts that share an upper
//! directory undefined, so one sandbox at a time owns the layer: an exclusive lock held as long
//! as the sandbox lives (its PID 1 inherits it). A sandbox of the same environment started
//! meanwhile sees the layer read-only under a scratch layer of its own: it has everything the
//! environment has, and what it writes to `/nix` is dropped when it ends.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use super::StoreView;

/// The right to mount a view of an environment's store; see the module's documentation.
pub struct LayerClaim {
    view: StoreView,
    /// The scratch layer's directory, removed when the claim is dropped.
    scratch: Option<PathBuf>,
    _lock: Flock<File>,
}

impl LayerClaim {
    /// Claims `view`'s layer, or, while another sandbox holds it, a scratch layer above it.
    /// `env_dir` is the environment's state directory, which keeps the lock and scratch layers.
    pub fn acquire(view: StoreView, env_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(env_dir)
            .with_context(|| format!("cannot create {}", env_dir.display()))?;
        let scratch_root = env_dir.join("scratch");
        if let Some(lock) = try_lock(&env_dir.join("store.lock"), true)? {
            sweep(&scratch_root);
            return Ok(Self {
                view,
                scratch: None,
                _lock: lock,
            });
        }
        std::fs::create_dir_all(&scratch_root)
            .with_context(|| format!("cannot create {}", scratch_root.display()))?;
        // Locked under a name the sweep skips, then renamed: a sweep never takes a layer that
        // is being made.
        let fresh = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&scratch_root)
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
        std::fs::rename(fresh.keep(), &dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
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

    /// Leaves the claim to the sandbox that inherited its lock (a persistent environment): the
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

/// An exclusive lock on `path` if no one holds it; `create` makes the file if missing. The
/// lock is held through a read-only descriptor: the sandbox's PID 1 keeps it open.
fn try_lock(path: &Path, create: bool) -> Result<Option<Flock<File>>> {
    if create {
        File::options()
            .create(true)
            .truncate(false)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    Ok(Flock::lock(file, FlockArg::LockExclusiveNonblock).ok())
}

/// Removes scratch layers whose sandbox is gone (killed before it could clean up, or a
/// persistent environment since stopped).
fn sweep(scratch_root: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch_root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if let Ok(Some(_lock)) = try_lock(&path.join("lock"), false) {
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
        let first = LayerClaim::acquire(view.clone(), env).unwrap();
        assert!(!first.is_scratch());
        assert_eq!(first.view(), &view);

        let second = LayerClaim::acquire(view.clone(), env).unwrap();
        assert!(second.is_scratch());
        let v = second.view();
        assert_eq!(v.lowers, vec![view.upper.clone(), PathBuf::from("/nix")]);
        let dir = v.upper.parent().unwrap().to_path_buf();
        assert!(dir.starts_with(env.join("scratch")) && dir.is_dir());
        drop(second);
        assert!(!dir.exists(), "a scratch layer goes with its claim");

        drop(first);
        let again = LayerClaim::acquire(view, env).unwrap();
        assert!(!again.is_scratch(), "the layer is free again");
    }

    #[test]
    fn the_next_owner_sweeps_scratch_layers_whose_sandbox_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let env = tmp.path();
        let view = StoreView::over_host(&env.join("store"));
        let first = LayerClaim::acquire(view.clone(), env).unwrap();
        let live = LayerClaim::acquire(view.clone(), env).unwrap();
        let live_dir = live.view().upper.parent().unwrap().to_path_buf();
        // Handed over to no sandbox: its lock is gone, its directory stays, as after a kill.
        let gone = LayerClaim::acquire(view.clone(), env).unwrap();
        let gone_dir = gone.view().upper.parent().unwrap().to_path_buf();
        gone.hand_over();
        assert!(gone_dir.is_dir());
        drop(first);
        let _owner = LayerClaim::acquire(view, env).unwrap();
        assert!(!gone_dir.exists(), "swept");
        assert!(live_dir.is_dir(), "a scratch layer in use stays");
    }
}
