//! On the host: a dispatched session in a container there (`dispatch --container ID`). The
//! session's agent runs on the host, as the ssh user (root: attaching is privileged), and each
//! command it is sent runs `__remote attach`, which is `agentenv attach` done with what the
//! dispatch brought: the toolbox's store from agentenv's content cache, the session's private
//! home (the profile activated in it, the agent's memory) and the profile's copy there. The
//! container is found, read and grafted as `attach` does it, and left as it was.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::remote::{read_spec, SessionView};
use crate::attach::caps::check_attach_privilege;
use crate::attach::facts::{read_facts, Namespace};
use crate::attach::home::give_tree;
use crate::attach::places::{check_profile, home_and_profile};
use crate::attach::script::{plan_session_launch, session_home, LaunchProfile};
use crate::attach::session::{run_session, SessionPlan};
use crate::attach::target::resolve_target;
use crate::attach::user::{session_user, SessionUser};
use crate::diag::Diagnostic;
use crate::guest::launch::LaunchMode;
use crate::nix::devenv::DevEnv;
use crate::profile::ProfileEnv;

/// What `__remote attach` needs, in the session's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container (or `pid:N`) on the host, as `agentenv attach` takes it.
    pub target: String,
    /// A directory holding `store/`: the toolbox's store paths.
    pub nix_dir: PathBuf,
    /// The session's private home on the host, shown at the session's `$HOME` in the
    /// container when `private_home` (a profile or an agent's memory is in it); else the
    /// container's own home is the session's.
    pub home: PathBuf,
    pub private_home: bool,
    /// Where the agent on the host keeps its start-up scripts.
    pub scratch: PathBuf,
    pub devenv: DevEnv,
    /// The profile's copy on the host, shown read-only at that path, with what it adds to
    /// the environment and the lines that run its `activate.sh` first.
    pub profile: Option<ContainerProfile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerProfile {
    pub dir: PathBuf,
    pub env: ProfileEnv,
    pub hook: String,
}

/// `__remote attach SPEC [-- COMMAND...]`: runs `command` (a shell if empty) in the
/// container the session's spec names; returns its exit code.
pub fn attach(spec_path: &Path, command: &[OsString]) -> Result<i32> {
    let (spec, _) = read_spec(spec_path)?;
    let SessionView::Container(c) = &spec.view else {
        return Err(Diagnostic::new(format!(
            "{} is not the spec of a session in a container",
            spec_path.display()
        ))
        .into());
    };
    check_attach_privilege()?;
    let target = resolve_target(&c.target)?;
    let store = c.nix_dir.join("store");
    let facts = read_facts(&target, &store)?;
    let user = session_user(target.pid, None)?;
    let home_at: PathBuf = session_home(&facts, &user).components().collect();
    let target_root = PathBuf::from(format!("/proc/{}/root", target.pid));
    let profile_dir = match &c.profile {
        Some(p) => {
            let dir = check_profile(&p.dir, &home_at, &target)?;
            if !facts.foreign.contains(&Namespace::User) && !dir.starts_with(&home_at) {
                check_reachable(&dir, &target_root, &user, &target.label)?;
            }
            Some(dir)
        }
        None => None,
    };
    let trees = match c.private_home {
        true => {
            let trees = home_and_profile(
                &c.home,
                &home_at,
                profile_dir.as_deref(),
                &target_root,
                |rel| {
                    let at = c.home.join(rel);
                    std::fs::create_dir_all(&at)
                        .with_context(|| format!("cannot create {}", at.display()))
                },
            )?;
            // What the activation and the memory made is the session user's in the container.
            give_tree(&c.home, user.uid, user.gid)?;
            trees
        }
        false => Vec::new(),
    };
    let caller_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let launch = plan_session_launch(
        &c.devenv,
        &facts,
        &user,
        &LaunchMode::for_command(command),
        &target.name,
        &caller_env,
        c.profile.as_ref().map(|p| LaunchProfile {
            env: &p.env,
            hook: &p.hook,
        }),
    );
    let plan = SessionPlan::new(target, &facts, trees, store, user, launch);
    tracing::debug!(graft = ?plan.graft, "attaching");
    let code = run_session(&plan)?;
    plan.target.say_if_it_ended(code);
    Ok(code)
}

/// Refuses a profile shown at `dir` that the session's user could not reach in the target
/// (root `target_root`): a directory of the target on the way closed to them (root's own
/// home, for the copy of a root ssh session's). The tree is attached at its path, and what
/// the target has on the way keeps its modes.
fn check_reachable(dir: &Path, target_root: &Path, user: &SessionUser, label: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return Ok(());
    }
    let mut seen = PathBuf::from("/");
    for part in dir.iter().skip(1) {
        let Ok(meta) = std::fs::symlink_metadata(target_root.join(seen.strip_prefix("/")?)) else {
            break;
        };
        if !meta.is_dir() {
            break;
        }
        let mode = meta.mode();
        let passes = match (
            meta.uid() == user.uid,
            user.groups.contains(&meta.gid()) || meta.gid() == user.gid,
        ) {
            (true, _) => mode & 0o100 != 0,
            (false, true) => mode & 0o010 != 0,
            (false, false) => mode & 0o001 != 0,
        };
        if !passes {
            return Err(Diagnostic::new(format!(
                "the profile's copy on the host, {}, is out of reach of uid {} in {label}: {} is closed to it there",
                dir.display(),
                user.uid,
                seen.display()
            ))
            .detail("the profile is shown at its path on the host, and the container's own directories on the way keep their modes")
            .hint("keep agentenv's directory on the host where every user may pass, e.g. `--remote-dir /var/tmp/agentenv-$USER`")
            .hint("or dispatch without the profile: `--no-profile`")
            .into());
        }
        seen.push(part);
    }
    Ok(())
}
