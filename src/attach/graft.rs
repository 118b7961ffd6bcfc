//! The graft: how the toolbox's store is added to a private copy of the target's mount
//! namespace without touching the target's files or mounts. `plan_graft` decides from the
//! target's root alone (plain data, unit-tested); `apply_graft` makes the mounts through the
//! `MountApi` and `Syscall` seams. Joining namespaces and running the shell live in `session`.
//!
//! Three cases:
//! - The target has `/nix/store` (or `/nix`): an overlay there, read-only, with the target's
//!   own tree above the toolbox's, so both stores' paths resolve. Its two layers are attached
//!   first on a scratch tmpfs stacked at the same path, which the overlay then covers.
//! - The target has no `/nix` (and its root may be read-only, so none can be made): a new root,
//!   a small tmpfs mirroring each top-level entry of the target's root by a recursive bind (so
//!   everything below `/` is the target's own, as writable as for its processes), plus `/nix`.
//!   It is made read-only: only creating or renaming top-level entries of `/` is refused.
//! - The target already sees the toolbox's store (a process on the host): nothing to mount.
//!
//! More trees (a profile at its path) are one more `clone_tree` on the host and one more
//! `attach` here. Where the target has the parent directory, the attach needs a mount point the
//! target lacks: the new-root technique applied to that parent (a tmpfs mirroring its entries
//! by binds, plus the new one) gives it without writing into the target.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::MsFlags;

use super::facts::{EntryKind, RootEntry, RootListing, TargetNix};
use super::mountapi::{MountApi, Place};
use crate::guest::syscall::Syscall;
use crate::store::HOST_NIX;

/// Names of the two layers on the scratch tmpfs of a merge.
const TARGET_LAYER: &str = "target";
const TOOLBOX_LAYER: &str = "toolbox";

/// What the session's mount namespace gets on top of the copy of the target's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraftPlan {
    /// The target already shows the toolbox's store at `/nix/store`.
    Nothing,
    /// A read-only overlay at `at`: the target's own tree there over the toolbox's `source`.
    Merge { at: PathBuf, source: PathBuf },
    /// A new root mirroring the target's top-level `entries`, with the toolbox at `/nix`.
    NewRoot { mode: u32, entries: Vec<RootEntry> },
}

impl GraftPlan {
    /// The host tree to copy as the toolbox, if any.
    pub fn toolbox_source(&self) -> Option<PathBuf> {
        match self {
            GraftPlan::Nothing => None,
            GraftPlan::Merge { source, .. } => Some(source.clone()),
            GraftPlan::NewRoot { .. } => Some(PathBuf::from(HOST_NIX)),
        }
    }
}

/// Decides how the toolbox's store is added to a target whose root is `root`.
pub fn plan_graft(root: &RootListing, nix: &TargetNix) -> GraftPlan {
    let nix_dir = Path::new(HOST_NIX);
    match nix {
        TargetNix::Shared => GraftPlan::Nothing,
        TargetNix::Store => GraftPlan::Merge {
            at: nix_dir.join("store"),
            source: nix_dir.join("store"),
        },
        TargetNix::NoStore => GraftPlan::Merge {
            at: nix_dir.to_path_buf(),
            source: nix_dir.to_path_buf(),
        },
        TargetNix::Absent => GraftPlan::NewRoot {
            mode: root.mode,
            // A `nix` that is not a directory (a file, a dangling link) is replaced by ours.
            entries: root
                .entries
                .iter()
                .filter(|e| e.name != "nix")
                .cloned()
                .collect(),
        },
    }
}

/// Makes the mounts of `plan`. Runs in a fresh, private copy of the target's mount namespace,
/// with the root and working directory of its root. `toolbox` is the detached, sealed copy of
/// the host tree `plan.toolbox_source()` names.
pub fn apply_graft<M: MountApi>(
    plan: &GraftPlan,
    toolbox: Option<&M::Tree>,
    sys: &dyn Syscall,
    api: &M,
) -> Result<()> {
    match plan {
        GraftPlan::Nothing => Ok(()),
        GraftPlan::Merge { at, .. } => {
            let toolbox = toolbox.context("no copy of the toolbox's store was made")?;
            merge_at(at, toolbox, sys, api)
        }
        GraftPlan::NewRoot { mode, entries } => {
            let toolbox = toolbox.context("no copy of the toolbox's store was made")?;
            build_new_root(*mode, entries, toolbox, sys, api)
        }
    }
}

fn merge_at<M: MountApi>(at: &Path, toolbox: &M::Tree, sys: &dyn Syscall, api: &M) -> Result<()> {
    let own = api.clone_tree(at)?;
    let scratch = api.new_tmpfs(0o755)?;
    api.attach(&scratch, Place::Path(at))?;
    let target_layer = OsString::from(TARGET_LAYER);
    let toolbox_layer = OsString::from(TOOLBOX_LAYER);
    api.mkdir_in(&scratch, &target_layer, 0o755)?;
    api.mkdir_in(&scratch, &toolbox_layer, 0o755)?;
    api.attach(&own, Place::In(&scratch, &target_layer))?;
    api.attach(toolbox, Place::In(&scratch, &toolbox_layer))?;
    // A plain `store` would hide the toolbox's store if it came first; below `/nix` the
    // toolbox's tree wins, at `/nix/store` the target's (its own builds of a path stay its own).
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

fn build_new_root<M: MountApi>(
    mode: u32,
    entries: &[RootEntry],
    toolbox: &M::Tree,
    sys: &dyn Syscall,
    api: &M,
) -> Result<()> {
    // Copies first, while `/` is still the target's root.
    let mut copies = Vec::with_capacity(entries.len());
    for entry in entries {
        if matches!(entry.kind, EntryKind::Link(_)) {
            continue;
        }
        let path = Path::new("/").join(&entry.name);
        match api.clone_tree(&path) {
            Ok(tree) => copies.push((entry, tree)),
            // The target removed it since its root was read: nothing to show.
            Err(e) if is_not_found(&e) => tracing::debug!("{e:#}"),
            Err(e) => return Err(e),
        }
    }
    let root = api.new_tmpfs(mode)?;
    api.attach(&root, Place::Path(Path::new("/")))?;
    for (entry, tree) in &copies {
        match entry.kind {
            EntryKind::Dir => api.mkdir_in(&root, &entry.name, 0o755)?,
            _ => api.file_in(&root, &entry.name)?,
        }
        api.attach(tree, Place::In(&root, &entry.name))?;
    }
    for entry in entries {
        if let EntryKind::Link(points_to) = &entry.kind {
            api.symlink_in(&root, &entry.name, points_to)?;
        }
    }
    let nix = OsString::from("nix");
    api.mkdir_in(&root, &nix, 0o755)?;
    api.attach(toolbox, Place::In(&root, &nix))?;
    api.enter(&root)?;
    sys.pivot_root(Path::new("."))?;
    crate::guest::rootfs::remount_root_read_only(sys)
}

fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            || c.downcast_ref::<rustix::io::Errno>() == Some(&rustix::io::Errno::NOENT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::mountapi::RecordingMountApi;
    use crate::guest::syscall::RecordingSyscall;

    fn entry(name: &str, kind: EntryKind) -> RootEntry {
        RootEntry {
            name: name.into(),
            kind,
        }
    }

    fn busybox_root() -> RootListing {
        RootListing {
            mode: 0o755,
            entries: vec![
                entry("bin", EntryKind::Dir),
                entry("lib64", EntryKind::Link("usr/lib64".into())),
                entry("proc", EntryKind::Dir),
                entry(".dockerenv", EntryKind::Other),
                entry("nix", EntryKind::Other),
            ],
        }
    }

    fn record(plan: &GraftPlan) -> Vec<String> {
        let log = RecordingSyscall::default();
        let api = RecordingMountApi::new(&log);
        let toolbox = api.clone_tree(&plan.toolbox_source().unwrap()).unwrap();
        api.seal_tree(&toolbox).unwrap();
        apply_graft(plan, Some(&toolbox), &log, &api).unwrap();
        log.calls.into_inner()
    }

    #[test]
    fn target_without_nix_gets_a_new_root_mirroring_its_own() {
        let plan = plan_graft(&busybox_root(), &TargetNix::Absent);
        assert_eq!(plan.toolbox_source(), Some(PathBuf::from("/nix")));
        let calls = record(&plan);
        assert_eq!(
            calls,
            vec![
                "clone_tree /nix -> t1(/nix)",
                "seal t1(/nix)",
                "clone_tree /bin -> t2(/bin)",
                "clone_tree /proc -> t3(/proc)",
                "clone_tree /.dockerenv -> t4(/.dockerenv)",
                "new_tmpfs 755 -> t5(tmpfs)",
                "attach t5(tmpfs) at /",
                "mkdir t5(tmpfs)/bin 755",
                "attach t2(/bin) at t5(tmpfs)/bin",
                "mkdir t5(tmpfs)/proc 755",
                "attach t3(/proc) at t5(tmpfs)/proc",
                "file t5(tmpfs)/.dockerenv",
                "attach t4(/.dockerenv) at t5(tmpfs)/.dockerenv",
                "symlink t5(tmpfs)/lib64 -> usr/lib64",
                "mkdir t5(tmpfs)/nix 755",
                "attach t1(/nix) at t5(tmpfs)/nix",
                "enter t5(tmpfs)",
                "pivot_root .",
                "mount - / - MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND) -",
            ]
        );
    }

    #[test]
    fn target_store_is_merged_with_the_toolbox_store_below_it() {
        let plan = plan_graft(&busybox_root(), &TargetNix::Store);
        let calls = record(&plan);
        assert_eq!(
            calls,
            vec![
                "clone_tree /nix/store -> t1(/nix/store)",
                "seal t1(/nix/store)",
                "clone_tree /nix/store -> t2(/nix/store)",
                "new_tmpfs 755 -> t3(tmpfs)",
                "attach t3(tmpfs) at /nix/store",
                "mkdir t3(tmpfs)/target 755",
                "mkdir t3(tmpfs)/toolbox 755",
                "attach t2(/nix/store) at t3(tmpfs)/target",
                "attach t1(/nix/store) at t3(tmpfs)/toolbox",
                "mount overlay /nix/store overlay MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) lowerdir=/nix/store/target:/nix/store/toolbox",
            ]
        );
    }

    #[test]
    fn nix_without_a_store_puts_the_toolbox_first() {
        let plan = plan_graft(&busybox_root(), &TargetNix::NoStore);
        let calls = record(&plan);
        assert!(calls
            .last()
            .unwrap()
            .ends_with("lowerdir=/nix/toolbox:/nix/target"));
    }

    #[test]
    fn a_target_sharing_the_hosts_store_needs_no_mount() {
        let plan = plan_graft(&busybox_root(), &TargetNix::Shared);
        assert_eq!(plan, GraftPlan::Nothing);
        assert_eq!(plan.toolbox_source(), None);
    }
}
