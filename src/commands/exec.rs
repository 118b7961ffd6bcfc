//! `agentenv exec ENV [-i] [-t] [--cwd DIR] [--env K=V] -- CMD...`: runs a command in a
//! running environment and exits with its code.

use std::ffi::OsString;
use std::io::IsTerminal;

use anyhow::Result;

use crate::cli::{current_dir, ExecArgs};
use crate::diag::Diagnostic;
use crate::guest::launch::LaunchMode;
use crate::proto::client;
use crate::workspace::{find_running, Workspace};

pub fn run(args: &ExecArgs) -> Result<i32> {
    let cwd = current_dir()?;
    let running = find_running(&args.env, &cwd)?;
    let mut ws = Workspace::of_running(&running)?;
    ws.use_profile(running.state.profile.clone())?;
    let backend = crate::compute::backend_named(&running.state.backend)?;
    ws.run_profile_hook(backend, running.state.network, Some(running.agent()))?;
    let dir = match &args.cwd {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => ws.cwd_inside(&cwd).join(d),
        None => ws.cwd_inside(&cwd),
    };
    let tty = (args.tty || std::io::stdin().is_terminal()).then(|| {
        client::local_winsize().unwrap_or(crate::proto::message::WinSize { rows: 24, cols: 80 })
    });
    let mode = if args.command.is_empty() {
        if tty.is_some() {
            LaunchMode::Interactive
        } else {
            LaunchMode::Stdin
        }
    } else {
        LaunchMode::Command(args.command.clone())
    };
    let extra = parse_env(&args.env_vars)?;
    let spec = ws.exec_spec(&dir, &mode, tty, &extra);
    // A terminal session is interactive by nature; otherwise stdin is passed only with -i.
    let forward_stdin = args.interactive || tty.is_some();
    client::exec(running.agent(), spec, forward_stdin)
}

fn parse_env(vars: &[String]) -> Result<Vec<(OsString, OsString)>> {
    vars.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
            _ => Err(Diagnostic::new(format!("--env takes KEY=VALUE, not '{kv}'")).into()),
        })
        .collect()
}
