//! `agentenv up --backend vm`: the environment's VM in the background. A supervisor process
//! (`agentenv vm supervise`, in a session of its own) boots the VM, has the guest evaluate the
//! dev shell, reports it, and then lives as long as the VM: QEMU and the helpers are tied to
//! it (a `kill -9` of the supervisor takes them along), and when the guest powers off
//! (`agentenv down`) it removes what the VM left. The registry records the supervisor and the
//! agent's vsock address, so `exec`, `ps` and `down` work as for any backend.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::env::{VmEnv, VmEnvPlan};
use super::spec::Arch;
use crate::cli::{current_dir, UpArgs};
use crate::compute::{Instance, Network};
use crate::diag::Diagnostic;
use crate::envs::EnvDirs;
use crate::nix::devenv::DevEnv;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::runtime::{RunState, Runtime};
use crate::workspace::{current_user, project_dir};

/// What the supervisor is asked to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuperviseArgs {
    /// The flake's root and dev shell (`FlakeTarget`'s fields).
    pub root: PathBuf,
    pub attr: Option<String>,
    pub arch: Arch,
    pub profile: Option<PathBuf>,
    pub refresh: bool,
    pub run_dir: PathBuf,
}

/// The supervisor's one line to `up`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Report {
    Ready {
        devenv: DevEnv,
        agent: crate::transport::AgentAddress,
    },
    Failed {
        message: String,
    },
}

pub fn run(args: &UpArgs) -> Result<i32> {
    let cwd = current_dir()?;
    let target = FlakeTarget::resolve(&args.path, &cwd)?;
    let state = StateDirs::from_env()?;
    let env_dirs = EnvDirs::for_target(&state, &target);
    let runtime = Runtime::new(state.runtime.clone());
    let id = env_dirs.id.clone();
    let profile = if args.opts.no_profile {
        None
    } else {
        args.opts.profile.clone()
    };
    let _lock = runtime.lock_for_start(&id)?;
    if let Some(running) = runtime.get(&id) {
        if running.state.backend != super::enter::BACKEND || running.state.profile != profile {
            return Err(Diagnostic::new(format!(
                "{id} is running already, with --backend {}",
                running.state.backend
            ))
            .hint(format!(
                "stop it first (`agentenv down {id}`), or use it as it is"
            ))
            .into());
        }
        println!("{id}");
        return Ok(0);
    }
    let dir = runtime.env_dir(&id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let plan = SuperviseArgs {
        root: target.root.clone(),
        attr: target.attr.clone(),
        arch: args.opts.arch.unwrap_or_else(Arch::host),
        profile: profile.clone(),
        refresh: args.opts.refresh,
        run_dir: dir.join("vm"),
    };
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find agentenv's own program")?;
    let mut child = Command::new(exe)
        .args(["vm", "supervise"])
        .arg(serde_json::to_string(&plan)?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start the VM's supervisor")?;
    let pid = child.id() as i32;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line).ok();
    }
    let report: Report = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Diagnostic::new(format!("the VM of {id} did not start"))
                .detail(super::boot::tail(&log_path, 15))
                .into());
        }
    };
    let (devenv, agent) = match report {
        Report::Ready { devenv, agent } => (devenv, agent),
        Report::Failed { message } => {
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            anyhow::bail!("{message}");
        }
    };
    runtime.record(&RunState {
        id: id.clone(),
        name: args.name.clone(),
        project: target.root.clone(),
        shell: target.shell_name().to_string(),
        profile,
        // The VM has no network device.
        network: Network::None,
        backend: super::enter::BACKEND.into(),
        instance: Instance::of_process(pid, agent),
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        devenv: Some(devenv),
        agent: None,
    })?;
    env_dirs.record(&target)?;
    println!("{id}");
    Ok(0)
}

/// The supervisor: boots, reports on stdout, then waits for the VM to end.
pub fn supervise(plan_json: &str) -> Result<i32> {
    let plan: SuperviseArgs = serde_json::from_str(plan_json).context("malformed VM plan")?;
    let target = FlakeTarget {
        root: plan.root.clone(),
        attr: plan.attr.clone(),
    };
    // Its own session: the terminal's signals (Ctrl-C in the shell that ran `up`) are not
    // for it.
    let _ = nix::unistd::setsid();
    let report = |r: &Report| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        let _ = out.flush();
    };
    let started = (|| -> Result<(VmEnv, DevEnv)> {
        let state = StateDirs::from_env()?;
        let env_dirs = EnvDirs::for_target(&state, &target);
        let project = project_dir(&target.root);
        let user = current_user(&project);
        let home = env_dirs.home();
        let env = VmEnv::boot(&VmEnvPlan {
            state: &state,
            env_dirs: &env_dirs,
            arch: plan.arch,
            project: &project,
            home: (&home, &user.home),
            profile: plan.profile.as_deref(),
            run_dir: Some(plan.run_dir.clone()),
        })?;
        let devenv = env.devenv(&target, plan.refresh)?;
        Ok((env, devenv))
    })();
    let mut env = match started {
        Ok((env, devenv)) => {
            report(&Report::Ready {
                devenv,
                agent: env.vm.agent(),
            });
            env
        }
        Err(e) => {
            report(&Report::Failed {
                message: crate::diag::render(&e),
            });
            return Ok(1);
        }
    };
    // Nobody reads stdout any more.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto stdout, which this process owns.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    }
    while !env.vm.wait_exit(Duration::from_secs(3600)) {}
    Ok(0)
}
