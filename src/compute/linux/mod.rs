//! The Linux backend: an environment is a set of fresh namespaces (user, PID,
//! mount, UTS, IPC, and net when cut off) around a root built from a plan. The host side
//! forks PID 1, which enters the namespaces and runs the guest (`guest::entry`) with its spec,
//! and learns through a pipe whether its setup worked; for a one-shot command it then waits
//! and forwards signals, for a persistent environment it leaves it running.

pub mod doctor;
pub mod plan;
pub mod userns;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::compute::{AgentSetup, Backend, Instance, Network, SandboxSpec};
use crate::diag::Diagnostic;
use crate::guest::entry::{run_guest, GuestIo, GuestSpec, GuestWork, Listen, READY};
use crate::guest::init::report_error;
use crate::guest::launch::Launch;
use crate::guest::rootfs::RootfsPlan;
use crate::process::{block_supervised_signals, supervise, Reap};
use plan::{plan_rootfs, HostFacts};
use userns::{enter_user_namespace, unshare_refused, IdMode};

/// Namespaces on the local kernel: the `namespaces` backend.
pub struct LinuxNamespaces;

impl Backend for LinuxNamespaces {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    /// What a sysctl says; the kernel's own verdict comes at `unshare` (and from `doctor`).
    fn available(&self) -> Result<(), Diagnostic> {
        match IdMode::detect()
            .userns()
            .then(userns::userns_blocker)
            .flatten()
        {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    fn checks(&self) -> Vec<crate::compute::Check> {
        doctor::checks()
    }

    fn run(&self, spec: &SandboxSpec, launch: &Launch) -> Result<i32> {
        run_in_front(
            spec,
            GuestWork::Run {
                launch: launch.clone(),
            },
        )
    }

    /// `run` enters the user and PID namespaces in the calling process, which works once: a
    /// process cannot leave a user namespace, and its PID namespace for children dies with
    /// that environment's PID 1. So here `run` happens in a child of its own.
    fn run_aside(&self, spec: &SandboxSpec, launch: &Launch) -> Result<i32> {
        block_supervised_signals()?;
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        // SAFETY: agentenv is single-threaded here (no runtime, no helper threads), so the
        // child can run ordinary code until it exits.
        match unsafe { fork() }.context("cannot fork")? {
            ForkResult::Child => {
                drop(read_end);
                let code = self.run(spec, launch).unwrap_or_else(|e| {
                    report_error(&write_end, &e);
                    1
                });
                // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                // The child forwards signals on to the environment as `run` does.
                let code = supervise(child, Reap::Child)?;
                // Everything that held the pipe's write end has exited by now.
                match read_setup_error(read_end)? {
                    Some(diag) => Err(diag.into()),
                    None => Ok(code),
                }
            }
        }
    }

    fn start(&self, spec: &SandboxSpec, agent: AgentSetup) -> Result<Instance> {
        let AgentSetup { dir, log } = agent;
        let socket = dir.join("agent.sock");
        let listener = crate::transport::unix::bind_owner_only(&socket)?;
        let (child, report) = fork_pid1(spec, |plan, pipe| {
            let setup = (|| -> Result<()> {
                // Its own session: no terminal of the caller's can stop or hang it up.
                nix::unistd::setsid().context("cannot start a session")?;
                let null = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?;
                for (from, to) in [
                    (null.as_raw_fd(), 0),
                    (null.as_raw_fd(), 1),
                    (log.as_raw_fd(), 2),
                ] {
                    // SAFETY: dup2 onto the standard descriptors of this single-threaded child.
                    if unsafe { libc::dup2(from, to) } < 0 {
                        return Err(std::io::Error::last_os_error())
                            .context("cannot redirect stdio");
                    }
                }
                finish_sandbox(spec)
            })();
            if let Err(e) = setup {
                report_error(&pipe, &e);
                return 1;
            }
            let work = GuestWork::Serve {
                listen: Listen::Handed,
            };
            let io = GuestIo {
                report: Some(pipe),
                listener: Some(listener),
            };
            run_guest(&guest_spec(plan, spec, work), io)
        })?;
        if let Some(diag) = parse_report(&report, true) {
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(diag.into());
        }
        Ok(Instance::of_process(
            child.as_raw(),
            crate::transport::AgentAddress::Unix { path: socket },
        ))
    }
}

impl LinuxNamespaces {
    /// Runs an environment built from `spec` whose agent serves one connection on this
    /// process's stdin and stdout (a session started over ssh, `dispatch --isolated`), and
    /// waits for it to end; returns the agent's exit code. Like `run`, this works once.
    pub fn serve_stdio(&self, spec: &SandboxSpec) -> Result<i32> {
        run_in_front(
            spec,
            GuestWork::Serve {
                listen: Listen::Stdio,
            },
        )
    }
}

/// A sandbox whose PID 1 does `work` while this process waits for it and passes signals on;
/// it dies with this process.
fn run_in_front(spec: &SandboxSpec, work: GuestWork) -> Result<i32> {
    let agent = matches!(work, GuestWork::Serve { .. });
    let (child, report) = fork_pid1(spec, |plan, pipe| {
        let setup = (|| -> Result<()> {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .context("cannot set the parent-death signal")?;
            finish_sandbox(spec)
        })();
        match setup {
            Ok(()) => {
                let io = GuestIo {
                    report: Some(pipe),
                    listener: None,
                };
                run_guest(&guest_spec(plan, spec, work), io)
            }
            Err(e) => {
                report_error(&pipe, &e);
                1
            }
        }
    })?;
    if let Some(diag) = parse_report(&report, agent) {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(diag.into());
    }
    supervise(child, Reap::Child)
}

/// Enters the user and PID namespaces, creates the environment's directories, forks PID 1
/// running `body`, and returns it with what it reported on the start-up pipe.
fn fork_pid1(
    spec: &SandboxSpec,
    body: impl FnOnce(&RootfsPlan, OwnedFd) -> i32,
) -> Result<(Pid, Vec<u8>)> {
    let mode = IdMode::detect();
    let plan = plan_rootfs(spec, &HostFacts::read(spec.network), mode.userns());
    tracing::debug!(?mode, ops = plan.ops.len(), "starting sandbox");

    block_supervised_signals()?;
    // The user namespace (for privilege) and the PID namespace (for the children) are entered
    // here; PID 1 unshares the rest itself, so this process keeps the host's mounts.
    enter_user_namespace(mode, CloneFlags::CLONE_NEWPID)?;
    for dir in &spec.create_dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: agentenv is single-threaded here (no runtime, no helper threads), so the
    // child can run ordinary code until it execs or exits.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(read_end);
            let code = body(&plan, write_end);
            // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut report = Vec::new();
            std::fs::File::from(read_end)
                .read_to_end(&mut report)
                .context("cannot read the sandbox's start-up report")?;
            Ok((child, report))
        }
    }
}

/// What the guest does in the sandbox: builds `plan` as its root, then `work`.
fn guest_spec(plan: &RootfsPlan, spec: &SandboxSpec, work: GuestWork) -> GuestSpec {
    GuestSpec {
        root: Some(plan.clone()),
        hostname: Some(spec.hostname.clone()),
        lock_down: true,
        work,
    }
}

/// In PID 1, before the guest runs: the remaining namespaces.
fn finish_sandbox(spec: &SandboxSpec) -> Result<()> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| unshare_refused(e, IdMode::detect()))?;
    if spec.network == Network::None {
        bring_up_loopback()?;
    }
    Ok(())
}

/// Reads what a forked child reported on its start-up pipe before exec'ing: nothing means it
/// started.
pub(crate) fn read_setup_error(read_end: OwnedFd) -> Result<Option<Diagnostic>> {
    let mut report = Vec::new();
    std::fs::File::from(read_end)
        .read_to_end(&mut report)
        .context("cannot read the start-up report")?;
    Ok(parse_report(&report, false))
}

/// What PID 1 reported: nothing means a command started; an agent says READY.
fn parse_report(report: &[u8], agent: bool) -> Option<Diagnostic> {
    match report {
        [] if !agent => None,
        r if agent && r == READY => None,
        [] => Some(
            Diagnostic::new("the environment's agent exited while starting")
                .hint("see the agent's log in the environment's runtime directory"),
        ),
        r => Some(
            serde_json::from_slice(r)
                .unwrap_or_else(|_| Diagnostic::new(String::from_utf8_lossy(r).into_owned())),
        ),
    }
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
    let raw = sock.as_raw_fd();
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
