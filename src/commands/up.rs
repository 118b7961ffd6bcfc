//! `agentenv up [PATH] [--name NAME]`: starts the project's environment in the background,
//! its guest agent serving execs, and prints its id as the last line of stdout. Starting one
//! that runs already just prints its id.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::cli::{current_dir, UpArgs};
use crate::compute::choice::choose_configured_backend;
use crate::compute::AgentSetup;
use crate::diag::Diagnostic;
use crate::memory::run as memory;
use crate::runtime::RunState;
use crate::workspace::Workspace;

pub fn run(args: &UpArgs) -> Result<i32> {
    #[cfg(target_os = "linux")]
    if crate::compute::vm::enter::wanted(args.opts.backend.as_deref())? {
        return crate::compute::vm::up::run(args);
    }
    let cwd = current_dir()?;
    let backend = choose_configured_backend(args.opts.backend.as_deref())?;
    let mut ws = Workspace::open_with(backend, &args.path, &cwd, args.opts.refresh)?;
    let (agent, profile) = memory::agent_and_profile(&mut ws, &args.opts)?;
    let runtime = ws.runtime();
    let id = ws.env_dirs.id.clone();
    if let Some(name) = &args.name {
        // Names and ids are looked up through the same ENV argument: neither may shadow the
        // other.
        if let Some(other) = runtime.list().into_iter().find(|e| {
            e.state.id != id
                && (e.state.name.as_deref() == Some(name) || e.state.id.starts_with(name.as_str()))
        }) {
            let what = match other.state.name.as_deref() == Some(name) {
                true => "taken by",
                false => "a prefix of the id of",
            };
            return Err(Diagnostic::new(format!(
                "the name '{name}' is {what} the running environment {}",
                other.state.id
            ))
            .hint("pick another --name, or stop that one with `agentenv down`")
            .into());
        }
        if id.starts_with(name.as_str()) && name != &id {
            return Err(Diagnostic::new(format!(
                "the name '{name}' is a prefix of this environment's id {id}"
            ))
            .hint("pick a name that does not look like an id")
            .into());
        }
    }
    let _lock = runtime.lock_for_start(&id)?;
    if let Some(running) = runtime.get(&id) {
        // Already up: the same again prints its id; anything else would be silently ignored.
        let differs = if running.state.agent != args.opts.agent {
            return Err(memory::running_as_other(
                &running.state,
                args.opts.agent.as_deref(),
            ));
        } else if running.state.profile != profile {
            Some("another profile".to_string())
        } else if running.state.network != args.opts.network {
            Some(format!("--network {}", running.state.network))
        } else if running.state.backend != backend.name() {
            Some(format!("--backend {}", running.state.backend))
        } else {
            match (&args.name, &running.state.name) {
                (Some(new), Some(old)) if new != old => Some(format!("the name '{old}'")),
                (Some(_), None) => Some("no name".to_string()),
                _ => None,
            }
        };
        if let Some(what) = differs {
            return Err(
                Diagnostic::new(format!("{id} is running already, with {what}"))
                    .hint(format!(
                        "stop it first (`agentenv down {id}`), or use it as it is"
                    ))
                    .into(),
            );
        }
        println!("{}", running.state.id);
        return Ok(0);
    }
    ws.use_profile(profile.clone())?;
    // Before the environment starts, so that nothing else writes its /nix layer meanwhile.
    ws.run_profile_hook(backend, args.opts.network, None)?;
    // The environment is one session of the agent: landed after each exec, and when it stops.
    let session = match &agent {
        Some(a) => Some(memory::begin_in_workspace(&mut ws, a, &[], Some(&id))?),
        None => None,
    };
    let log_path = runtime.env_dir(&id).join("agent.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let layer = ws.claim_layer()?;
    if layer.is_scratch() {
        tracing::warn!("another sandbox of {id} holds its /nix layer: until `agentenv down {id}`, this environment writes to /nix in a scratch layer, dropped when it stops");
    }
    let spec = ws.sandbox_spec(args.opts.network, &layer);
    let setup = AgentSetup {
        dir: runtime.env_dir(&id),
        log,
    };
    let instance = match backend.start(&spec, setup) {
        Ok(instance) => instance,
        Err(e) => {
            let _ = std::fs::remove_dir_all(runtime.env_dir(&id));
            return Err(e);
        }
    };
    // The environment's PID 1 inherited the claim's lock (and the session's) and keeps it
    // while it runs.
    layer.hand_over();
    drop(session);
    runtime.record(&RunState {
        id: id.clone(),
        name: args.name.clone(),
        project: ws.target.root.clone(),
        shell: ws.target.shell_name().to_string(),
        profile,
        network: args.opts.network,
        backend: backend.name().to_string(),
        instance,
        started_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        agent: args.opts.agent.clone(),
        devenv: Some(ws.devenv.clone()),
    })?;
    ws.env_dirs.record(&ws.target)?;
    println!("{id}");
    Ok(0)
}
