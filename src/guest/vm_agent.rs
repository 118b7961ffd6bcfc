//! The guest agent of a VM, on vsock: the same requests and exec sessions as a namespace
//! environment's agent (`guest::agent`, `guest::session`), over connections that come through
//! the VM's vsock device. There is no peer uid to check: only the user who owns the VM's
//! host-side socket can reach it.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::socket::{self, SockFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::signal::unix::{signal, SignalKind};

use super::reaper::Reaper;
use super::session::run_exec;
use super::vm::log;
use crate::proto::frame::handshake;
use crate::proto::message::{Request, Response};
use crate::proto::{read_frame, write_frame, Frame};

/// A connected stream socket (vsock here) driven by tokio's reactor.
pub struct FdStream(AsyncFd<OwnedFd>);

impl FdStream {
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: the AsyncFd owns the descriptor, which stays open until it is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(Into::into))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let _ = socket::shutdown(self.0.get_ref().as_raw_fd(), socket::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// Serves the agent on `listener` until a shutdown request, or until the host closes the boot
/// connection (it is gone, so is the VM's reason to run).
pub fn serve(listener: OwnedFd, boot_conn: std::fs::File) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the agent's runtime")?;
    rt.block_on(serve_async(listener, boot_conn))
}

async fn serve_async(listener: OwnedFd, mut boot_conn: std::fs::File) -> Result<()> {
    rustix::io::ioctl_fionbio(&listener, true)?;
    // SAFETY: the AsyncFd owns the descriptor, which stays open until it is dropped.
    let listener = unsafe { AsyncFd::register(listener) }.map_err(|e| e.into_parts().1)?;
    let reaper = Reaper::default();
    let reaping = tokio::spawn(reaper.clone().run());
    let mut term = signal(SignalKind::terminate())?;
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel::<Duration>(1);
    // The host's end of the boot connection closing means the host side is gone.
    let (host_gone_tx, mut host_gone) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while matches!(boot_conn.read(&mut b), Ok(n) if n > 0) {}
        let _ = host_gone_tx.send(());
    });

    let grace = loop {
        tokio::select! {
            ready = listener.readable() => {
                let mut guard = ready?;
                match guard.try_io(|l| socket::accept4(l.get_ref(), SockFlag::SOCK_CLOEXEC).map_err(Into::into)) {
                    Ok(Ok(fd)) => {
                        let reaper = reaper.clone();
                        let shutdown = shutdown_tx.clone();
                        tokio::spawn(async move {
                            if let Err(e) = handle(fd, reaper, shutdown).await {
                                log(&format!("connection: {e:#}"));
                            }
                        });
                    }
                    Ok(Err(e)) => log(&format!("accept: {e}")),
                    Err(_would_block) => {}
                }
            }
            Some(grace) = shutdown_rx.recv() => break grace,
            _ = term.recv() => break Duration::from_secs(5),
            _ = &mut host_gone => {
                log("the host closed the boot connection");
                break Duration::from_millis(500);
            }
        }
    };
    super::agent::stop_everything(&reaper, grace).await;
    reaping.abort();
    Ok(())
}

async fn handle(
    fd: OwnedFd,
    reaper: Reaper,
    shutdown: tokio::sync::mpsc::Sender<Duration>,
) -> Result<()> {
    let mut stream = FdStream::new(fd)?;
    handshake(&mut stream).await?;
    let request = match read_frame(&mut stream).await? {
        Some(Frame::Request(r)) => r,
        Some(other) => anyhow::bail!("expected a request, got {other:?}"),
        None => return Ok(()),
    };
    match request {
        Request::Exec(mut spec) => {
            // Descriptors do not cross a VM's boundary: stdio always comes as frames.
            spec.passed_stdio = false;
            run_exec(spec, stream, None, reaper.clone())
                .await
                .map(|_| ())
        }
        Request::Ps => {
            let response = Response::Processes {
                uptime_secs: uptime(),
                processes: super::agent::processes(&reaper),
            };
            write_frame(&mut stream, &Frame::Response(response)).await?;
            Ok(())
        }
        Request::Shutdown { grace_ms } => {
            write_frame(&mut stream, &Frame::Response(Response::ShuttingDown)).await?;
            let _ = shutdown.send(Duration::from_millis(grace_ms)).await;
            let _ = read_frame(&mut stream).await;
            Ok(())
        }
    }
}

fn uptime() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next()?.parse().ok())
        .unwrap_or(0)
}
