//! `agentenv attach [--flake REF] [--profile DIR] [--user USER] TARGET [-- COMMAND...]`: a shell
//! (or one command) inside a running container or process, with a toolbox's tools and
//! optionally a profile in a private home, leaving no trace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::attach::caps::check_attach_privilege;
use crate::attach::cgroups::target_cgroups;
use crate::attach::facts::{read_facts, read_privileges};
use crate::attach::graft::plan_graft;
use crate::attach::home::{sweep_homes, AttachHome};
use crate::attach::places::{find_spot, Spot, TreeGraft};
use crate::attach::script::{plan_session_launch, session_home};
use crate::attach::session::{run_session, SessionPlan};
use crate::attach::target::{resolve_target, Target};
use crate::attach::user::{check_mapped, default_user, resolve_user};
use crate::cli::current_dir;
use crate::diag::Diagnostic;
use crate::guest::launch::LaunchMode;
use crate::nix::devenv::load_or_evaluate;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::profile::hook::{hook_command, hook_failed, OUTPUT_TO_STDERR};
use crate::profile::Profile;
use crate::store::HOST_NIX;

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
    let facts = read_facts(&target)?;
    let target_root = PathBuf::from(format!("/proc/{}/root", target.pid));
    let proc_dir = PathBuf::from(format!("/proc/{}", target.pid));
    let own_user = match &args.user {
        Some(_) => None,
        None => default_user(&read_privileges(target.pid)?, &proc_dir, &target_root)?,
    };
    let user = match own_user {
        Some(user) => user,
        None => resolve_user(args.user.as_deref(), &target_root)?,
    };
    check_mapped(&user, &proc_dir)?;
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
            trees = profile_trees(dir, &home, &home_at, &target_root)?;
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
        profile_env.as_ref(),
    );
    let plan = SessionPlan {
        graft: plan_graft(&facts.root, &facts.nix, trees),
        foreign: facts.foreign.clone(),
        cgroups: target_cgroups(target.pid),
        user,
        launch,
        target,
        terminal: crate::attach::terminal::interactive_if_wanted(),
    };
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
            profile_env.as_ref(),
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
    // A target that ends takes the processes of its PID namespace with it, the session too.
    if code == 128 + 9 && target_ends_soon(&plan.target) {
        eprintln!(
            "agentenv: {} exited; the session ended with it",
            plan.target.label
        );
    }
    Ok(code)
}

/// True if `target` is gone or goes within half a second: a dying PID 1 of a namespace waits
/// for every process in it to be reaped (the session included) before it exits itself.
fn target_ends_soon(target: &Target) -> bool {
    // PF_EXITING in /proc/PID/stat's flags: the target has begun to exit. Only then wait.
    const PF_EXITING: u64 = 0x4;
    let flags = std::fs::read_to_string(format!("/proc/{}/stat", target.pid))
        .ok()
        .and_then(|stat| {
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().nth(6)?.parse::<u64>().ok()
        });
    if flags.is_some_and(|f| f & PF_EXITING == 0) {
        return !target.still_running();
    }
    for _ in 0..50 {
        if !target.still_running() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
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

/// The profile chosen by `--profile`, `$AGENTENV_PROFILE` or config.toml, unless `no_profile`.
/// The profile's directory as its links name it, once it is known to fit the session.
fn check_profile(dir: &Path, home_at: &Path, target: &Target) -> Result<PathBuf> {
    let dir = Profile::load(dir)?.root;
    let odd = home_at
        .components()
        .any(|c| c == std::path::Component::ParentDir);
    if !home_at.is_absolute() || home_at == Path::new("/") || odd {
        return Err(Diagnostic::new(format!(
            "the session in {} has no home directory for the profile (HOME is {})",
            target.label,
            home_at.display()
        ))
        .hint("pass a user with a home in the target's /etc/passwd (`--user NAME`), or attach without it: `--no-profile`")
        .into());
    }
    let nix = Path::new(HOST_NIX);
    let in_nix = |p: &Path| p.starts_with(nix) && !p.starts_with(nix.join("store"));
    if home_at.starts_with(&dir) || in_nix(&dir) || home_at.starts_with(nix) {
        return Err(Diagnostic::new(format!(
            "the profile {} and the home {} cannot both be shown in {}",
            dir.display(),
            home_at.display(),
            target.label
        ))
        .detail("the profile may not hold the home, and /nix is the toolbox's")
        .hint("keep the profile in a directory of its own, e.g. ~/config, or pass `--user` with another home")
        .into());
    }
    Ok(dir)
}

/// The private home at `home_at`, then the profile at its own path (in the store it is there
/// already, with the toolbox's store).
fn profile_trees(
    dir: &Path,
    home: &AttachHome,
    home_at: &Path,
    target_root: &Path,
) -> Result<Vec<(TreeGraft, Spot)>> {
    let mut trees = vec![(
        TreeGraft {
            source: home.home(),
            at: home_at.to_path_buf(),
            read_only: false,
        },
        find_spot(target_root, home_at)?,
    )];
    if dir.starts_with(Path::new(HOST_NIX).join("store")) {
        return Ok(trees);
    }
    let spot = match dir.strip_prefix(home_at) {
        Ok(rel) => {
            home.make_mount_point(rel)?;
            Spot::Ready
        }
        Err(_) => find_spot(target_root, dir)?,
    };
    trees.push((
        TreeGraft {
            source: dir.to_path_buf(),
            at: dir.to_path_buf(),
            read_only: true,
        },
        spot,
    ));
    Ok(trees)
}
