//! The guest agent: PID 1 of a persistent environment. It owns the namespaces, serves exec,
//! ps and shutdown requests on a socket only its owner may use, reaps every process, and keeps
//! running when clients leave. When it exits, the kernel ends every process inside.

use std::os::unix::net::UnixListener as StdListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::reaper::Reaper;
use super::session::run_exec;
use crate::proto::fdpass::recv_stdio;
use crate::proto::frame::handshake;
use crate::proto::message::{ProcInfo, Request, Response};
use crate::proto::{read_frame, write_frame, Frame};

/// How long processes get between SIGTERM and SIGKILL when the agent itself is terminated.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Serves `listener` until a shutdown request or SIGTERM; returns the exit code.
pub fn run_agent(listener: StdListener, ready: impl FnOnce()) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentenv agent: cannot start: {e}");
            return 1;
        }
    };
    match rt.block_on(serve(listener, ready)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agentenv agent: {e:#}");
            1
        }
    }
}

async fn serve(listener: StdListener, ready: impl FnOnce()) -> Result<()> {
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener).context("cannot serve the agent socket")?;
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
                Ok((stream, _)) => {
                    let ctx = Ctx { reaper: reaper.clone(), started, owner, shutdown: shutdown_tx.clone() };
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, ctx).await {
                            tracing::debug!("connection: {e:#}");
                        }
                    });
                }
                Err(e) => tracing::warn!("accept: {e}"),
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

#[derive(Clone)]
struct Ctx {
    reaper: Reaper,
    started: Instant,
    owner: u32,
    shutdown: mpsc::Sender<Duration>,
}

async fn handle(mut stream: UnixStream, ctx: Ctx) -> Result<()> {
    let peer = stream.peer_cred()?;
    if peer.uid() != ctx.owner {
        let message = format!("uid {} may not use this environment", peer.uid());
        write_frame(&mut stream, &Frame::Response(Response::Error { message })).await?;
        return Ok(());
    }
    handshake(&mut stream).await?;
    // Large output moves in large chunks: let more of it be in flight to the client.
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &(4 << 20));
    let request = match read_frame(&mut stream).await? {
        Some(Frame::Request(r)) => r,
        Some(other) => anyhow::bail!("expected a request, got {other:?}"),
        None => return Ok(()),
    };
    match request {
        Request::Exec(spec) => {
            let passed = if spec.passed_stdio {
                Some(recv_stdio(&stream).await?)
            } else {
                None
            };
            run_exec(spec, stream, passed, ctx.reaper).await
        }
        Request::Ps => {
            let response = Response::Processes {
                uptime_secs: ctx.started.elapsed().as_secs(),
                processes: processes(),
            };
            write_frame(&mut stream, &Frame::Response(response)).await?;
            Ok(())
        }
        Request::Shutdown { grace_ms } => {
            write_frame(&mut stream, &Frame::Response(Response::ShuttingDown)).await?;
            let _ = ctx.shutdown.send(Duration::from_millis(grace_ms)).await;
            // Hold the connection until the agent exits: the client sees it close then.
            let _ = read_frame(&mut stream).await;
            Ok(())
        }
    }
}

/// Every process of the environment but the agent.
pub(crate) fn processes() -> Vec<ProcInfo> {
    let mut out: Vec<ProcInfo> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != 1)
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

/// SIGTERM to every process, SIGKILL to what is left after `grace`, then reap.
pub(crate) async fn stop_everything(reaper: &Reaper, grace: Duration) {
    let all = Pid::from_raw(-1);
    if kill(all, Signal::SIGTERM).is_ok() {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !processes().is_empty() {
            reaper.reap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = kill(all, Signal::SIGKILL);
    }
    reaper.reap();
}
