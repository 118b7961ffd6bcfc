//! The Linux backend: an environment is a set of fresh namespaces (user when not root, PID,
//! mount, UTS, IPC, and net when cut off) around a root built from a plan. The host side
//! forks PID 1, learns through a pipe whether the setup worked, and then only waits and
//! forwards signals.

pub mod plan;
pub mod userns;

use std::io::Read;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{fork, pipe2, ForkResult};

use crate::compute::{Compute, Network, SandboxSpec};
use crate::diag::Diagnostic;
use crate::guest::init::{report_error, run_init};
use crate::guest::rootfs::{build_root, RootfsPlan};
use crate::guest::syscall::{LinuxSyscall, Syscall};
use crate::process::{block_supervised_signals, supervise, Reap};
use plan::{plan_rootfs, HostFacts};
use userns::{unshare_refused, write_id_maps, IdMode};

/// Namespaces on the local kernel.
pub struct LinuxNamespaces;

impl Compute for LinuxNamespaces {
    fn run(&self, spec: &SandboxSpec) -> Result<i32> {
        let mode = IdMode::detect();
        let plan = plan_rootfs(spec, &HostFacts::read(spec.network), mode.userns());
        tracing::debug!(?mode, ops = plan.ops.len(), "starting sandbox");

        block_supervised_signals()?;
        // The user namespace (for privilege) and the PID namespace (for the children) are
        // entered here; PID 1 unshares the rest itself, so this process keeps the host's mounts.
        let mut flags = CloneFlags::CLONE_NEWPID;
        if mode.userns() {
            flags |= CloneFlags::CLONE_NEWUSER;
        }
        unshare(flags).map_err(|e| unshare_refused(e, mode))?;
        if let IdMode::UserNamespace { uid, gid } = mode {
            write_id_maps(uid, gid)?;
        }
        for dir in &spec.create_dirs {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }

        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        // SAFETY: agentenv is single-threaded here (no runtime, no helper threads), so the
        // child can run ordinary code until it execs or exits.
        match unsafe { fork() }.context("cannot fork")? {
            ForkResult::Child => {
                drop(read_end);
                let code = sandbox_init(&plan, spec, write_end);
                // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                if let Some(diag) = read_setup_error(read_end)? {
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Err(diag.into());
                }
                supervise(child, Reap::Child)
            }
        }
    }
}

/// PID 1: finishes the namespaces, builds the root, then runs the command as init.
fn sandbox_init(plan: &RootfsPlan, spec: &SandboxSpec, error_pipe: OwnedFd) -> i32 {
    let sys = LinuxSyscall;
    let setup = (|| -> Result<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .context("cannot set the parent-death signal")?;
        let mut flags =
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
        if spec.network == Network::None {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        unshare(flags).map_err(|e| unshare_refused(e, IdMode::detect()))?;
        if spec.network == Network::None {
            bring_up_loopback()?;
        }
        build_root(plan, &sys)?;
        sys.sethostname(&spec.hostname)
    })();
    if let Err(e) = setup {
        report_error(&error_pipe, &e);
        return 1;
    }
    run_init(&spec.launch, error_pipe, &sys)
}

/// Reads what PID 1 reported before its command started: nothing means it started.
pub(crate) fn read_setup_error(read_end: OwnedFd) -> Result<Option<Diagnostic>> {
    let mut data = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut data)
        .context("cannot read the sandbox's start-up report")?;
    if data.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&data).unwrap_or_else(|_| {
        Diagnostic::new(String::from_utf8_lossy(&data).into_owned())
    })))
}

/// A new network namespace has only `lo`, and it is down.
fn bring_up_loopback() -> Result<()> {
    // SAFETY: socket(2) with constant arguments; the fd is wrapped at once so it is closed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot open a socket to configure lo");
    }
    // SAFETY: fd is a fresh, valid descriptor owned by nothing else.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only `req`, which outlives the calls;
    // the union member ifru_flags is the one these requests use.
    unsafe {
        if libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot read the flags of lo");
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot bring lo up");
        }
    }
    Ok(())
}
