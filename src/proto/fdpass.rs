//! The local fast path: over a unix socket the client hands its own stdin, stdout and stderr
//! to the agent (SCM_RIGHTS), so the process writes straight where the client would have,
//! with no copy and the kernel's own backpressure. Other transports stream frames instead.

use std::io::IoSlice;
#[cfg(target_os = "linux")]
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};
#[cfg(target_os = "linux")]
use std::os::fd::{FromRawFd, OwnedFd};

#[cfg(target_os = "linux")]
use nix::sys::socket::{recvmsg, ControlMessageOwned};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::ProtoError;

/// Sends three descriptors with a one-byte marker.
pub async fn send_stdio(stream: &UnixStream, fds: [RawFd; 3]) -> Result<(), ProtoError> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(b"F")];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<UnixAddr>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                .map_err(std::io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives the three descriptors `send_stdio` sent (the agent's end: Linux).
#[cfg(target_os = "linux")]
pub async fn recv_stdio(stream: &UnixStream) -> Result<[OwnedFd; 3], ProtoError> {
    loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([RawFd; 3]);
            let msg = recvmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(r) = c {
                    // SAFETY: the kernel just installed these descriptors in this process for
                    // us; nothing else owns them.
                    fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
            Ok(fds)
        });
        match got {
            Ok(fds) => {
                return <[OwnedFd; 3]>::try_from(fds).map_err(|v| {
                    ProtoError::Malformed(format!("expected 3 descriptors, got {}", v.len()))
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
