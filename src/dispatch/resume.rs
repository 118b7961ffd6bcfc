//! Sessions that outlived their connection, from the dispatching side: `--collect TARGET`
//! brings back what sessions whose link was lost left on a host, the memory landed before the
//! host is cleaned, so that nothing is ever half-merged here.

use anyhow::Result;

use super::away::RemoteSession;
use super::memory_trip::MemoryTrip;
use super::record::{on_target, DispatchRecord};
use super::session::{finish, Host};
use super::ssh::quote as q;
use super::target::Target;
use crate::diag::Diagnostic;
use crate::paths::StateDirs;

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
/// to, brings back what it learned and cleans it from the host. Returns 0, or 1 if one could
/// not be collected.
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
    if remote.running {
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
    let what = if learned {
        "its learnings are back"
    } else {
        "nothing to bring back"
    };
    Ok(format!("{what}, and {} is clean of it", record.target))
}
