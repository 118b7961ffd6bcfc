//! `agentenv [PATH[#NAME]] [-- COMMAND...]`: the project's dev shell, or one command in it,
//! inside a fresh sandbox.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{current_dir, EnterArgs};
use crate::compute::{Compute, SandboxSpec};
use crate::envs::EnvDirs;
use crate::guest::etc::UserIdentity;
use crate::guest::launch::{plan_launch, LaunchMode};
use crate::nix::devenv::load_or_evaluate;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;

/// Host variables that describe the terminal and locale, not the host; they pass through.
const PASSED_THROUGH: &[&str] = &[
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "NO_COLOR",
    "NIX_CONFIG",
];

pub fn run(args: &EnterArgs) -> Result<i32> {
    let cwd = current_dir()?;
    let target = FlakeTarget::resolve(&args.path, &cwd)?;
    let state = StateDirs::from_env()?;
    let (devenv, outcome) = load_or_evaluate(&target, &state, args.refresh)?;
    tracing::debug!(?outcome, shell = %devenv.shell.display(), "dev environment ready");

    let env_dirs = EnvDirs::for_target(&state, &target);
    let project = project_dir(&target.root);
    let user = current_user(&project);
    let cwd_inside = if cwd.starts_with(&project) || cwd.starts_with(&user.home) {
        cwd
    } else {
        project.clone()
    };
    let mode = if !args.command.is_empty() {
        LaunchMode::Command(args.command.clone())
    } else if std::io::stdin().is_terminal() {
        LaunchMode::Interactive
    } else {
        LaunchMode::Stdin
    };
    let env = base_env(&user, &devenv.shell, &env_dirs.id, &project);
    let launch = plan_launch(
        &devenv.rc_script_for(&cwd_inside),
        &devenv.shell,
        &mode,
        &cwd_inside,
        env,
        &target.display_name(),
    );
    let spec = SandboxSpec {
        project,
        home: user.home.clone(),
        home_source: env_dirs.home(),
        store: env_dirs.store_view(),
        staging: env_dirs.staging(),
        user,
        network: args.network,
        hostname: "agentenv".into(),
        shell: devenv.shell.clone(),
        env_tool: devenv.env_tool.clone(),
        launch,
        create_dirs: env_dirs.dirs_to_create(),
    };
    let code = crate::compute::linux::LinuxNamespaces.run(&spec)?;
    env_dirs.record(&target)?;
    Ok(code)
}

/// The directory shown read-write: the git repository around the flake (so the whole project
/// can be worked on), or the flake's own directory; never a directory holding the user's home.
fn project_dir(flake_root: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    flake_root
        .ancestors()
        .find(|d| d.join(".git").exists())
        .filter(|repo| !home.as_ref().is_some_and(|h| h.starts_with(repo)))
        .unwrap_or(flake_root)
        .to_path_buf()
}

fn current_user(project: &Path) -> UserIdentity {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let pw = nix::unistd::User::from_uid(uid).ok().flatten();
    let name = pw
        .as_ref()
        .map(|u| u.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "user".into());
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| name.clone());
    let mut home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != Path::new("/"))
        .or_else(|| pw.map(|u| u.dir))
        .unwrap_or_else(|| PathBuf::from("/home").join(&name));
    // A home holding the project would hide the project behind the private home.
    if home.starts_with(project) {
        home = PathBuf::from("/home/agentenv");
    }
    UserIdentity {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        name,
        group,
        home,
    }
}

fn base_env(
    user: &UserIdentity,
    shell: &Path,
    env_id: &str,
    project: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), user.home.clone().into()),
        ("USER".into(), user.name.clone().into()),
        ("LOGNAME".into(), user.name.clone().into()),
        ("SHELL".into(), shell.into()),
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("AGENTENV".into(), "1".into()),
        ("AGENTENV_ENV".into(), env_id.into()),
        ("AGENTENV_PROJECT".into(), project.into()),
    ];
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if PASSED_THROUGH.contains(&name.as_ref()) || name.starts_with("LC_") {
            env.push((k, v));
        }
    }
    if Path::new(crate::compute::linux::plan::CA_BUNDLE).is_file() {
        for var in ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"] {
            env.push((var.into(), crate::compute::linux::plan::CA_BUNDLE.into()));
        }
    }
    env
}
