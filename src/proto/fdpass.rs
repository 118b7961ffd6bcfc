//! The local fast path: over a unix socket the client hands its own stdin, stdout and stderr
//! to the agent (SCM_RIGHTS), so the process writes straight where the client would have,
//! with no copy and the kernel's own backpressure. Other transports stream frames instead.

use std::io::IoSlice;
#[cfg(target_os = "linux")]
use std::io::IoSliceMut;
#[cfg(target_os = "linux")]
use std::mem::MaybeUninit;
#[cfg(target_os = "linux")]
use std::os::fd::OwnedFd;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
#[cfg(target_os = "linux")]
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
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

/// Room for the most descriptors one message can carry (the kernel's SCM_MAX_FD), so that the
/// kernel never has to truncate the list: whatever arrives is received, and closed unless it
/// is exactly the three expected.
#[cfg(target_os = "linux")]
const MAX_FDS: usize = 253;

/// Receives the three descriptors `send_stdio` sent. Any other number, a truncated message,
/// or the end of the stream is an error, and every descriptor that came with it is closed.
#[cfg(target_os = "linux")]
pub async fn recv_stdio(stream: &UnixStream) -> Result<[OwnedFd; 3], ProtoError> {
    loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut byte)];
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let msg = recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            // Owned from here on: dropped (closed) with the Vec on any path below.
            let fds: Vec<OwnedFd> = control
                .drain()
                .filter_map(|m| match m {
                    RecvAncillaryMessage::ScmRights(fds) => Some(fds),
                    _ => None,
                })
                .flatten()
                .collect();
            Ok((msg.bytes, msg.flags, fds))
        });
        match got {
            Ok((0, _, _)) => return Err(ProtoError::Closed),
            Ok((_, flags, _)) if flags.contains(ReturnFlags::CTRUNC) => {
                return Err(ProtoError::Malformed(
                    "descriptors were truncated in transit".into(),
                ));
            }
            Ok((_, _, fds)) => {
                return <[OwnedFd; 3]>::try_from(fds).map_err(|v| {
                    ProtoError::Malformed(format!("expected 3 descriptors, got {}", v.len()))
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
