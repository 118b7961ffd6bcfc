//! The host's end of the protocol, over any transport: connect to an environment's agent, ask
//! for an exec, a process list or a shutdown, and for an exec stream the local stdio both ways
//! (in raw mode on a terminal), passing on signals and window-size changes, until its exit
//! status comes. Where the transport passes descriptors, an exec without a terminal hands the
//! agent this process's own stdio instead; where the agent allows it, one connection carries
//! several requests one after another.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::frame::handshake;
use super::message::{ExecSpec, Request, Response};
use super::{read_frame, write_frame, Frame};
use crate::diag::Diagnostic;
pub use crate::terminal::local_winsize;
use crate::terminal::RawMode;
use crate::transport::{AgentAddress, Transport};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A connection to an agent, after the handshake.
pub struct AgentClient {
    stream: Option<Box<dyn Transport>>,
    /// The agent takes another request on this connection after an exec.
    reusable: bool,
}

impl AgentClient {
    /// Connects to the agent at `agent`.
    pub async fn connect(agent: &AgentAddress) -> Result<Self> {
        let stream = agent.connect().await.map_err(|e| {
            Diagnostic::new(format!(
                "cannot reach the environment's agent at {agent}: {e}"
            ))
            .hint("the environment may have stopped; `agentenv ps` lists the running ones")
        })?;
        Self::over(stream).await
    }

    /// Talks to an agent over `stream`, whatever its transport.
    pub async fn over(mut stream: Box<dyn Transport>) -> Result<Self> {
        let hello = handshake(&mut stream).await?;
        Ok(Self {
            stream: Some(stream),
            reusable: hello.reuse,
        })
    }

    fn stream(&mut self) -> Result<&mut Box<dyn Transport>> {
        self.stream
            .as_mut()
            .context("this connection to the agent cannot carry another request")
    }

    async fn request(&mut self, request: Request) -> Result<()> {
        write_frame(self.stream()?, &Frame::Request(request)).await?;
        Ok(())
    }

    async fn response(&mut self) -> Result<Response> {
        match read_frame(self.stream()?).await? {
            Some(Frame::Response(Response::Error { message })) => {
                Err(Diagnostic::new(format!("the environment refused: {message}")).into())
            }
            Some(Frame::Response(r)) => Ok(r),
            Some(other) => anyhow::bail!("unexpected frame from the agent: {other:?}"),
            None => anyhow::bail!("the environment's agent closed the connection"),
        }
    }

    /// The process list.
    pub async fn ps(&mut self) -> Result<Response> {
        self.request(Request::Ps).await?;
        self.response().await
    }

    /// Asks the agent to stop everything, and waits until it has.
    pub async fn shutdown(mut self, grace_ms: u64) -> Result<()> {
        self.request(Request::Shutdown { grace_ms }).await?;
        self.response().await?;
        // The agent holds the connection open until it exits.
        let _ = read_frame(self.stream()?).await;
        Ok(())
    }

    /// Runs `spec` and returns its exit code. With `forward_stdin`, local stdin goes to the
    /// process; otherwise it sees end of file. Without a terminal, and where the transport
    /// can, the process gets this process's own stdio (the local fast path); otherwise stdio
    /// is streamed in frames. Afterwards the connection carries another request if the agent
    /// allows it (local stdin read ahead for this exec is then lost).
    pub async fn exec(&mut self, mut spec: ExecSpec, forward_stdin: bool) -> Result<i32> {
        let tty = spec.tty.is_some();
        let can_pass = self.stream()?.fd_passing().is_some();
        spec.passed_stdio = !tty && !framed_forced() && can_pass;
        let passed = spec.passed_stdio;
        let signals = ForwardedSignals::install();
        self.request(Request::Exec(spec)).await?;
        if passed {
            let null = std::fs::File::open("/dev/null")?;
            let stdin = if forward_stdin {
                0
            } else {
                std::os::fd::AsRawFd::as_raw_fd(&null)
            };
            if let Some(fds) = self.stream()?.fd_passing() {
                fds.send_stdio([stdin, 1, 2]).await?;
            }
        }
        match self.response().await? {
            Response::Started { .. } => {}
            other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
        }
        let _raw = if tty { RawMode::enter() } else { None };
        let stream = self.stream.take().context("no connection")?;
        let (code, back) = pump(stream, forward_stdin && !passed, tty, signals).await?;
        if let (Some(mut stream), true) = (back, self.reusable) {
            if write_frame(&mut stream, &Frame::End).await.is_ok() {
                self.stream = Some(stream);
            }
        }
        Ok(code)
    }
}

/// Asks for the process list.
pub fn ps(agent: &AgentAddress) -> Result<Response> {
    let rt = runtime()?;
    rt.block_on(async { AgentClient::connect(agent).await?.ps().await })
}

/// Asks the agent to stop everything, and waits until it has.
pub fn shutdown(agent: &AgentAddress, grace_ms: u64) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async { AgentClient::connect(agent).await?.shutdown(grace_ms).await })
}

/// Whether stdio is streamed as frames even where descriptors could be passed (for tests and
/// measurements of the framed path).
fn framed_forced() -> bool {
    std::env::var_os("AGENTENV_EXEC_STREAM").is_some_and(|v| v == "framed")
}

/// Runs `spec` in the environment whose agent answers at `agent` and returns its exit code
/// (see `AgentClient::exec`).
pub fn exec(agent: &AgentAddress, spec: ExecSpec, forward_stdin: bool) -> Result<i32> {
    let rt = runtime()?;
    let code = rt.block_on(async {
        AgentClient::connect(agent)
            .await?
            .exec(spec, forward_stdin)
            .await
    });
    // Local stdin is read by a blocking thread that may still wait for input: do not wait.
    rt.shutdown_background();
    code
}

/// The signals an exec passes on, caught from the moment it starts (a signal that came before
/// its handler was installed would be lost, or would kill the client).
struct ForwardedSignals {
    rx: mpsc::Receiver<i32>,
}

impl ForwardedSignals {
    /// Installs the handlers; must run inside the runtime.
    fn install() -> Self {
        let kinds = [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
            (SignalKind::user_defined1(), libc::SIGUSR1),
            (SignalKind::user_defined2(), libc::SIGUSR2),
            (SignalKind::window_change(), libc::SIGWINCH),
        ];
        let (tx, rx) = mpsc::channel::<i32>(16);
        for (kind, num) in kinds {
            let Ok(mut s) = signal(kind) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(num).await.is_err() {
                        return;
                    }
                }
            });
        }
        Self { rx }
    }

    async fn next(&mut self) -> Option<i32> {
        self.rx.recv().await
    }
}

type Halves = (ReadHalf<Box<dyn Transport>>, WriteHalf<Box<dyn Transport>>);

/// Streams an exec until its exit status; returns it with the connection, when it is intact.
async fn pump(
    stream: Box<dyn Transport>,
    forward_stdin: bool,
    tty: bool,
    mut signals: ForwardedSignals,
) -> Result<(i32, Option<Box<dyn Transport>>)> {
    let (rd, mut wr): Halves = tokio::io::split(stream);
    let mut rd = tokio::io::BufReader::with_capacity(256 * 1024, rd);
    let (tx, mut rx) = mpsc::channel::<Frame>(8);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame(&mut wr, &f).await.is_err() {
                return None;
            }
        }
        Some(wr)
    });

    let mut input = None;
    if forward_stdin {
        let tx = tx.clone();
        input = Some(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Frame::Stdin(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Frame::StdinClose).await;
        }));
    } else {
        tx.send(Frame::StdinClose).await.ok();
    }

    let forwarding = {
        let tx = tx.clone();
        tokio::spawn(async move {
            if tty {
                // A resize between the request and now would otherwise be lost.
                if let Some(ws) = local_winsize() {
                    let _ = tx
                        .send(Frame::Resize {
                            rows: ws.rows,
                            cols: ws.cols,
                        })
                        .await;
                }
            }
            while let Some(num) = signals.next().await {
                let frame = match (num, tty) {
                    (libc::SIGWINCH, true) => match local_winsize() {
                        Some(ws) => Frame::Resize {
                            rows: ws.rows,
                            cols: ws.cols,
                        },
                        None => continue,
                    },
                    (n, _) => Frame::Signal(n),
                };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        })
    };
    drop(tx);

    // Output is written by a thread of its own with blocking writes: a slow reader of our
    // stdout then holds back the agent (through the bounded channel and the socket) without
    // stopping this loop from passing signals on.
    let (out_tx, mut out_rx) = mpsc::channel::<(bool, Vec<u8>)>(16);
    let output = std::thread::spawn(move || {
        use std::io::Write;
        let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr());
        while let Some((is_err, data)) = out_rx.blocking_recv() {
            let r = if is_err {
                stderr.write_all(&data)
            } else {
                stdout.write_all(&data).and_then(|_| stdout.flush())
            };
            if r.is_err() {
                break;
            }
        }
    });
    let mut ended = true;
    let code = loop {
        match read_frame(&mut rd).await? {
            Some(Frame::Stdout(d)) => {
                if out_tx.send((false, d)).await.is_err() {
                    // Nobody reads our stdout: the session is given up mid-stream.
                    ended = false;
                    break 141;
                }
            }
            Some(Frame::Stderr(d)) => {
                let _ = out_tx.send((true, d)).await;
            }
            Some(Frame::Exit(status)) => break status.code,
            Some(other) => tracing::debug!(?other, "ignored frame from agent"),
            None => {
                return Err(Diagnostic::new(
                    "the environment's agent went away before the command ended",
                )
                .hint("the environment was stopped (`agentenv down`) or its agent was killed")
                .into())
            }
        }
    };
    drop(out_tx);
    let _ = output.join();
    // The writer ends once every sender is gone, and hands its half back.
    forwarding.abort();
    if let Some(input) = input {
        input.abort();
        let _ = input.await;
    }
    let _ = forwarding.await;
    let back = match writer.await {
        Ok(Some(wr)) if ended && rd.buffer().is_empty() => Some(rd.into_inner().unsplit(wr)),
        _ => None,
    };
    Ok((code, back))
}
