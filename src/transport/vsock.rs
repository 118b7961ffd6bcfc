//! A VM's vsock as its host sees it through vhost-device-vsock (or Firecracker, or a VZ
//! backend that relays the same way): a unix socket on which `CONNECT <port>\n` asks for the
//! guest's port and `OK <n>\n` answers. After that it is a plain byte stream: no descriptors
//! pass, and the peer's uid is the helper's, not the guest's, so none is claimed.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;

use super::Transport;

/// A connection to a guest's vsock port.
pub struct HybridVsock(UnixStream);

/// The longest answer line the handshake reads (`OK <u32>\n`).
const MAX_ANSWER: usize = 32;

/// Connects to `port` of the guest behind the hybrid vsock socket `path`.
pub async fn connect_hybrid(path: &Path, port: u32) -> std::io::Result<HybridVsock> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Byte by byte: what follows the line belongs to the protocol.
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > MAX_ANSWER {
            break;
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "vsock port {port} refused the connection ({:?})",
                String::from_utf8_lossy(&line)
            ),
        ));
    }
    Ok(HybridVsock(s))
}

impl AsyncRead for HybridVsock {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for HybridVsock {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Transport for HybridVsock {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for vhost-device-vsock's host socket: answers the handshake, then echoes.
    #[tokio::test(flavor = "current_thread")]
    async fn the_handshake_is_answered_and_the_stream_is_the_guests() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vsock.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let helper = tokio::spawn(async move {
            for answer in ["OK 1073741824\n", "nope\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut line = vec![0u8; "CONNECT 1024\n".len()];
                s.read_exact(&mut line).await.unwrap();
                assert_eq!(line, b"CONNECT 1024\n");
                s.write_all(answer.as_bytes()).await.unwrap();
                s.write_all(b"guest").await.unwrap();
            }
        });
        let mut c = connect_hybrid(&path, 1024).await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(
            &got, b"guest",
            "bytes after the answer line are the guest's"
        );
        let err = connect_hybrid(&path, 1024).await.err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        helper.await.unwrap();
    }
}
