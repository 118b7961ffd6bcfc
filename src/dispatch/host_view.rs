//! On the host: the view a dispatched session works in. The host as the ssh user sees it (its
//! files at `/`, its processes, network and services) with the toolbox's store at `/nix`, and
//! a private home (profile and memory) at `$HOME`, all in a private mount namespace of a user
//! namespace that the host's own processes never see. Built by the same graft as `attach`
//! (a read-only mirror of `/` where the host has no `/nix`); nothing is written outside
//! agentenv's directory on the host.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sched::{unshare, CloneFlags};

use crate::attach::facts::{read_listing, TargetNix};
use crate::attach::graft::{apply_graft, plan_graft, GraftPlan};
use crate::attach::mountapi::{LinuxMountApi, MountApi};
use crate::attach::places::{find_spot, TreeGraft};
use crate::compute::linux::userns::{unshare_refused, write_id_maps, IdMode};
use crate::guest::rootfs::make_mounts_private;
use crate::guest::syscall::LinuxSyscall;

/// What the view is made of, all paths on the host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HostViewSpec {
    /// A directory holding `store/`: the toolbox's store paths (agentenv's content cache).
    pub nix_dir: PathBuf,
    /// Host trees shown at their paths: the private home at `$HOME`, the profile read-only.
    pub trees: Vec<ViewTree>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ViewTree {
    pub source: PathBuf,
    pub at: PathBuf,
    pub read_only: bool,
}

/// How the host has a Nix store of its own; unlike a container target, a host's own
/// `/nix/store` is never the toolbox's.
fn host_nix() -> TargetNix {
    let is_dir = |p: &str| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    match (is_dir("/nix"), is_dir("/nix/store")) {
        (false, _) => TargetNix::Absent,
        (true, true) => TargetNix::Store,
        (true, false) => TargetNix::NoStore,
    }
}

/// The graft for this host, from what its root shows now.
pub fn plan_view(spec: &HostViewSpec) -> Result<GraftPlan> {
    let root = Path::new("/");
    let listing = read_listing(root)?;
    let trees = spec
        .trees
        .iter()
        .map(|t| {
            let spot = find_spot(root, &t.at)?;
            Ok((
                TreeGraft {
                    source: t.source.clone(),
                    at: t.at.clone(),
                    read_only: t.read_only,
                },
                spot,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(plan_graft(&listing, &host_nix(), trees))
}

/// Enters the view in the calling process: a user namespace mapping the caller to itself, a
/// private mount namespace, the graft. The caller's working directory is kept where it exists.
pub fn enter_host_view(spec: &HostViewSpec) -> Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let cwd = std::env::current_dir().ok();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| unshare_refused(e, IdMode::UserNamespace { uid, gid }))?;
    write_id_maps(uid, gid)?;
    let sys = LinuxSyscall;
    make_mounts_private(&sys)?;
    let plan = plan_view(spec)?;
    let api = LinuxMountApi;
    // The cache's store; the graft puts it at `/nix/store` (over the host's own, if any).
    let toolbox = plan.copy_toolbox(&spec.nix_dir.join("store"), &api)?;
    let trees = plan
        .trees
        .iter()
        .map(|t| {
            let tree = api.clone_tree(&t.source)?;
            api.share_tree(&tree, t.read_only, None)?;
            Ok(tree)
        })
        .collect::<Result<Vec<_>>>()?;
    apply_graft(&plan, toolbox.as_ref(), &trees, &sys, &api)?;
    if let Some(cwd) = cwd {
        if std::env::set_current_dir(&cwd).is_err() {
            std::env::set_current_dir("/").context("cannot change to /")?;
        }
    }
    Ok(())
}
