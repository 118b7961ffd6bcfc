//! The guest agent of a VM, on vsock: `guest::agent` itself, taking its connections from a
//! vsock listener. No peer uid can be named there: the VM's host-side socket (in a 0700
//! directory) is what guards it.

use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};

use anyhow::Result;
use nix::sys::socket::{self, SockFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::agent::run_agent;
use super::vm::log;
use crate::transport::{Accept, BoxFuture, Transport};

/// A connected vsock stream driven by tokio's reactor.
pub struct VsockStream(AsyncFd<OwnedFd>);

impl VsockStream {
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: the AsyncFd owns the descriptor, which stays open until it is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }
}

impl AsyncRead for VsockStream {
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

impl AsyncWrite for VsockStream {
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
        let _ = socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(self.0.get_ref()),
            socket::Shutdown::Write,
        );
        Poll::Ready(Ok(()))
    }
}

impl Transport for VsockStream {}

/// A listening vsock socket, as the agent's source of connections.
struct VsockListener(AsyncFd<OwnedFd>);

impl Accept for VsockListener {
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Option<Box<dyn Transport>>>> {
        Box::pin(async move {
            loop {
                let mut guard = self.0.readable().await?;
                match guard.try_io(|l| {
                    socket::accept4(l.get_ref(), SockFlag::SOCK_CLOEXEC).map_err(Into::into)
                }) {
                    Ok(Ok(fd)) => {
                        return Ok(Some(Box::new(VsockStream::new(fd)?) as Box<dyn Transport>))
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        })
    }
}

/// Serves the agent on `listener` until a shutdown request, or until the host closes the boot
/// connection (the host side is gone, so is the VM's reason to run); returns its exit code.
pub fn serve(listener: OwnedFd, mut boot_conn: std::fs::File) -> Result<()> {
    std::thread::spawn(move || {
        // After the instructions, the host sends its clock (after it slept, and every minute).
        for line in std::io::BufReader::new(&mut boot_conn).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<crate::compute::vm::clock::ClockUpdate>(&line) {
                Ok(u) => super::vm::set_clock_to(u.time_secs, u.time_nanos),
                Err(_) => log(&format!("unknown line from the host: {line:?}")),
            }
        }
        log("the host closed the boot connection: stopping");
        // SAFETY: a signal to this process (PID 1), whose agent handles SIGTERM.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    let code = run_agent(
        move || {
            rustix::io::ioctl_fionbio(&listener, true)?;
            // SAFETY: the AsyncFd owns the descriptor, which stays open until it is dropped.
            let fd = unsafe { AsyncFd::register(listener) }.map_err(|e| e.into_parts().1)?;
            Ok(VsockListener(fd))
        },
        || {},
    );
    if code != 0 {
        anyhow::bail!("the agent ended with code {code}");
    }
    Ok(())
}
