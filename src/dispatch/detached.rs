//! On the host: a detached session (`dispatch --detach`). `serve` starts it in the background,
//! out of the ssh session's reach, and runs the command of the session's `exec.json` to its
//! end with no connection: its stdout and stderr go to the session's `output`, its exit code
//! to `status`. `follow` shows that output as it grows until the command has ended.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::away::session_process;
use super::remote::read_spec;
use crate::diag::Diagnostic;
use crate::proto::message::ExecSpec;

/// The files of a detached session, in its directory.
pub const EXEC: &str = "exec.json";
pub const OUTPUT: &str = "output";
pub const STATUS: &str = "status";
/// What the session's own processes say (its stdout and stderr).
const LOG: &str = "agent.log";

/// `__remote serve SPEC`: starts the session in the background and returns once its command
/// runs (or says why it could not start).
pub fn serve(spec_path: &Path) -> Result<i32> {
    use nix::unistd::{fork, ForkResult};
    let (spec, session) = read_spec(spec_path)?;
    let exec_path = session.join(EXEC);
    let exec: ExecSpec = serde_json::from_slice(
        &std::fs::read(&exec_path)
            .with_context(|| format!("cannot read {}", exec_path.display()))?,
    )
    .with_context(|| format!("{} is not a command", exec_path.display()))?;
    let (ready_r, ready_w) = crate::util::cloexec_pipe()?;
    // SAFETY: `__remote serve` runs no other thread, so the child may run ordinary code.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Parent { .. } => {
            drop(ready_w);
            let mut said = String::new();
            std::fs::File::from(ready_r)
                .read_to_string(&mut said)
                .context("cannot hear from the session")?;
            match said.as_str() {
                "ready" => Ok(0),
                "" => Err(Diagnostic::new("the session ended before its command started").into()),
                _ => Err(Diagnostic::new(said).into()),
            }
        }
        ForkResult::Child => {
            drop(ready_r);
            let code = match in_background(&spec, &session, exec, ready_w) {
                Ok(code) => code,
                Err(e) => {
                    eprint!("{}", crate::diag::render(&e));
                    1
                }
            };
            // SAFETY: _exit leaves without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The background side of `serve`: a session of its own (no hangup from ssh reaches it),
/// stdio on `/dev/null` and `agent.log`, the output and status files opened while agentenv's
/// directory is in sight (the view may hide it), then the session entered and its PID 1 running
/// the command.
fn in_background(
    spec: &super::remote::SessionSpec,
    session: &Path,
    exec: ExecSpec,
    ready: OwnedFd,
) -> Result<i32> {
    use nix::unistd::{fork, ForkResult};
    let mut ready = std::fs::File::from(ready);
    let opened = (|| -> Result<_> {
        nix::unistd::setsid().context("cannot start a session")?;
        let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(session.join(LOG))
            .context("cannot open the session's log")?;
        nix::unistd::dup2_stdin(&null).context("cannot redirect stdin")?;
        nix::unistd::dup2_stdout(&log).context("cannot redirect stdout")?;
        nix::unistd::dup2_stderr(&log).context("cannot redirect stderr")?;
        let output = std::fs::File::options()
            .create(true)
            .append(true)
            .open(session.join(OUTPUT))
            .context("cannot create the output file")?;
        let status =
            std::fs::File::create(session.join(STATUS)).context("cannot create the status file")?;
        super::away::write_pid(session)?;
        super::remote::activate_profile(spec, session)?;
        super::remote::enter_session(spec)?;
        Ok((null, output, status))
    })();
    let (null, output, status) = match opened {
        Ok(files) => files,
        Err(e) => {
            let _ = write!(ready, "{}", crate::diag::render(&e).trim_end());
            return Err(e);
        }
    };
    let stdio = [
        OwnedFd::from(null),
        OwnedFd::from(output.try_clone()?),
        OwnedFd::from(output),
    ];
    // SAFETY: single-threaded here (no runtime has started yet), so the child may run
    // ordinary code.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(ready);
            let code = crate::guest::agent::run_detached(exec, stdio, status);
            // SAFETY: _exit leaves without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(stdio);
            drop(status);
            let _ = ready.write_all(b"ready");
            drop(ready);
            crate::process::supervise(child, crate::process::Reap::Child)
        }
    }
}

/// The exit code in a session's `status`, once the command has written it.
pub fn read_status(session: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(session.join(STATUS)).ok()?;
    text.strip_suffix('\n')?.trim().parse().ok()
}

/// `__remote follow SESSION`: copies the detached command's output to stdout as it grows,
/// until the command has ended; exits with its exit code.
pub fn follow(session: &Path) -> Result<i32> {
    let fd = nix::unistd::dup(std::io::stdout()).context("cannot use stdout")?;
    // Unbuffered: output goes out as it comes.
    let mut out = std::fs::File::from(fd);
    let mut file = std::fs::File::open(session.join(OUTPUT))
        .with_context(|| format!("{} is not a detached session", session.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // The status first: all output written before it is then in the file.
        let status = read_status(session);
        loop {
            let n = file.read(&mut buf).context("cannot read the output")?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .context("cannot write the output")?;
        }
        if let Some(code) = status {
            return Ok(code);
        }
        if session_process(session).is_none() {
            return Err(Diagnostic::new("the session ended before its command did")
                .detail(format!("its log: {}", session.join(LOG).display()))
                .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
