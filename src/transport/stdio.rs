//! This process's stdin and stdout as one unbuffered byte stream (an agent started over ssh).
//! tokio's own stdout goes through std's line buffer, which would hold a frame back until a
//! newline; here every write reaches the descriptor at once.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Transport;

/// Reads from one descriptor, writes to another, both non-blocking.
pub struct StdioStream {
    input: AsyncFd<OwnedFd>,
    output: AsyncFd<OwnedFd>,
}

fn nonblocking(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and names the same
    // file description for as long as the AsyncFd lives.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

impl StdioStream {
    /// Takes over `input` and `output` (pipes or sockets; call inside a runtime).
    pub fn new(input: OwnedFd, output: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            input: nonblocking(input)?,
            output: nonblocking(output)?,
        })
    }

    /// Duplicates of this process's stdin and stdout.
    pub fn of_process() -> io::Result<Self> {
        let dup = |fd: i32| {
            // SAFETY: 0 and 1 are this process's standard descriptors, open for its life.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            borrowed.try_clone_to_owned()
        };
        Self::new(dup(0)?, dup(1)?)
    }
}

impl AsyncRead for StdioStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.input.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
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

impl AsyncWrite for StdioStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.output.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Frames only: no descriptors, no peer credentials (ssh guards who reaches it).
impl Transport for StdioStream {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "current_thread")]
    async fn bytes_pass_unbuffered_both_ways() {
        let (a_read, b_write) = nix::unistd::pipe().unwrap();
        let (b_read, a_write) = nix::unistd::pipe().unwrap();
        let mut a = StdioStream::new(a_read, a_write).unwrap();
        let mut b = StdioStream::new(b_read, b_write).unwrap();
        // No newline and no flush: it must arrive anyway.
        a.write_all(b"frame").await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frame");
        b.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
    }
}
