//! A terminal of the session's own, for an attach from a terminal: a new devpts instance
//! mounted over `/dev/pts` in the session's copy of the target's mount namespace (the target
//! never sees it), a pty from it as the shell's controlling terminal, and on the host side a
//! relay between the caller's terminal, in raw mode, and the pty's master, as ssh does. Inside,
//! `tty` names `/dev/pts/0`; after the session ends, nothing it left running can write to the
//! caller's terminal.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::Pid;

use crate::process::{reap_children, supervised_signals, Reap};
use crate::terminal::{local_winsize, set_winsize, RawMode};

/// How a session with a terminal of its own is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTerminal {
    /// Both ways to the caller's terminal, in raw mode, as ssh does.
    Interactive,
    /// Its output only, unaltered (a raw pty), to the caller's stderr; nothing typed goes in.
    /// For `activate.sh`: what it leaves running loses the terminal when it ends.
    OutputToStderr,
}

/// The interactive terminal when all three of the caller's stdio streams are one (a pty
/// merges stdout and stderr, which would take `2>log` away).
pub fn interactive_if_wanted() -> Option<SessionTerminal> {
    use std::io::IsTerminal;
    let all = std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    all.then_some(SessionTerminal::Interactive)
}

/// The channel on which the session process hands the pty's master to the host side.
pub struct MasterChannel {
    pub host: OwnedFd,
    pub session: OwnedFd,
}

impl MasterChannel {
    pub fn new() -> Result<Self> {
        let (host, session) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("cannot create a socket pair")?;
        Ok(Self { host, session })
    }
}

/// In the session process, in its private mount namespace and still privileged there: a new
/// devpts instance over `/dev/pts` and a pty from it, its slave given to `uid`:`gid` and sized
/// like the caller's terminal. `None` where the target has no `/dev/pts` to mount over.
pub fn open_private_pty(
    uid: u32,
    gid: u32,
    kind: SessionTerminal,
) -> Result<Option<(OwnedFd, OwnedFd)>> {
    let pts = Path::new("/dev/pts");
    if !pts.is_dir() {
        return Ok(None);
    }
    nix::mount::mount(
        Some("devpts"),
        pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("cannot mount a devpts instance of the session's own")?;
    let opened = open_pty(uid, gid, kind);
    if opened.is_err() {
        // The session goes on with the caller's terminal: give it back the target's /dev/pts.
        let _ = nix::mount::umount2(pts, nix::mount::MntFlags::MNT_DETACH);
    }
    opened.map(Some)
}

/// A pty from the devpts instance just mounted at /dev/pts; see `open_private_pty`.
fn open_pty(uid: u32, gid: u32, kind: SessionTerminal) -> Result<(OwnedFd, OwnedFd)> {
    let master = nix::fcntl::open(
        "/dev/pts/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("cannot open /dev/pts/ptmx")?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads the int behind the pointer, which lives across the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot unlock the pty");
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor (or -1).
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open the pty's slave");
    }
    // SAFETY: the ioctl returned a fresh descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    nix::unistd::fchown(
        &slave,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .context("cannot give the pty to the session's user")?;
    match kind {
        SessionTerminal::Interactive => {
            if let Some(ws) = local_winsize() {
                set_winsize(slave.as_raw_fd(), ws);
            }
        }
        SessionTerminal::OutputToStderr => {
            // Bytes pass unaltered (no CR added before each LF) to wherever stderr goes.
            let mut t = nix::sys::termios::tcgetattr(&slave).context("cannot read the pty")?;
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .context("cannot set up the pty")?;
        }
    }
    Ok((master, slave))
}

/// Sends the pty's master to the host side.
pub fn send_master(channel: &OwnedFd, master: &OwnedFd) -> Result<()> {
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context("cannot hand the pty to agentenv")?;
    Ok(())
}

/// Makes `slave` the controlling terminal and the stdio of this process, in a session of its
/// own (which the shell then leads).
pub fn take_terminal(slave: OwnedFd) -> Result<()> {
    nix::unistd::setsid().context("cannot start a session")?;
    // SAFETY: TIOCSCTTY takes an int argument by value; `slave` is open for the call.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot take the pty as terminal");
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot put the pty on stdio");
        }
    }
    Ok(())
}

/// The master the session process sent, if it sent one (it does not where the target has no
/// `/dev/pts`). Call once the session process has started its shell.
pub fn receive_master(channel: &OwnedFd) -> Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = match recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(msg) => msg,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e).context("cannot receive the session's pty"),
    };
    for cmsg in msg.cmsgs().context("cannot read the session's pty")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us; nothing else owns it.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}

/// Relays between the caller's terminal and the session's pty until the session process
/// `child` exits, and returns its exit code. Resizes follow the caller's terminal; other
/// signals go to the session (its terminal is its own, so none reached it).
pub fn relay(master: OwnedFd, child: Pid, kind: SessionTerminal) -> Result<i32> {
    let sfd = SignalFd::with_flags(&supervised_signals(), SfdFlags::SFD_NONBLOCK)
        .context("cannot create a signalfd")?;
    let interactive = kind == SessionTerminal::Interactive;
    let _raw = interactive.then(RawMode::enter).flatten();
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .context("cannot make the pty non-blocking")?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut to_session: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16384];
    let (mut stdin_open, mut master_open) = (interactive, true);
    let stderr = std::io::stderr();
    let out = |master: &OwnedFd, buf: &mut [u8], rounds: usize| match interactive {
        true => copy_out(master, &mut stdout.lock(), buf, rounds),
        false => copy_out(master, &mut stderr.lock(), buf, rounds),
    };
    loop {
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let master_events = match to_session.is_empty() {
            true => PollFlags::POLLIN,
            false => PollFlags::POLLIN | PollFlags::POLLOUT,
        };
        if master_open {
            fds.push(PollFd::new(master.as_fd(), master_events));
        }
        // Read more from the caller only once what it typed has reached the session.
        if stdin_open && to_session.is_empty() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("cannot wait for the session's terminal"),
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        // Signals first: a resize the caller made before typing must reach the session before
        // what was typed.
        if !ready[0].is_empty() {
            while let Ok(Some(info)) = sfd.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {
                        if let Some(code) = reap_children(child, Reap::Child)? {
                            // What the shell wrote last is still in the pty.
                            if master_open {
                                // Bounded: what the session left running may print on.
                                let _ = out(&master, &mut buf, 64);
                            }
                            return Ok(code);
                        }
                    }
                    Ok(Signal::SIGWINCH) if !interactive => {}
                    Ok(Signal::SIGWINCH) => {
                        if let Some(ws) = local_winsize() {
                            set_winsize(master.as_raw_fd(), ws);
                        }
                    }
                    Ok(sig) => {
                        let _ = nix::sys::signal::kill(child, sig);
                    }
                    Err(_) => {}
                }
            }
        }
        let mut at = 1;
        if master_open {
            let r = ready[at];
            at += 1;
            if r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                master_open = out(&master, &mut buf, 1)?;
            }
            if master_open && r.contains(PollFlags::POLLOUT) {
                write_some(&master, &mut to_session);
            }
        }
        if stdin_open && at < ready.len() && !ready[at].is_empty() {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    to_session.extend_from_slice(&buf[..n]);
                    write_some(&master, &mut to_session);
                }
            }
        }
    }
}

/// Reads at most `rounds` times what the pty has and copies it to stdout; false once the pty
/// is closed (no slave left open). Bounded, so that a session printing without end cannot
/// keep the relay from reading what is typed (a Ctrl-C) or a signal.
fn copy_out(
    master: &OwnedFd,
    out: &mut impl std::io::Write,
    buf: &mut [u8],
    rounds: usize,
) -> Result<bool> {
    for _ in 0..rounds {
        match nix::unistd::read(master, buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => return Ok(false),
            Ok(n) => {
                out.write_all(&buf[..n])
                    .and_then(|_| out.flush())
                    .context("cannot write to the terminal")?;
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("cannot read the session's terminal"),
        }
    }
    Ok(true)
}

/// Writes what the pty takes of `pending` now and keeps the rest.
fn write_some(master: &OwnedFd, pending: &mut Vec<u8>) {
    while !pending.is_empty() {
        match nix::unistd::write(master, pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                pending.clear();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_of_output_is_bounded_however_much_is_waiting() {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&rd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
        let chunk = vec![b'y'; 8192];
        for _ in 0..6 {
            nix::unistd::write(&wr, &chunk).unwrap();
        }
        let mut sink = Vec::new();
        let mut buf = vec![0u8; 16384];
        assert!(copy_out(&rd, &mut sink, &mut buf, 1).unwrap());
        assert_eq!(
            sink.len(),
            16384,
            "one read, then back to the other descriptors"
        );
        assert!(copy_out(&rd, &mut sink, &mut buf, 64).unwrap());
        assert_eq!(sink.len(), 6 * 8192, "the rest, up to EAGAIN");
        drop(wr);
        assert!(!copy_out(&rd, &mut sink, &mut buf, 64).unwrap(), "closed");
    }
}
