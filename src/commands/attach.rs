//! `agentenv attach [--flake REF] [--profile DIR] [--user USER] TARGET [-- COMMAND...]`: a shell
//! (or one command) inside a running container or process, with a toolbox's tools and
//! optionally a profile in a private home, leaving no trace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::attach::caps::check_attach_privilege;
use crate::attach::facts::read_facts;
use crate::attach::home::{sweep_homes, AttachHome};
use crate::attach::places::{check_profile, home_and_profile};
use crate::attach::script::{plan_session_launch, session_home, LaunchProfile};
use crate::attach::session::{run_session, SessionPlan};
use crate::attach::target::resolve_target;
use crate::attach::user::session_user;
use crate::cli::current_dir;
use crate::diag::Diagnostic;
use crate::guest::launch::LaunchMode;
use crate::nix::devenv::load_or_evaluate;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::profile::hook::{hook_command, hook_failed, OUTPUT_TO_STDERR};

pub const USAGE_FIRST: &str = "\
$ agentenv attach web                     a shell in container `web`, with this project's tools
$ agentenv attach --profile ~/config web  ...and your dotfiles, skills and tools, in a private home
$ agentenv attach --flake ~/tools 3f2a -- htop
$ agentenv attach pid:1234 -- ss -tlnp    any process: its namespaces, its root, your tools";

/// Options of `agentenv attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The flake whose dev shell is the toolbox; default: the flake around the current directory.
    #[arg(long, value_name = "PATH[#NAME]")]
    pub flake: Option<String>,

    /// A profile (dotfiles, skills, tools) for the session: shown read-only at its own path and
    /// activated into a private home, shown at the session's $HOME. Also $AGENTENV_PROFILE, or
    /// `profile = "..."` in config.toml. The target never sees either.
    #[arg(long, value_name = "DIR", env = "AGENTENV_PROFILE")]
    pub profile: Option<PathBuf>,

    /// No profile, whatever --profile, $AGENTENV_PROFILE or config.toml say: the target's own
    /// $HOME.
    #[arg(long)]
    pub no_profile: bool,

    /// Attach as this agent (see `agentenv agent new`): its profile, a private home of its own,
    /// and its memory writable at ~/.claude/CLAUDE.md, ~/.claude/skills/, ~/.codex/AGENTS.md
    /// and ~/.agent-memory/, committed when the session ends. The target sees none of it.
    #[arg(long, value_name = "NAME", conflicts_with = "no_profile")]
    pub agent: Option<String>,

    /// Run as this user of the target: NAME or UID, optionally with :GROUP or :GID (default:
    /// the user of the target's main process, root for most containers).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Evaluate the toolbox again even if nothing it depends on changed.
    #[arg(long)]
    pub refresh: bool,

    /// A running container (podman, docker, containerd: id, name, or a unique prefix of
    /// either) or a process (`1234`, `pid:1234`).
    #[arg(
        value_name = "TARGET",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        add = clap_complete::engine::ArgValueCompleter::new(crate::commands::completions::containers)
    )]
    pub target: String,

    /// Run this command instead of an interactive shell, and exit with its code.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: &AttachArgs) -> Result<i32> {
    check_attach_privilege()?;
    let target = resolve_target(&args.target)?;
    let toolbox = toolbox_flake(args.flake.as_deref(), &current_dir()?)?;
    let store = std::path::Path::new(crate::store::HOST_NIX).join("store");
    let facts = read_facts(&target, &store)?;
    let target_root = PathBuf::from(format!("/proc/{}/root", target.pid));
    let user = session_user(target.pid, args.user.as_deref())?;
    let state = StateDirs::from_env()?;
    let home_at: PathBuf = session_home(&facts, &user).components().collect();
    let agent = match &args.agent {
        Some(name) => Some(crate::memory::run::open_agent(
            name,
            args.profile.as_deref(),
        )?),
        None => None,
    };
    let chosen = match &agent {
        Some(a) => Some(crate::memory::run::attach_profile(a)?),
        None => {
            crate::profile::config::chosen_unless(args.profile.as_deref(), args.no_profile, &state)?
        }
    };
    let profile = match chosen {
        Some(dir) => Some(check_profile(&dir, &home_at, &target)?),
        None => None,
    };
    let (devenv, outcome) = load_or_evaluate(&toolbox, &state, args.refresh)?;
    tracing::debug!(?outcome, target = %target.label, "toolbox ready");

    let mut trees = Vec::new();
    let mut pending_hook = None;
    let mut memory = None;
    let profile_env = match &profile {
        Some(dir) => {
            sweep_homes(&state);
            let mut home =
                AttachHome::for_session(&state, &target, dir, &home_at, user.uid, user.gid);
            let except = match &agent {
                Some(a) => {
                    home = home.for_agent(a.name());
                    crate::memory::run::profile_except(a)?
                }
                None => Vec::new(),
            };
            let (env, hook) =
                home.activate(dir, &crate::profile::tools::cache_root(&state), &except)?;
            trees = home_and_profile(&home.home(), &home_at, Some(dir), &target_root, |rel| {
                home.make_mount_point(rel)
            })?;
            if let Some(a) = &agent {
                let attached = crate::memory::run::begin_attached(
                    a,
                    &home,
                    &home_at,
                    &toolbox.root,
                    &args.command,
                )?;
                trees.extend(attached.trees);
                memory = Some((attached.session, attached.lock));
            }
            pending_hook = hook.map(|h| (h, dir.clone(), home.profile_state()));
            Some(env)
        }
        None => None,
    };
    let mode = LaunchMode::for_command(&args.command);
    let caller_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let launch = plan_session_launch(
        &devenv,
        &facts,
        &user,
        &mode,
        &target.name,
        &caller_env,
        profile_env.as_ref().map(LaunchProfile::env),
    );
    let plan = SessionPlan::new(target, &facts, trees, store, user, launch);
    tracing::debug!(graft = ?plan.graft, foreign = ?plan.foreign, "attaching");
    // Forked here, in the host's namespaces: a session joins the target's PID namespace.
    let lander = match (memory, &agent) {
        (Some((session, lock)), Some(a)) => {
            let lander = crate::memory::run::Lander::spawn(a.clone(), session)?;
            Some((lander, lock))
        }
        _ => None,
    };
    if let Some((hook, dir, profile_state)) = pending_hook {
        // In the target, as the session's user, where $HOME is the home the session sees.
        let mut facts = facts;
        facts.cwd = dir;
        let mut hook_plan = plan.clone();
        // A pty of its own, so that what the script leaves running loses it when it ends.
        hook_plan.terminal = Some(crate::attach::terminal::SessionTerminal::OutputToStderr);
        hook_plan.launch = plan_session_launch(
            &devenv,
            &facts,
            &hook_plan.user,
            &LaunchMode::Command(hook_command(&hook)),
            &hook_plan.target.name,
            &caller_env,
            profile_env.as_ref().map(LaunchProfile::env),
        );
        let mut script = OUTPUT_TO_STDERR.as_bytes().to_vec();
        script.append(&mut hook_plan.launch.script);
        hook_plan.launch.script = script;
        let code = run_session(&hook_plan)?;
        crate::profile::record_hook_outcome(&profile_state, code == 0)?;
        if code != 0 {
            return Err(hook_failed(
                &hook,
                Some(code),
                "the profile's links are in place; fix the script and attach again (that runs it again), or attach with --no-profile",
            ));
        }
    }
    let code = run_session(&plan);
    if let Some((lander, _lock)) = lander {
        lander.finish()?;
    }
    let code = code?;
    plan.target.say_if_it_ended(code);
    Ok(code)
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
