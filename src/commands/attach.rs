//! `agentenv attach [--flake REF] [--user USER] TARGET [-- COMMAND...]`: a shell (or one
//! command) inside a running container or process, with a toolbox's tools, leaving no trace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::attach::caps::check_attach_privilege;
use crate::attach::cgroups::target_cgroups;
use crate::attach::facts::read_facts;
use crate::attach::graft::plan_graft;
use crate::attach::script::plan_session_launch;
use crate::attach::session::{run_session, SessionPlan};
use crate::attach::target::resolve_target;
use crate::attach::user::resolve_user;
use crate::cli::current_dir;
use crate::diag::Diagnostic;
use crate::guest::launch::LaunchMode;
use crate::nix::devenv::load_or_evaluate;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;

pub const USAGE_FIRST: &str = "\
$ agentenv attach web                   a shell in container `web`, with this project's tools
$ agentenv attach --flake ~/tools 3f2a -- htop
$ agentenv attach pid:1234 -- ss -tlnp  any process: its namespaces, its root, your tools";

/// Options of `agentenv attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The flake whose dev shell is the toolbox; default: the flake around the current directory.
    #[arg(long, value_name = "PATH[#NAME]")]
    pub flake: Option<String>,

    /// Run as this user of the target: NAME or UID, optionally with :GROUP or :GID (default: root).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Evaluate the toolbox again even if nothing it depends on changed.
    #[arg(long)]
    pub refresh: bool,

    /// A running container (podman, docker, containerd: id, name, or a unique prefix of
    /// either) or a process (`1234`, `pid:1234`).
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Run this command instead of an interactive shell, and exit with its code.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: &AttachArgs) -> Result<i32> {
    check_attach_privilege()?;
    let target = resolve_target(&args.target)?;
    let toolbox = toolbox_flake(args.flake.as_deref(), &current_dir()?)?;
    let facts = read_facts(&target)?;
    let target_root = PathBuf::from(format!("/proc/{}/root", target.pid));
    let user = resolve_user(args.user.as_deref(), &target_root)?;
    let state = StateDirs::from_env()?;
    let (devenv, outcome) = load_or_evaluate(&toolbox, &state, args.refresh)?;
    tracing::debug!(?outcome, target = %target.label, "toolbox ready");

    let mode = LaunchMode::for_command(&args.command);
    let caller_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let launch = plan_session_launch(&devenv, &facts, &user, &mode, &target.name, &caller_env);
    let plan = SessionPlan {
        graft: plan_graft(&facts.root, &facts.nix),
        foreign: facts.foreign.clone(),
        cgroups: target_cgroups(target.pid),
        user,
        launch,
        target,
    };
    tracing::debug!(graft = ?plan.graft, foreign = ?plan.foreign, "attaching");
    run_session(&plan)
}

/// The toolbox: `--flake`, else the flake around `cwd`.
fn toolbox_flake(flake: Option<&str>, cwd: &Path) -> Result<FlakeTarget> {
    match flake {
        Some(f) => FlakeTarget::resolve(f, cwd),
        None => FlakeTarget::resolve(".", cwd).map_err(|_| {
            Diagnostic::new(format!(
                "no toolbox: no flake.nix in {} or its parents",
                cwd.display()
            ))
            .detail("attach brings the dev shell of a flake into the target as its toolbox")
            .hint("pass one: `agentenv attach --flake ~/src/tools TARGET`, or run it in a project with a flake.nix")
            .into()
        }),
    }
}
