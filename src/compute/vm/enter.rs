//! `agentenv --backend vm PATH [-- CMD]`: a project's dev shell in a VM of its own that lives
//! as long as the command. The VM boots, the guest evaluates the dev shell (or finds it in its
//! cache), the command runs through the guest agent, and the VM with every helper ends.

use std::io::IsTerminal;

use anyhow::Result;

use super::env::{VmEnv, VmEnvPlan};
use super::spec::Arch;
use crate::cli::{current_dir, EnterArgs};
use crate::envs::EnvDirs;
use crate::guest::launch::LaunchMode;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::proto::client;
use crate::workspace::{current_user, project_dir, Workspace};

/// The backend whose environments this flow runs: QEMU's on Linux, Virtualization.framework's
/// on macOS (the same VM, guest and flow; `vz` is only the machine under it).
pub const BACKEND: &str = if cfg!(target_os = "macos") {
    "vz"
} else {
    "vm"
};

/// Whether `--backend` (else config.toml, else the default) names this backend.
pub fn wanted(arg: Option<&str>) -> Result<bool> {
    if let Some(a) = arg {
        return Ok(a == BACKEND);
    }
    let config = StateDirs::from_env()?.config.join("config.toml");
    Ok(crate::compute::choice::named_backend(None, &config)?.name() == BACKEND)
}

pub fn run(args: &EnterArgs) -> Result<i32> {
    let cwd = current_dir()?;
    let target = FlakeTarget::resolve(&args.path, &cwd)?;
    let state = StateDirs::from_env()?;
    let env_dirs = EnvDirs::for_target(&state, &target);
    let project = project_dir(&target.root);
    let user = current_user(&project);
    let arch = args.opts.arch.unwrap_or_else(Arch::host);
    let profile = if args.opts.no_profile {
        None
    } else {
        args.opts.profile.clone()
    };
    let home_source = env_dirs.home();
    let t0 = std::time::Instant::now();
    let env = VmEnv::boot(&VmEnvPlan {
        state: &state,
        env_dirs: &env_dirs,
        arch,
        project: &project,
        home: (&home_source, &user.home),
        profile: profile.as_deref(),
        run_dir: None,
    })?;
    super::boot::phase("agent ready", t0);
    let devenv = env.devenv(&target, args.opts.refresh)?;
    super::boot::phase("dev env ready", t0);
    let ws = Workspace::with_devenv(target, state, devenv);
    let cwd_inside = ws.cwd_inside(&cwd);
    let mode = LaunchMode::for_command(&args.command);
    let all_tty = std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    let tty = all_tty.then(client::local_winsize).flatten();
    let spec = ws.exec_spec(&cwd_inside, &mode, tty, &[]);
    let code = client::exec(&env.vm.agent(), spec, true)?;
    drop(env);
    Ok(code)
}
