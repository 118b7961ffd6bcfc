//! A session's round trip to the host: the session's setup, its agent served over ssh stdio
//! and the command run through it, then (when nothing is to come back first) the cleanup in
//! the same trip, whose report is read from what the host said on stderr.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use super::remote::CleanReport;
use super::session::Host;
use super::ssh::{collect_stderr, exits_within, host_said, quote as q};
use crate::diag::Diagnostic;
use crate::proto::message::ExecSpec;

/// How the host is cleaned after a session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cleanup {
    /// By the session's own round trip (there is no memory to bring back first).
    pub in_session: bool,
    /// The content caches too (`--clean`).
    pub caches: bool,
}

/// The arguments of `__remote clean` for session `id`.
pub(super) fn clean_args(host: &Host, id: &str, caches: bool) -> Result<String> {
    let all = if caches { " --all" } else { "" };
    Ok(format!("clean {} {id}{all}", q(&host.dir)?))
}

/// How a session's round trip ended.
pub(super) struct SessionRun {
    pub code: i32,
    /// What the host reported after cleaning up after the session, when asked to.
    pub cleaned: Option<CleanReport>,
}

/// What the session's round trip prints on stderr before the cleanup's report.
const CLEAN_MARK: &str = "agentenv-clean-report=";

/// How long the host may take to clean up once the command has ended (it may end the
/// session's processes first).
const CLEAN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs the session's agent over ssh stdio and the command through it, after `setup`; when
/// the cleanup is the session's, the same round trip then removes the session's directory
/// and reports.
pub(super) fn run_session(
    host: &Host,
    id: &str,
    setup: &str,
    exec: ExecSpec,
    cleanup: Cleanup,
) -> Result<SessionRun> {
    let clean_after = cleanup.in_session;
    let dq = q(&host.session_dir(id))?;
    let bin = q(&host.bin)?;
    let forward_stdin = exec.tty.is_some() || !std::io::stdin().is_terminal();
    let clean = match clean_after {
        true => format!(
            "printf '{CLEAN_MARK}' >&2\nexec {bin} __remote {} >&2\n",
            clean_args(host, id, cleanup.caches)?
        ),
        false => String::new(),
    };
    let mut child = host.ssh.spawn_script(&format!(
        "{setup}{bin} __remote session {dq}/{}\n{clean}",
        super::layout::SPEC
    ))?;
    let stdin = child.stdin.take().context("ssh has no stdin")?;
    let stdout = child.stdout.take().context("ssh has no stdout")?;
    // What agentenv on the host says about itself (not the command's stderr: that comes in
    // frames) is kept for the error, if there is one.
    let said = collect_stderr(&mut child)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let stdin = tokio::process::ChildStdin::from_std(stdin)?;
        let stdout = tokio::process::ChildStdout::from_std(stdout)?;
        let stream: Box<dyn crate::transport::Transport> = Box::new(tokio::io::join(stdout, stdin));
        let mut client = crate::proto::client::AgentClient::over(stream).await?;
        client.exec(exec, forward_stdin).await
    });
    rt.shutdown_background();
    if result.is_err() || !clean_after || !exits_within(&mut child, CLEAN_WAIT) {
        let _ = child.kill();
    }
    let _ = child.wait();
    let said = said.join().unwrap_or_default();
    let (said, cleaned) = match said.split_once(CLEAN_MARK) {
        Some((before, report)) => (before.to_string(), serde_json::from_str(report.trim()).ok()),
        None => (said, None),
    };
    match result {
        Ok(code) => {
            if !said.trim().is_empty() {
                eprint!("{said}");
            }
            Ok(SessionRun { code, cleaned })
        }
        Err(e) => {
            let d = Diagnostic::new(format!(
                "the session on {} ended without an exit status",
                host.ssh.target()
            ));
            Err(anyhow::Error::new(
                host_said(d, &said).detail(format!("{e:#}")),
            ))
        }
    }
}
