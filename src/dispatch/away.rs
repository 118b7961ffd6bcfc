//! On the host: sessions that outlive their connection (a link lost mid-run, a detached
//! command). `sessions` tells which sessions are in agentenv's directory and whether they
//! still run, `stop` ends one.
//! A session's directory holds `pid`: the process that holds its namespaces, whose end ends
//! everything the session runs.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub const PID_FILE: &str = "pid";

/// How long `stop` waits for a session to end after SIGTERM (the agent gives its processes 5 s)
/// before it kills what is left.
const STOP_GRACE: Duration = Duration::from_secs(8);

/// The process holding `session`'s namespaces, if it still runs: the pid in its `pid` file,
/// checked against the process's command line (a pid may have been reused since).
pub fn session_process(session: &Path) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(session.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = session.as_os_str().as_encoded_bytes();
    cmdline
        .windows(needle.len())
        .any(|w| w == needle)
        .then(|| Pid::from_raw(pid))
}

/// Writes this process's pid as the session's.
pub fn write_pid(session: &Path) -> Result<()> {
    crate::util::write_atomic(
        &session.join(PID_FILE),
        std::process::id().to_string().as_bytes(),
    )
}

/// A session on the host, for the dispatching side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteSession {
    pub id: String,
    /// Its processes still run.
    pub running: bool,
    /// A detached command's exit code, once it has ended.
    pub exit: Option<i32>,
}

/// `__remote sessions DIR`: the sessions in agentenv's directory, as JSON.
pub fn sessions(dir: &Path) -> Result<i32> {
    let root = dir.join(super::layout::SESSIONS);
    let mut list: Vec<RemoteSession> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| {
                    let path = e.path();
                    RemoteSession {
                        id: e.file_name().to_string_lossy().into_owned(),
                        running: session_process(&path).is_some(),
                        exit: super::detached::read_status(&path),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &list)?;
    out.write_all(b"\n")?;
    Ok(0)
}

/// Ends the session's processes: SIGTERM to the one holding its namespaces (it passes it to
/// the agent, which stops everything), SIGKILL if that has not ended within `STOP_GRACE`.
pub fn stop(session: &Path) {
    let Some(pid) = session_process(session) else {
        return;
    };
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while session_process(session).is_some() {
        if start.elapsed() > STOP_GRACE {
            let _ = kill(pid, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
