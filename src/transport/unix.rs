//! Unix sockets: the local transport. They can pass descriptors (SCM_RIGHTS, the local fast
//! path of `proto::fdpass`) and name the peer's uid; the listening socket is the owner's only.

use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use tokio::net::UnixStream;

use super::{Accept, BoxFuture, Transport};
use crate::diag::Diagnostic;
use crate::proto::ProtoError;

impl Transport for UnixStream {
    fn peer_uid(&self) -> Option<std::io::Result<u32>> {
        Some(self.peer_cred().map(|c| c.uid()))
    }

    fn fd_passing(&self) -> Option<FdPassing<'_>> {
        Some(FdPassing(self))
    }

    fn prefer_bulk(&self) {
        // Large output moves in large chunks: let more of it be in flight to the client.
        let _ = nix::sys::socket::setsockopt(self, nix::sys::socket::sockopt::SndBuf, &(4 << 20));
    }
}

impl Accept for tokio::net::UnixListener {
    fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Option<Box<dyn Transport>>>> {
        Box::pin(async move {
            let (stream, _) = tokio::net::UnixListener::accept(self).await?;
            Ok(Some(Box::new(stream) as Box<dyn Transport>))
        })
    }
}

/// The ability to pass descriptors over a connection.
pub struct FdPassing<'a>(&'a UnixStream);

impl FdPassing<'_> {
    /// Sends stdin, stdout and stderr (see `proto::fdpass`).
    pub async fn send_stdio(&self, fds: [RawFd; 3]) -> Result<(), ProtoError> {
        crate::proto::fdpass::send_stdio(self.0, fds).await
    }

    /// Receives the three descriptors `send_stdio` sent.
    #[cfg(target_os = "linux")]
    pub async fn recv_stdio(&self) -> Result<[std::os::fd::OwnedFd; 3], ProtoError> {
        crate::proto::fdpass::recv_stdio(self.0).await
    }
}

/// Binds a unix socket at `path` that only its owner may use (0600). The path must fit in a
/// sockaddr_un (107 bytes).
pub fn bind_owner_only(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    if path.as_os_str().len() > 107 {
        return Err(Diagnostic::new(format!(
            "the socket path {} is too long for a unix socket",
            path.display()
        ))
        .hint("point XDG_RUNTIME_DIR or AGENTENV_HOME at a shorter directory")
        .into());
    }
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
