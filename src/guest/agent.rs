//! The guest agent: PID 1 of a persistent environment (a namespace sandbox, a VM), or a process
//! started on a remote host. It serves exec, ps and shutdown requests on whatever transport it
//! is given (a unix socket only its owner may use, vsock, stdio), reaps every process, and
//! keeps running when clients leave. As PID 1, its exit ends every process inside.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::reaper::Reaper;
use super::session::{run_exec, run_to_end};
use crate::proto::frame::handshake_as_agent;
use crate::proto::message::{ExecSpec, ProcInfo, Request, Response};
use crate::proto::{read_frame, write_frame, Frame};
use crate::transport::{Accept, Transport};

/// How long processes get between SIGTERM and SIGKILL when the agent itself is terminated.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a client has to say hello, send its request and pass its descriptors: one that
/// sends nothing is dropped then, and holds nothing of the agent's after.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's runtime (one thread: PID 1 forks), or `None` after saying why there is none.
fn agent_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("agentenv agent: cannot start: {e}"))
        .ok()
}

/// Serves the connections `listen` makes (it runs inside the agent's runtime, so that it can
/// register sockets there) until a shutdown request, SIGTERM, or the end of its connections;
/// returns the exit code.
pub fn run_agent<A: Accept>(
    listen: impl FnOnce() -> std::io::Result<A>,
    ready: impl FnOnce(),
) -> i32 {
    let Some(rt) = agent_runtime() else {
        return 1;
    };
    let code = match rt.block_on(async move { serve(listen()?, ready).await }) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agentenv agent: {e:#}");
            1
        }
    };
    // A read of stdin (the stdio transport) may block for ever: do not wait for it.
    rt.shutdown_background();
    code
}

/// A unix listening socket made by the host side, served from inside the runtime.
pub fn unix_listener(
    listener: std::os::unix::net::UnixListener,
) -> std::io::Result<tokio::net::UnixListener> {
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

async fn serve(mut listener: impl Accept, ready: impl FnOnce()) -> Result<()> {
    let reaper = Reaper::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reaping = tokio::spawn(reaper.clone().run());
    // Handlers are installed: the signals blocked since before the fork may now arrive.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    let started = Instant::now();
    let owner = nix::unistd::getuid().as_raw();
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<Duration>(1);
    ready();

    let grace = loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok(None) => break DEFAULT_GRACE,
                Ok(Some(stream)) => {
                    let ctx = Ctx { reaper: reaper.clone(), started, owner, shutdown: shutdown_tx.clone() };
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, ctx).await {
                            tracing::debug!("connection: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: the error repeats at once, so wait a little
                    // rather than spin, and serve again when connections have closed.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(grace) = shutdown_rx.recv() => break grace,
            _ = term.recv() => break DEFAULT_GRACE,
            // Nobody's terminal: these only come from a sender who wants it gone.
            _ = int.recv() => break DEFAULT_GRACE,
            _ = hup.recv() => break DEFAULT_GRACE,
        }
    };
    drop(listener);
    stop_everything(&reaper, grace).await;
    reaping.abort();
    Ok(())
}

/// Runs one command to its end as the agent would, with no client: `stdio` are its stdin,
/// stdout and stderr, and its exit code is written to `status` when it ends (a detached
/// dispatch). Everything it left running is stopped then; SIGTERM stops it all sooner.
/// Returns the exit code.
pub fn run_detached(spec: ExecSpec, stdio: [OwnedFd; 3], mut status: std::fs::File) -> i32 {
    use std::io::Write;
    let Some(rt) = agent_runtime() else {
        return 1;
    };
    let code = rt.block_on(async move {
        let reaper = Reaper::default();
        let mut term = signal(SignalKind::terminate())?;
        let reaping = tokio::spawn(reaper.clone().run());
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        let code = tokio::select! {
            code = run_to_end(spec, stdio, reaper.clone()) => code?,
            _ = term.recv() => 128 + Signal::SIGTERM as i32,
        };
        // One write: a reader sees the whole line or nothing.
        status.write_all(format!("{code}\n").as_bytes())?;
        stop_everything(&reaper, DEFAULT_GRACE).await;
        reaping.abort();
        anyhow::Ok(code)
    });
    rt.shutdown_background();
    code.unwrap_or_else(|e| {
        eprintln!("agentenv agent: {e:#}");
        1
    })
}

#[derive(Clone)]
struct Ctx {
    reaper: Reaper,
    started: Instant,
    owner: u32,
    shutdown: mpsc::Sender<Duration>,
}

/// Serves one connection: requests one after another until the client closes it. Where the
/// transport names its peer, only the owner is served; where it cannot (vsock, stdio), the
/// transport's own access (a 0600 socket on the host, ssh) is what guards the agent.
async fn handle(mut stream: Box<dyn Transport>, ctx: Ctx) -> Result<()> {
    match stream.peer_uid() {
        None => {}
        Some(Ok(uid)) if uid == ctx.owner => {}
        Some(Ok(uid)) => {
            let message = format!("uid {uid} may not use this environment");
            write_frame(&mut stream, &Frame::Response(Response::Error { message })).await?;
            return Ok(());
        }
        Some(Err(e)) => return Err(anyhow::Error::from(e).context("cannot tell who connected")),
    }
    // A client that says nothing (no hello, no first request) is dropped in time.
    tokio::time::timeout(REQUEST_TIMEOUT, handshake_as_agent(&mut stream))
        .await
        .context("no hello in time")??;
    stream.prefer_bulk();
    let mut first = true;
    loop {
        let next = read_frame(&mut stream);
        let frame = match std::mem::replace(&mut first, false) {
            true => tokio::time::timeout(REQUEST_TIMEOUT, next)
                .await
                .context("no request in time")??,
            false => next.await?,
        };
        let request = match frame {
            Some(Frame::Request(r)) => r,
            Some(other) => anyhow::bail!("expected a request, got {other:?}"),
            None => return Ok(()),
        };
        match request {
            Request::Exec(spec) => {
                let passed = match (spec.passed_stdio, stream.fd_passing()) {
                    (false, _) => None,
                    (true, Some(fds)) => Some(
                        tokio::time::timeout(REQUEST_TIMEOUT, fds.recv_stdio())
                            .await
                            .context("no descriptors in time")??,
                    ),
                    (true, None) => {
                        let message = "this transport cannot pass descriptors".to_string();
                        let error = Frame::Response(Response::Error { message });
                        write_frame(&mut stream, &error).await?;
                        return Ok(());
                    }
                };
                match run_exec(spec, stream, passed, ctx.reaper.clone()).await? {
                    Some(back) => stream = back,
                    None => return Ok(()),
                }
            }
            Request::Ps => {
                let response = Response::Processes {
                    uptime_secs: ctx.started.elapsed().as_secs(),
                    processes: processes(&ctx.reaper),
                };
                write_frame(&mut stream, &Frame::Response(response)).await?;
            }
            Request::Shutdown { grace_ms } => {
                write_frame(&mut stream, &Frame::Response(Response::ShuttingDown)).await?;
                let _ = ctx.shutdown.send(Duration::from_millis(grace_ms)).await;
                // Hold the connection until the agent exits: the client sees it close then.
                let _ = read_frame(&mut stream).await;
                return Ok(());
            }
        }
    }
}

/// Whether the agent is its environment's PID 1: then every process it sees is the
/// environment's. Otherwise (a process on a remote host, a test) only what it started is.
fn is_init() -> bool {
    std::process::id() == 1
}

/// Every process of the environment but the agent.
fn processes(reaper: &Reaper) -> Vec<ProcInfo> {
    let groups = if is_init() {
        Vec::new()
    } else {
        reaper.live_groups()
    };
    let ours = |pid: i32| {
        is_init()
            || nix::unistd::getpgid(Some(Pid::from_raw(pid)))
                .is_ok_and(|g| groups.contains(&g.as_raw()))
    };
    let mut out: Vec<ProcInfo> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != 1 && ours(pid))
                .filter_map(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                    let command = cmdline
                        .split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ");
                    Some(ProcInfo { pid, command })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|p| p.pid);
    out
}

/// SIGTERM to every process, SIGKILL to what is left after `grace`, then reap. Outside PID 1,
/// "every process" is the process groups of the agent's execs.
async fn stop_everything(reaper: &Reaper, grace: Duration) {
    let signal_all = |sig: Signal| -> bool {
        if is_init() {
            return kill(Pid::from_raw(-1), sig).is_ok();
        }
        let groups = reaper.live_groups();
        for &g in &groups {
            let _ = kill(Pid::from_raw(-g), sig);
        }
        !groups.is_empty()
    };
    if signal_all(Signal::SIGTERM) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !processes(reaper).is_empty() {
            reaper.reap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal_all(Signal::SIGKILL);
    }
    reaper.reap();
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
