//! Byte streams between host and guest, each with the abilities it has. Every transport
//! carries frames; some can do more, and say so: a unix socket passes descriptors and names
//! its peer's uid, a vsock or a pipe pair (ssh stdio) cannot. The protocol asks for an ability
//! and falls back where a transport lacks it; it never assumes one.
//! `AgentAddress` is where an environment's agent answers, as plain data the registry keeps.

pub mod unix;
pub mod vsock;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

pub use unix::FdPassing;

/// A byte stream the protocol runs over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The uid at the other end, where the transport can tell (`SO_PEERCRED`).
    fn peer_uid(&self) -> Option<u32> {
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
    fn peer_uid(&self) -> Option<u32> {
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
    /// Whether a new connection costs little; where not, a client keeps one for several
    /// requests.
    pub fn cheap_connections(&self) -> bool {
        true
    }

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
