//! One exec session in the guest agent: starts the process (on a new pty or on pipes), streams
//! its stdio over the connection, applies resizes and signals, and reports its exit status.
//! If the client goes away the process runs on; its output is then read and dropped.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Mutex};

use super::launch::{plan_launch, Launch, LaunchMode};
use super::pipe::AsyncPipe;
use super::reaper::Reaper;
use crate::diag::Diagnostic;
use crate::process::reset_signals_for_exec;
use crate::proto::frame::{data_header, HEADER};
use crate::proto::message::{ExecSpec, ExitStatus, Response, WinSize};
use crate::proto::{read_frame, write_frame, Frame};
use crate::terminal::set_winsize;

/// Where per-exec start-up scripts go inside (the environment's own `/run`).
const SCRIPT_DIR: &str = "/run/agentenv";

/// `SCRIPT_DIR` for the environment's PID 1; an agent that is not one (on a remote host, in a
/// test) shares `/run` and `/tmp` with others and keeps its scripts in a private directory
/// (0700, a name nobody could have guessed).
fn script_dir() -> PathBuf {
    static PRIVATE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if std::process::id() == 1 {
        return PathBuf::from(SCRIPT_DIR);
    }
    PRIVATE
        .get_or_init(|| {
            tempfile::Builder::new()
                .prefix("agentenv-agent-")
                .tempdir()
                .map(|d| d.keep())
                .unwrap_or_else(|_| PathBuf::from(SCRIPT_DIR))
        })
        .clone()
}
/// After the process exits, output still arriving (from something it left running) is
/// forwarded until the streams are quiet this long.
const QUIET_AFTER_EXIT: Duration = Duration::from_millis(250);
/// Output is read in chunks of this size, straight into a frame.
const CHUNK: usize = 256 * 1024;
/// Pipe buffers for the process's output, so that each read carries a lot.
const PIPE_SIZE: i32 = 1024 * 1024;

static NEXT_EXEC: AtomicU64 = AtomicU64::new(1);

fn launch_for(spec: &ExecSpec) -> Launch {
    let mode = match (&spec.command, spec.stdin_script) {
        (Some(cmd), _) => LaunchMode::Command(cmd.clone()),
        (None, true) => LaunchMode::Stdin,
        (None, false) => LaunchMode::Interactive,
    };
    let n = NEXT_EXEC.fetch_add(1, Ordering::Relaxed);
    plan_launch(
        &spec.rc_script,
        &spec.shell,
        &mode,
        &spec.cwd,
        spec.env.clone(),
        &spec.prompt_name,
    )
    .with_script_path(&script_dir().join(format!("exec-{n}.sh")))
}

/// What the process's stdio is.
pub enum StdioPlan {
    /// A new terminal of this size.
    Pty(WinSize),
    /// Pipes streamed as frames.
    Pipes,
    /// The client's own descriptors (the local fast path).
    Passed([OwnedFd; 3]),
}

/// The process and the ends of its stdio that the agent holds.
struct Spawned {
    pid: i32,
    stdin: Option<Arc<AsyncPipe>>,
    stdout: Option<Arc<AsyncPipe>>,
    stderr: Option<Arc<AsyncPipe>>,
    /// The pty master, for resizes.
    pty: Option<i32>,
}

fn spawn(launch: &Launch, stdio: StdioPlan) -> Result<Spawned> {
    // Spawning would blame the program for a missing working directory.
    if !launch.cwd.is_dir() {
        return Err(Diagnostic::new(format!(
            "no such directory inside the environment: {}",
            launch.cwd.display()
        ))
        .hint("give --cwd a directory of the project or the home")
        .into());
    }
    if let Some(dir) = launch.script_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&launch.script_path, &launch.script)
        .with_context(|| format!("cannot write {}", launch.script_path.display()))?;
    let mut cmd = Command::new(&launch.program);
    if let Some(arg0) = launch.argv.first() {
        cmd.arg0(arg0);
    }
    cmd.args(launch.argv.iter().skip(1))
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd);
    match stdio {
        StdioPlan::Passed([stdin, stdout, stderr]) => {
            // Each exec leads a process group, so that what it leaves running can be found.
            cmd.stdin(stdin)
                .stdout(stdout)
                .stderr(stderr)
                .process_group(0);
            // SAFETY: only sigprocmask and signal between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    reset_signals_for_exec();
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot run {}", launch.program.display()))?;
            Ok(Spawned {
                pid: child.id() as i32,
                pty: None,
                stdin: None,
                stdout: None,
                stderr: None,
            })
        }
        StdioPlan::Pty(ws) => {
            let pty = nix::pty::openpty(None, None).context("cannot open a pty")?;
            set_winsize(std::os::fd::AsRawFd::as_raw_fd(&pty.master), ws);
            let slave = std::fs::File::from(pty.slave);
            cmd.stdin(slave.try_clone()?)
                .stdout(slave.try_clone()?)
                .stderr(slave);
            // SAFETY: between fork and exec only async-signal-safe calls: sigprocmask,
            // signal, setsid and ioctl.
            unsafe {
                cmd.pre_exec(|| {
                    reset_signals_for_exec();
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                    if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot run {}", launch.program.display()))?;
            let master = Arc::new(AsyncPipe::new(pty.master)?);
            Ok(Spawned {
                pid: child.id() as i32,
                pty: Some(master.raw_fd()),
                stdin: Some(master.clone()),
                stdout: Some(master),
                stderr: None,
            })
        }
        StdioPlan::Pipes => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            // SAFETY: only sigprocmask and signal between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    reset_signals_for_exec();
                    Ok(())
                });
            }
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot run {}", launch.program.display()))?;
            let take = |fd: Option<OwnedFd>| -> Result<Arc<AsyncPipe>> {
                Ok(Arc::new(AsyncPipe::new(fd.context("missing pipe")?)?))
            };
            Ok(Spawned {
                pid: child.id() as i32,
                pty: None,
                stdin: Some(take(child.stdin.take().map(OwnedFd::from))?),
                stdout: Some(take(child.stdout.take().map(OwnedFd::from))?),
                stderr: Some(take(child.stderr.take().map(OwnedFd::from))?),
            })
        }
    }
}

/// The connection's writing half, shared by the output streams and the session.
type Writer<S> = Arc<Mutex<tokio::io::WriteHalf<S>>>;

/// Copies one output stream into frames until it ends (or is quiet after the exit). Each read
/// lands directly behind a frame header, so a chunk is sent without a copy.
async fn pump_output<S: AsyncWrite>(
    pipe: Arc<AsyncPipe>,
    writer: Writer<S>,
    stderr: bool,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; HEADER + CHUNK];
    let mut connected = true;
    loop {
        let read = pipe.read(&mut buf[HEADER..]);
        let n = if *exited.borrow() {
            match tokio::time::timeout(QUIET_AFTER_EXIT, read).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                r = read => r,
                _ = exited.changed() => continue,
            }
        };
        let n = match n {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if connected {
            data_header(&mut buf, stderr, n);
            let mut w = writer.lock().await;
            connected = w.write_all(&buf[..HEADER + n]).await.is_ok() && w.flush().await.is_ok();
        }
    }
}

/// Sends one frame through the shared writer.
async fn send<S: AsyncWrite>(writer: &Writer<S>, frame: &Frame) -> bool {
    write_frame(&mut *writer.lock().await, frame).await.is_ok()
}

fn set_pipe_size(pipe: &AsyncPipe) {
    // SAFETY: F_SETPIPE_SZ on a descriptor we own; failure (a pty, a limit) leaves it as is.
    unsafe { libc::fcntl(pipe.raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
}

/// Runs `spec` to its end with `stdio` as its stdin, stdout and stderr, no connection
/// involved (a detached dispatch); returns its exit code.
pub async fn run_to_end(spec: ExecSpec, stdio: [OwnedFd; 3], reaper: Reaper) -> Result<i32> {
    let launch = launch_for(&spec);
    let spawned = spawn(&launch, StdioPlan::Passed(stdio));
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&launch.script_path);
            return Err(e);
        }
    };
    let exit = reaper.watch(spawned.pid);
    drop(spawned);
    let code = exit.await.unwrap_or(1);
    let _ = std::fs::remove_file(&launch.script_path);
    Ok(code)
}

/// Runs an exec request on `conn` to the end; `passed` are the client's own descriptors when
/// it sent them. Returns the connection when the client ended the session with `End` (it
/// carries the next request), `None` when it closed it.
pub async fn run_exec<S>(
    spec: ExecSpec,
    conn: S,
    passed: Option<[OwnedFd; 3]>,
    reaper: Reaper,
) -> Result<Option<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(conn);
    let launch = launch_for(&spec);
    let stdio = match (passed, spec.tty) {
        (Some(fds), _) => StdioPlan::Passed(fds),
        (None, Some(ws)) => StdioPlan::Pty(ws),
        (None, None) => StdioPlan::Pipes,
    };
    let spawned = match spawn(&launch, stdio) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&launch.script_path);
            let message = format!("{e:#}");
            let mut wr = wr;
            write_frame(&mut wr, &Frame::Response(Response::Error { message })).await?;
            return Ok(Some(rd.unsplit(wr)));
        }
    };
    let exit = reaper.watch(spawned.pid);
    tracing::debug!(pid = spawned.pid, "exec started");

    let writer: Writer<S> = Arc::new(Mutex::new(wr));
    send(
        &writer,
        &Frame::Response(Response::Started { pid: spawned.pid }),
    )
    .await;

    let (exited_tx, exited_rx) = watch::channel(false);
    let mut outputs = Vec::new();
    if let Some(out) = spawned.stdout.clone() {
        set_pipe_size(&out);
        outputs.push(tokio::spawn(pump_output(
            out,
            writer.clone(),
            false,
            exited_rx.clone(),
        )));
    }
    if let Some(err) = spawned.stderr.clone() {
        set_pipe_size(&err);
        outputs.push(tokio::spawn(pump_output(
            err,
            writer.clone(),
            true,
            exited_rx.clone(),
        )));
    }

    // Input from the client: stdin, resizes, signals. Ends when the client closes, or hands
    // the reading half back when the client ends the session.
    let pid = spawned.pid;
    let pty = spawned.pty;
    let mut stdin = spawned.stdin.clone();
    let input = tokio::spawn(async move {
        while let Ok(Some(frame)) = read_frame(&mut rd).await {
            match frame {
                Frame::End => return Some(rd),
                Frame::Stdin(data) => {
                    if let Some(p) = &stdin {
                        if p.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Frame::StdinClose => {
                    // A pty has no separate input end to close: send end-of-file instead.
                    match (&stdin, pty) {
                        (Some(p), Some(_)) => {
                            let _ = p.write_all(&[4]).await;
                        }
                        _ => stdin = None,
                    }
                }
                Frame::Resize { rows, cols } => {
                    if let Some(fd) = pty {
                        set_winsize(fd, WinSize { rows, cols });
                    }
                }
                Frame::Signal(sig) => {
                    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                    }
                }
                other => tracing::debug!(?other, "ignored frame from client"),
            }
        }
        None
    });
    drop(spawned);

    let code = exit.await.unwrap_or(1);
    let _ = exited_tx.send(true);
    for o in outputs {
        let _ = o.await;
    }
    let sent = send(&writer, &Frame::Exit(ExitStatus { code })).await;
    let _ = std::fs::remove_file(&launch.script_path);
    tracing::debug!(pid, code, "exec ended");
    if !sent {
        input.abort();
        return Ok(None);
    }
    // The client reads the exit status, then closes the connection or ends the session.
    let back = match (input.await, Arc::try_unwrap(writer)) {
        (Ok(Some(rd)), Ok(wr)) => Some(rd.unsplit(wr.into_inner())),
        _ => None,
    };
    Ok(back)
}
