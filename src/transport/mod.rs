//! Byte streams between host and guest, each with the abilities it has. Every transport
//! carries frames; some can do more, and say so: a unix socket passes descriptors and names
//! its peer's uid, a vsock or a pipe pair (ssh stdio) cannot. The protocol asks for an ability
//! and falls back where a transport lacks it; it never assumes one.
//! `AgentAddress` is where an environment's agent answers, as plain data the registry keeps.

pub mod unix;
pub mod vsock;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

pub use unix::FdPassing;

/// A byte stream the protocol runs over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The uid at the other end, where the transport can tell (`SO_PEERCRED`): `None` where
    /// it cannot, an error where it could but the lookup failed (never to be taken as `None`).
    fn peer_uid(&self) -> Option<std::io::Result<u32>> {
        None
    }

    /// Passing descriptors, where the transport can (a unix socket).
    fn fd_passing(&self) -> Option<FdPassing<'_>> {
        None
    }

    /// Asks for room for large writes in flight (bulk output), where the transport has a knob.
    fn prefer_bulk(&self) {}
}

impl Transport for Box<dyn Transport> {
    fn peer_uid(&self) -> Option<std::io::Result<u32>> {
        (**self).peer_uid()
    }
    fn fd_passing(&self) -> Option<FdPassing<'_>> {
        (**self).fd_passing()
    }
    fn prefer_bulk(&self) {
        (**self).prefer_bulk()
    }
}

/// An in-memory stream (tests): frames only.
impl Transport for tokio::io::DuplexStream {}

/// A pair of one-way streams, such as a pipe pair or a process's stdin and stdout (ssh stdio):
/// frames only.
impl<R, W> Transport for tokio::io::Join<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
}

/// A boxed future, for traits that must stay usable as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the agent takes its connections from: a listening socket (unix, vsock) or a single
/// stream (stdio).
pub trait Accept: Send + 'static {
    /// The next connection; `None` once no more will come (the agent then stops).
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Option<Box<dyn Transport>>>>;
}

impl Accept for Box<dyn Accept> {
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Option<Box<dyn Transport>>>> {
        (**self).accept()
    }
}

/// One connection, then no more: the agent's own stdin and stdout (a process started over ssh)
/// or any stream handed to it. `accept` gives it once, and `None` once it has been dropped.
pub struct OneConnection {
    stream: Option<Box<dyn Transport>>,
    closed: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl OneConnection {
    pub fn new(stream: Box<dyn Transport>) -> Self {
        Self {
            stream: Some(stream),
            closed: None,
        }
    }

    /// This process's stdin and stdout (call inside a runtime).
    pub fn stdio() -> Self {
        Self::new(Box::new(tokio::io::join(
            tokio::io::stdin(),
            tokio::io::stdout(),
        )))
    }
}

impl Accept for OneConnection {
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Option<Box<dyn Transport>>>> {
        Box::pin(async move {
            if let Some(stream) = self.stream.take() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.closed = Some(rx);
                return Ok(Some(Box::new(Watched {
                    inner: stream,
                    _closed: tx,
                }) as Box<dyn Transport>));
            }
            if let Some(rx) = self.closed.take() {
                let _ = rx.await;
            }
            Ok(None)
        })
    }
}

/// A stream that tells `OneConnection` when it is dropped (its sender goes with it).
struct Watched {
    inner: Box<dyn Transport>,
    _closed: tokio::sync::oneshot::Sender<()>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Transport for Watched {
    fn peer_uid(&self) -> Option<std::io::Result<u32>> {
        self.inner.peer_uid()
    }
    fn fd_passing(&self) -> Option<FdPassing<'_>> {
        self.inner.fd_passing()
    }
    fn prefer_bulk(&self) {
        self.inner.prefer_bulk()
    }
}

/// Where an environment's guest agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentAddress {
    /// A unix socket on this host (a namespace sandbox's agent).
    Unix { path: PathBuf },
    /// A vsock port of a VM, reached through a unix socket speaking the hybrid vsock
    /// handshake (`CONNECT <port>\n`, then `OK <n>\n`), as vhost-device-vsock and Firecracker
    /// expose it.
    HybridVsock { path: PathBuf, port: u32 },
}

impl AgentAddress {
    /// Opens a connection to the agent.
    pub async fn connect(&self) -> std::io::Result<Box<dyn Transport>> {
        Ok(match self {
            AgentAddress::Unix { path } => Box::new(tokio::net::UnixStream::connect(path).await?),
            AgentAddress::HybridVsock { path, port } => {
                Box::new(vsock::connect_hybrid(path, *port).await?)
            }
        })
    }
}

impl std::fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentAddress::Unix { path } => write!(f, "{}", path.display()),
            AgentAddress::HybridVsock { path, port } => {
                write!(f, "vsock port {port} through {}", path.display())
            }
        }
    }
}
