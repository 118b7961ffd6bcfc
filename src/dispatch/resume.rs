//! Sessions that outlive their connection, from the dispatching side: a `--detach`ed command
//! started and left, `--attach ID` following it to its end, `--collect TARGET` bringing back
//! what sessions left on a host (a lost link, a detached command that has ended); in each case
//! the memory lands before the host is cleaned, so that nothing is ever half-merged here.

use std::ffi::OsString;

use anyhow::{Context, Result};

use super::away::RemoteSession;
use super::memory_trip::MemoryTrip;
use super::record::{on_target, DispatchRecord};
use super::session::{finish, Host};
use super::ssh::{collect_stderr, host_said, quote as q};
use super::target::Target;
use crate::diag::Diagnostic;
use crate::paths::StateDirs;
use crate::proto::message::ExecSpec;

/// Refuses `--detach` without a command, before anything is sent.
pub(super) fn check_detachable(command: &[OsString]) -> Result<()> {
    if command.is_empty() {
        return Err(Diagnostic::new(
            "--detach needs a command: a shell would have nobody to talk to",
        )
        .hint("agentenv dispatch --detach HOST -- CMD [ARGS...]")
        .into());
    }
    Ok(())
}

/// Starts `exec` on the host in a detached session, after `setup` (the script that makes the
/// session's directory, planned by `session`); returns once it runs.
pub(super) fn start_detached(host: &Host, id: &str, setup: &str, exec: &ExecSpec) -> Result<()> {
    let mut exec = exec.clone();
    exec.tty = None;
    exec.stdin_script = false;
    exec.passed_stdio = false;
    let dir = q(&host.session_dir(id))?;
    host.ssh
        .run_script_with_input(
            &format!(
                "{setup}cat > {dir}/{} || exit\nexec {} __remote serve {dir}/{}\n",
                super::detached::EXEC,
                q(&host.bin)?,
                super::layout::SPEC
            ),
            &mut &serde_json::to_vec(&exec)?[..],
        )
        .map(|_| ())
}

fn load(state: &StateDirs, id: &str) -> Result<DispatchRecord> {
    DispatchRecord::load(state, id)?.ok_or_else(|| {
        Diagnostic::new(format!("no dispatched session {id}"))
            .hint("`agentenv ps` lists the dispatched sessions")
            .into()
    })
}

/// `dispatch --attach ID`: follows a detached command's output to its end, then brings back
/// what the session learned and cleans the host; returns the command's exit code. Leaving
/// early (Ctrl-C) leaves the command running, to attach to again.
pub fn attach(state: &StateDirs, id: &str) -> Result<i32> {
    let record = load(state, id)?;
    let Some(_held) = record.hold(state)? else {
        return Err(
            Diagnostic::new(format!("another agentenv is attached to {id}"))
                .hint("one at a time: leave that one, or wait for it")
                .into(),
        );
    };
    if !record.detached {
        return Err(Diagnostic::new(format!("{id} was not detached: it has no output to follow"))
            .hint(format!(
                "its connection was lost; `agentenv dispatch --collect {}` brings back what it left",
                record.target
            ))
            .into());
    }
    let host = Host::reconnect(&record)?;
    let code = follow(&host, &record)?;
    finish(&host, &record, trip_of(&record, state)?, state)?;
    Ok(code)
}

/// Shows the detached command's output as the host has it, until the command ends; returns
/// its exit code.
fn follow(host: &Host, record: &DispatchRecord) -> Result<i32> {
    let script = format!(
        "exec {} __remote follow {}\n",
        q(&host.bin)?,
        q(&host.session_dir(&record.id))?
    );
    let mut child = host.ssh.spawn_script(&script)?;
    drop(child.stdin.take());
    let said = collect_stderr(&mut child)?;
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::copy(&mut out, &mut std::io::stdout().lock());
    }
    let status = child.wait().context("cannot wait for ssh")?;
    let said = said.join().unwrap_or_default();
    if status.code() == Some(255) && !host.ssh.check() {
        return Err(Diagnostic::new(format!(
            "the connection to {} was lost; the command runs on",
            record.target
        ))
        .hint(format!("`agentenv dispatch --attach {}` again", record.id))
        .into());
    }
    if said.contains("error:") {
        let d = Diagnostic::new(format!("cannot follow {} on {}", record.id, record.target));
        return Err(host_said(d, &said).into());
    }
    status
        .code()
        .context("ssh was killed while following the command")
}

/// The memory session a record's agent has away on the host, taken up again here.
fn trip_of(record: &DispatchRecord, state: &StateDirs) -> Result<Option<MemoryTrip>> {
    let (Some(name), Some(id)) = (&record.agent, &record.memory_session) else {
        return Ok(None);
    };
    let agent = crate::memory::Agent::open(state, name)?;
    match crate::memory::session::Session::reopen(&agent, id)? {
        Some(session) => Ok(Some(MemoryTrip { agent, session })),
        None => Err(Diagnostic::new(format!(
            "the memory session {id} of {name} is not here, or another agentenv holds it"
        ))
        .into()),
    }
}

/// `dispatch --collect TARGET`: for each session on `target` that no agentenv is connected
/// to and that is not a detached command still running, brings back what it learned and
/// cleans it from the host. Returns 0, or 1 if one could not be collected.
pub fn collect(state: &StateDirs, target: &Target) -> Result<i32> {
    let records = on_target(state, &target.to_string());
    if records.is_empty() {
        eprintln!("agentenv: no session on {target} to collect");
        return Ok(0);
    }
    let host = Host::reconnect(&records[0])?;
    let mut failed = false;
    for record in records {
        let Some(_held) = record.hold(state)? else {
            eprintln!(
                "agentenv: {}: an agentenv is connected to it, left alone",
                record.id
            );
            continue;
        };
        match collect_one(&host, &record, state) {
            Ok(said) => eprintln!("agentenv: {}: {said}", record.id),
            Err(e) => {
                failed = true;
                eprint!("{}", crate::diag::render(&e));
            }
        }
    }
    Ok(i32::from(failed))
}

fn collect_one(host: &Host, record: &DispatchRecord, state: &StateDirs) -> Result<String> {
    let sessions: Vec<RemoteSession> = host.run_json(&format!("sessions {}", q(&record.dir)?))?;
    let Some(remote) = sessions.iter().find(|s| s.id == record.id) else {
        // Gone from the host (cleaned by hand, a reboot of a tmpfs): nothing to bring back.
        if let Some(trip) = trip_of(record, state)? {
            trip.session.end(&trip.agent)?;
        }
        record.remove(state)?;
        return Ok(format!(
            "its directory on {} is gone: nothing came back",
            record.target
        ));
    };
    if record.detached && remote.running && remote.exit.is_none() {
        return Ok(format!(
            "still running; `agentenv dispatch --attach {}` follows it",
            record.id
        ));
    }
    if remote.running && !record.detached {
        // Cut off from its connection, it may still be writing: it ends before its memory is
        // read.
        host.ssh.run_script(&format!(
            "exec {} __remote stop {}\n",
            q(&host.bin)?,
            q(&host.session_dir(&record.id))?
        ))?;
    }
    let learned = record.agent.is_some();
    finish(host, record, trip_of(record, state)?, state)?;
    let what = match (learned, remote.exit) {
        (true, Some(code)) => format!("ended with exit code {code}; its learnings are back"),
        (true, None) => "its learnings are back".to_string(),
        (false, Some(code)) => format!("ended with exit code {code}"),
        (false, None) => "nothing to bring back".to_string(),
    };
    Ok(format!("{what}, and {} is clean of it", record.target))
}
