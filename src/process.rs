//! Process plumbing shared by the host side and the guest's PID 1: which signals are forwarded,
//! waiting for a child while forwarding them, and turning a wait status into an exit code.

use anyhow::{Context, Result};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
#[cfg(target_os = "linux")]
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::WaitStatus;
#[cfg(target_os = "linux")]
use nix::sys::wait::{waitpid, WaitPidFlag};
#[cfg(target_os = "linux")]
use nix::unistd::Pid;

/// Signals that a supervisor passes on to the process it watches.
pub const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
];

/// Closes every descriptor this process inherited beyond stdin, stdout and stderr. Called
/// first thing: a descriptor from the caller (a directory, a socket) would reach past the
/// sandbox into the host for any process inside that found it, as it would into an attached
/// target.
pub fn close_inherited_fds() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range(2) only closes descriptors; at start-up nothing in this process
        // refers to any above 2.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if rc == 0 {
            return;
        }
    }
    // Kernels before 5.9, and macOS: one by one, as the system lists them (the listing's own
    // fd included, which is why they are collected before any is closed).
    let listing = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    let fds: Vec<i32> = std::fs::read_dir(listing)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: closing a descriptor nothing in this process uses (see above); one already
        // closed (the listing's own) gives EBADF, which is harmless.
        unsafe {
            libc::close(fd);
        }
    }
}

/// The forwarded signals and SIGCHLD.
pub fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the supervised signals in this thread, so that none is lost between a fork and the
/// signalfd that reads them. Children inherit the mask and must call `reset_signals_for_exec`.
pub fn block_supervised_signals() -> Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&supervised_signals()), None)
        .context("cannot block signals")
}

/// Gives a process about to exec the signal state a fresh program expects: nothing blocked,
/// SIGPIPE at its default (Rust ignores it in agentenv itself).
pub fn reset_signals_for_exec() {
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: setting a default disposition installs no handler, so nothing can run in a
    // signal context; this is the standard reset between fork and exec.
    unsafe {
        let _ = signal::signal(Signal::SIGPIPE, signal::SigHandler::SigDfl);
    }
}

/// The exit code a shell would report: the code, or 128+N for a death by signal N.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Whom a supervisor reaps: only its child (an ordinary parent) or every child (PID 1, which
/// inherits orphans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    Child,
    All,
}

/// Waits for `child` while forwarding signals to it, and returns its exit code.
#[cfg(target_os = "linux")]
///
/// Only signals sent by a process are forwarded. A signal from the terminal (Ctrl-C, a window
/// resize) has already reached every process of the foreground group, the child included;
/// passing it on would deliver it twice.
pub fn supervise(child: Pid, reap: Reap) -> Result<i32> {
    let sfd = SignalFd::new(&supervised_signals()).context("cannot create a signalfd")?;
    loop {
        let info = match sfd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("cannot read signals"),
        };
        let signo = info.ssi_signo as i32;
        if signo == Signal::SIGCHLD as i32 {
            if let Some(code) = reap_children(child, reap)? {
                return Ok(code);
            }
            continue;
        }
        // SI_USER, SI_QUEUE, SI_TKILL and friends are <= 0; the kernel's own (SI_KERNEL) is not.
        if info.ssi_code <= 0 {
            if let Ok(sig) = Signal::try_from(signo) {
                let _ = signal::kill(child, sig);
            }
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn reap_children(child: Pid, reap: Reap) -> Result<Option<i32>> {
    let target = match reap {
        Reap::Child => Some(child),
        Reap::All => None,
    };
    let mut result = None;
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return Ok(result),
            Ok(status) => {
                if status.pid() == Some(child) {
                    if let Some(code) = exit_code(status) {
                        result = Some(code);
                        if reap == Reap::Child {
                            return Ok(result);
                        }
                    }
                }
            }
            Err(nix::errno::Errno::ECHILD) => return Ok(result),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("cannot wait for children"),
        }
    }
}
