//! `agentenv [PATH[#NAME]] [-- COMMAND...]`: the project's dev shell, or one command in it.
//! A running environment of the same project (see `up`) is used when there is one; otherwise
//! a fresh sandbox lives as long as the command.

use std::io::IsTerminal;

use anyhow::Result;

use crate::cli::{current_dir, EnterArgs};
use crate::compute::choice::choose_configured_backend;
use crate::diag::Diagnostic;
use crate::guest::launch::LaunchMode;
use crate::memory::run as memory;
use crate::proto::client;
use crate::workspace::Workspace;

pub fn run(args: &EnterArgs) -> Result<i32> {
    #[cfg(target_os = "linux")]
    if crate::compute::vm::enter::wanted(args.opts.backend.as_deref())? {
        return crate::compute::vm::enter::run(args);
    }
    let cwd = current_dir()?;
    let (path, _) = args.path.split_once('#').unwrap_or((&args.path, ""));
    // The stat first: building the verb list is not for the warm path.
    let missing = !cwd.join(path).exists();
    if missing && !crate::cli::is_verb(path) && !path.contains('/') {
        if let Some(verb) = crate::typo::closest_verb(path) {
            let rest: Vec<std::ffi::OsString> = if args.command.is_empty() {
                Vec::new()
            } else {
                std::iter::once("--".into())
                    .chain(args.command.clone())
                    .collect()
            };
            let err = crate::typo::did_you_mean(path, &verb, &rest).into();
            eprint!("{}", crate::diag::render(&err));
            return Ok(2);
        }
    }
    if missing && crate::cli::is_verb(path) {
        // `agentenv --no-profile ps`: an option before the verb made it a path (exit 2, as
        // for any bad usage).
        let err = anyhow::Error::from(
            Diagnostic::new(format!(
                "'{path}' was read as a path: an option came before it"
            ))
            .hint(format!(
                "put options after the verb: `agentenv {path} [OPTIONS]`"
            ))
            .hint(format!("a directory named {path} is written `./{path}`")),
        );
        eprint!("{}", crate::diag::render(&err));
        return Ok(2);
    }
    let backend = choose_configured_backend(args.opts.backend.as_deref())?;
    let mut ws = Workspace::open_with(backend, &args.path, &cwd, args.opts.refresh)?;
    let (agent, profile) = memory::agent_and_profile(&mut ws, &args.opts)?;
    let cwd_inside = ws.cwd_inside(&cwd);
    let mode = LaunchMode::for_command(&args.command);

    let running = ws
        .runtime()
        .get(&ws.env_dirs.id)
        .filter(|r| r.state.network == args.opts.network && r.state.backend == backend.name());
    if let Some(r) = &running {
        if r.state.agent != args.opts.agent {
            return Err(memory::running_as_other(
                &r.state,
                args.opts.agent.as_deref(),
            ));
        }
        if r.state.profile != profile {
            // Its home is shared: another profile cannot be activated under it.
            let shown = |p: &Option<std::path::PathBuf>| {
                p.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no profile".into())
            };
            return Err(Diagnostic::new(format!(
                "{} is running with {}, not {}",
                r.state.id,
                shown(&r.state.profile),
                shown(&profile)
            ))
            .hint(format!(
                "stop it first (`agentenv down {}`), or use the same profile",
                r.state.id
            ))
            .into());
        }
    }
    ws.use_profile(profile)?;
    let agent_addr = running.as_ref().map(|r| r.agent().clone());
    ws.run_profile_hook(backend, args.opts.network, agent_addr.as_ref())?;
    if let Some(running) = running {
        tracing::debug!(id = %running.state.id, "using the running environment");
        // A terminal inside only when the command would have had one here: all three stdio
        // streams on a terminal (a pty merges stdout and stderr).
        let all_tty = std::io::stdin().is_terminal()
            && std::io::stdout().is_terminal()
            && std::io::stderr().is_terminal();
        let tty = all_tty.then(client::local_winsize).flatten();
        let spec = ws.exec_spec(&cwd_inside, &mode, tty, &[]);
        let started = crate::memory::provenance::now();
        let code = client::exec(running.agent(), spec, true)?;
        if let Some(name) = &args.opts.agent {
            memory::land_exec(name, &running.state.id, &args.command, started);
        }
        return Ok(code);
    }

    let lander = match &agent {
        Some(a) => {
            let session = memory::begin_in_workspace(&mut ws, a, &args.command, None)?;
            Some(memory::Lander::spawn(a.clone(), session)?)
        }
        None => None,
    };
    let launch = ws.launch(&cwd_inside, &mode);
    let layer = ws.claim_layer()?;
    if layer.is_scratch() {
        eprintln!(
            "warning: another run of {} owns its /nix layer: what this run writes to /nix is dropped when it ends (to keep such writes, use `agentenv up` and `agentenv exec`)",
            ws.env_dirs.id
        );
    }
    let code = backend.run(&ws.sandbox_spec(args.opts.network, &layer), &launch);
    drop(layer);
    if let Some(lander) = lander {
        lander.finish()?;
    }
    let code = code?;
    ws.env_dirs.record(&ws.target)?;
    Ok(code)
}
