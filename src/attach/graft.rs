//! The graft: how the toolbox's store, and host trees such as a profile or a private home, are
//! added to a private copy of the target's mount namespace without touching the target's
//! files or mounts. `plan_graft` decides from facts read beforehand (plain data, unit-tested);
//! `apply_graft` makes the mounts through the `MountApi` and `Syscall` seams. Joining
//! namespaces and running the shell live in `session`; finding mount points in `places`.
//!
//! The toolbox is the host's `/nix/store`, read-only, and never the rest of `/nix` (no daemon
//! socket, no database). Four cases:
//! - The target has `/nix/store`: an overlay there, read-only, with the target's own store
//!   above the toolbox's, so both stores' paths resolve. Its two layers are attached first on a
//!   scratch tmpfs stacked at the same path, which the overlay then covers.
//! - The target has a `/nix` without a store: a read-only overlay at `/nix` of the target's
//!   tree and a layer holding only an empty `store`, on which the toolbox's store is attached.
//! - The target has no `/nix` (and its root may be read-only, so none can be made): a new root,
//!   a small tmpfs mirroring each top-level entry of the target's root by a recursive bind (so
//!   everything below `/` is the target's own, as writable as for its processes), plus
//!   `/nix/store`. It is made read-only: only creating or renaming top-level entries of `/` is
//!   refused.
//! - The target already sees the toolbox's store (a process on the host): nothing to mount.
//!
//! A host tree is attached at its path. Where the target lacks that directory, a mirror like
//! the new root (a read-only tmpfs over the deepest directory the target has on the way, its
//! entries bound back, plus the missing directories) gives a mount point without writing into
//! the target; for a missing top-level directory, the new root itself gets it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::MsFlags;

use super::facts::{EntryKind, RootEntry, RootListing, TargetNix};
use super::mountapi::{MountApi, Place};
use super::places::{Spot, TreeGraft};
use crate::guest::syscall::Syscall;
use crate::store::HOST_NIX;

/// Names of the two layers on the scratch tmpfs of a merge.
const TARGET_LAYER: &str = "target";
const TOOLBOX_LAYER: &str = "toolbox";

/// What the session's mount namespace gets on top of the copy of the target's, in the order
/// `apply_graft` makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraftPlan {
    /// A new root mirroring the target's: where the target has no `/nix`, or a tree needs a
    /// top-level directory the target lacks.
    pub new_root: Option<Mirror>,
    pub toolbox: Toolbox,
    /// Mirrors of directories below `/` that lack a tree's mount point; parents first.
    pub mirrors: Vec<Mirror>,
    /// Host trees attached last, in order (a tree below another comes after it).
    pub trees: Vec<TreeGraft>,
}

/// How the toolbox's store is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolbox {
    /// The target already shows the toolbox's store at `/nix/store`.
    Shared,
    /// At `/nix/store` of the new root.
    AtNix,
    /// A read-only overlay at `/nix/store`: the target's own store over the toolbox's.
    Merge,
    /// A read-only overlay at `/nix` (the target's tree and an empty `store`), the toolbox's
    /// store attached on that `store`.
    BelowNix,
}

/// Where the toolbox's store is shown, in the target and in the new root.
const STORE_IN_ROOT: &str = "nix/store";

/// A tmpfs over the target's directory `at` with its `entries` bound back and `dirs` (relative,
/// parents first) made in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub at: PathBuf,
    pub mode: u32,
    pub entries: Vec<RootEntry>,
    pub dirs: Vec<PathBuf>,
}

impl GraftPlan {
    /// Whether a copy of the toolbox's store is mounted (the target does not show it already).
    pub fn shows_toolbox(&self) -> bool {
        !matches!(self.toolbox, Toolbox::Shared)
    }

    /// The detached, sealed copy of the toolbox's store at `store` that `apply_graft` mounts,
    /// when the plan mounts one.
    pub fn copy_toolbox<M: MountApi>(&self, store: &Path, api: &M) -> Result<Option<M::Tree>> {
        if !self.shows_toolbox() {
            return Ok(None);
        }
        let tree = api.clone_tree(store)?;
        api.seal_tree(&tree)?;
        Ok(Some(tree))
    }
}

/// Decides how the toolbox's store and `trees` (each with the spot found for it, in the order
/// they are attached) are added to a target whose root is `root`.
pub fn plan_graft(root: &RootListing, nix: &TargetNix, trees: Vec<(TreeGraft, Spot)>) -> GraftPlan {
    let toolbox = match nix {
        TargetNix::Shared => Toolbox::Shared,
        TargetNix::Store => Toolbox::Merge,
        TargetNix::NoStore => Toolbox::BelowNix,
        TargetNix::Absent => Toolbox::AtNix,
    };
    // A `nix` that is not a directory (a file, a dangling link) is replaced by ours.
    let mut in_root: Vec<PathBuf> = match toolbox {
        Toolbox::AtNix => vec![PathBuf::from(STORE_IN_ROOT)],
        _ => Vec::new(),
    };
    let mut below: BTreeMap<PathBuf, (RootListing, Vec<PathBuf>)> = BTreeMap::new();
    let mut attached = Vec::with_capacity(trees.len());
    for (tree, spot) in trees {
        if let Spot::Missing {
            below: dir,
            rest,
            listing,
        } = spot
        {
            match listing {
                Some(listing) if dir != Path::new("/") => below
                    .entry(dir)
                    .or_insert((listing, Vec::new()))
                    .1
                    .push(rest),
                _ => in_root.push(rest),
            }
        }
        attached.push(tree);
    }
    GraftPlan {
        new_root: (!in_root.is_empty()).then(|| mirror_of(Path::new("/"), root, &in_root)),
        toolbox,
        mirrors: below
            .iter()
            .map(|(dir, (listing, rests))| mirror_of(dir, listing, rests))
            .collect(),
        trees: attached,
    }
}

/// A mirror of `listing` at `at` making the directories `rests`; an entry in the way of one
/// (a file or link where a directory is wanted) is left out.
fn mirror_of(at: &Path, listing: &RootListing, rests: &[PathBuf]) -> Mirror {
    let firsts: Vec<&OsStr> = rests.iter().filter_map(|r| r.iter().next()).collect();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for rest in rests {
        let mut prefix = PathBuf::new();
        for c in rest {
            prefix.push(c);
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
            }
        }
    }
    Mirror {
        at: at.to_path_buf(),
        mode: listing.mode,
        entries: listing
            .entries
            .iter()
            .filter(|e| !firsts.contains(&e.name.as_os_str()))
            .cloned()
            .collect(),
        dirs,
    }
}

/// Makes the mounts of `plan`. Runs in a fresh, private copy of the target's mount namespace,
/// with the root and working directory of its root. `toolbox` is the detached, sealed copy of
/// `plan.copy_toolbox()`; `trees` the detached copies of `plan.trees`.
pub fn apply_graft<M: MountApi>(
    plan: &GraftPlan,
    toolbox: Option<&M::Tree>,
    trees: &[M::Tree],
    sys: &dyn Syscall,
    api: &M,
) -> Result<()> {
    let toolbox = || toolbox.context("no copy of the toolbox's store was made");
    if let Some(root) = &plan.new_root {
        let tmpfs = build_mirror(root, api)?;
        if plan.toolbox == Toolbox::AtNix {
            api.attach(toolbox()?, Place::In(&tmpfs, OsStr::new(STORE_IN_ROOT)))?;
        }
        api.enter(&tmpfs)?;
        sys.pivot_root(Path::new("."))?;
        remount_read_only(Path::new("/"), sys)?;
    }
    let nix_dir = Path::new(HOST_NIX);
    match plan.toolbox {
        Toolbox::Merge => merge_at(&nix_dir.join("store"), Some(toolbox()?), sys, api)?,
        Toolbox::BelowNix => {
            merge_at(nix_dir, None, sys, api)?;
            api.attach(toolbox()?, Place::Path(&nix_dir.join("store")))?;
        }
        _ => {}
    }
    for mirror in &plan.mirrors {
        build_mirror(mirror, api)?;
        remount_read_only(&mirror.at, sys)?;
    }
    if trees.len() != plan.trees.len() {
        anyhow::bail!(
            "{} trees to attach, {} copied",
            plan.trees.len(),
            trees.len()
        );
    }
    for (graft, tree) in plan.trees.iter().zip(trees) {
        api.attach(tree, Place::Path(&graft.at))?;
    }
    Ok(())
}

/// A read-only overlay at `at` of the target's tree there and `toolbox` (None: a layer with
/// only an empty `store`, for the toolbox's store to be attached on).
fn merge_at<M: MountApi>(
    at: &Path,
    toolbox: Option<&M::Tree>,
    sys: &dyn Syscall,
    api: &M,
) -> Result<()> {
    let own = api.clone_tree(at)?;
    let scratch = api.new_tmpfs(0o755)?;
    api.attach(&scratch, Place::Path(at))?;
    let target_layer = OsStr::new(TARGET_LAYER);
    let toolbox_layer = OsStr::new(TOOLBOX_LAYER);
    api.mkdir_in(&scratch, target_layer, 0o755)?;
    api.mkdir_in(&scratch, toolbox_layer, 0o755)?;
    api.attach(&own, Place::In(&scratch, target_layer))?;
    match toolbox {
        Some(toolbox) => api.attach(toolbox, Place::In(&scratch, toolbox_layer))?,
        None => api.mkdir_in(
            &scratch,
            Path::new(TOOLBOX_LAYER).join("store").as_os_str(),
            0o755,
        )?,
    }
    // A `store` that is not a directory would hide the toolbox's store if it came first; below
    // `/nix` the toolbox's layer wins, at `/nix/store` the target's (its own builds of a path
    // stay its own).
    let (upper, lower) = if at.ends_with("store") {
        (TARGET_LAYER, TOOLBOX_LAYER)
    } else {
        (TOOLBOX_LAYER, TARGET_LAYER)
    };
    let data = format!(
        "lowerdir={0}/{upper}:{0}/{lower}",
        at.display(),
        upper = upper,
        lower = lower
    );
    sys.mount(
        Some(Path::new("overlay")),
        at,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )
}

/// Attaches a tmpfs over `mirror.at` showing the same entries (each a recursive copy of the
/// target's, made before the tmpfs covers them) and the mirror's own directories.
fn build_mirror<M: MountApi>(mirror: &Mirror, api: &M) -> Result<M::Tree> {
    let mut copies = Vec::with_capacity(mirror.entries.len());
    for entry in &mirror.entries {
        if matches!(entry.kind, EntryKind::Link(_)) {
            continue;
        }
        let path = mirror.at.join(&entry.name);
        match api.clone_tree(&path) {
            Ok(tree) => copies.push((entry, tree)),
            // The target removed it since it was listed: nothing to show.
            Err(e) if is_not_found(&e) => tracing::debug!("{e:#}"),
            Err(e) => return Err(e),
        }
    }
    let tmpfs = api.new_tmpfs(mirror.mode)?;
    api.attach(&tmpfs, Place::Path(&mirror.at))?;
    for (entry, tree) in &copies {
        match entry.kind {
            EntryKind::Dir => api.mkdir_in(&tmpfs, &entry.name, 0o755)?,
            _ => api.file_in(&tmpfs, &entry.name)?,
        }
        api.attach(tree, Place::In(&tmpfs, &entry.name))?;
    }
    for entry in &mirror.entries {
        if let EntryKind::Link(points_to) = &entry.kind {
            api.symlink_in(&tmpfs, &entry.name, points_to)?;
        }
    }
    for dir in &mirror.dirs {
        api.mkdir_in(&tmpfs, dir.as_os_str(), 0o755)?;
    }
    Ok(tmpfs)
}

fn remount_read_only(at: &Path, sys: &dyn Syscall) -> Result<()> {
    crate::guest::rootfs::remount_read_only(at, sys)
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            || c.downcast_ref::<rustix::io::Errno>() == Some(&rustix::io::Errno::NOENT)
    })
}

#[cfg(test)]
#[path = "graft_tests.rs"]
mod tests;
