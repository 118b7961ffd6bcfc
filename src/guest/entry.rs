//! The guest program's entry point, the same on every backend: it takes a `GuestSpec` (plain,
//! serialisable data), builds the root it names, and runs one command as PID 1 or serves the
//! protocol. A namespace sandbox's PID 1 gets the spec in memory from the fork that made it;
//! a VM's `/init` or a process started on a remote host reads it (`agentenv __guest --spec
//! FILE`). Making the sandbox itself (namespaces, a VM) is the backend's, not the guest's.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::agent::run_agent;
use super::init::{report_error, run_init};
use super::launch::Launch;
use super::rootfs::{build_root, RootfsPlan};
use super::syscall::{LinuxSyscall, Syscall};
use crate::transport::{Accept, OneConnection};

/// What an agent writes to its start-up report once it serves.
pub const READY: &[u8] = b"ready";

/// What the guest does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSpec {
    /// The root to build and enter first; `None` keeps the one it runs in (a VM's own image,
    /// a remote host).
    #[serde(default)]
    pub root: Option<RootfsPlan>,
    #[serde(default)]
    pub hostname: Option<String>,
    pub work: GuestWork,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestWork {
    /// Run one command as PID 1 (reaping, passing signals on) and exit with its code.
    Run { launch: Launch },
    /// Serve the protocol (a persistent environment's agent).
    Serve { listen: Listen },
}

/// Where an agent takes its connections from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Listen {
    /// A listening unix socket the host side made and handed over (`GuestIo::listener`).
    Handed,
    /// A unix socket to bind (owner-only) at `path`.
    Unix { path: PathBuf },
    /// This process's stdin and stdout, one connection (a process started over ssh).
    Stdio,
}

/// What the process that starts the guest hands it besides the spec.
pub struct GuestIo {
    /// Where start-up errors go (a JSON `Diagnostic`); closed once a command runs, and for an
    /// agent `READY` is written to it once it serves. `None`: errors go to stderr.
    pub report: Option<OwnedFd>,
    /// A listening socket the host side made (`Listen::Handed`).
    pub listener: Option<std::os::unix::net::UnixListener>,
}

impl GuestSpec {
    /// Reads a spec from a JSON file.
    pub fn read(path: &Path) -> Result<Self> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&data)
            .with_context(|| format!("{} is not a guest spec", path.display()))
    }
}

/// Runs the guest: the root, the hostname, then the work. Returns the exit code.
pub fn run_guest(spec: &GuestSpec, io: GuestIo) -> i32 {
    let sys = LinuxSyscall;
    let announce = io.report.is_some();
    let report = match io.report {
        Some(fd) => fd,
        // Errors of the command's start then go to stderr, as JSON as for a pipe.
        None => match nix::unistd::dup(std::io::stderr()) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("agentenv guest: cannot duplicate stderr: {e}");
                return 1;
            }
        },
    };
    let setup = (|| -> Result<()> {
        if let Some(plan) = &spec.root {
            build_root(plan, &sys)?;
        }
        if let Some(name) = &spec.hostname {
            sys.sethostname(name)?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        report_error(&report, &e);
        return 1;
    }
    match &spec.work {
        GuestWork::Run { launch } => run_init(launch, report, &sys),
        GuestWork::Serve { listen } => {
            let listen = listen.clone();
            let handed = io.listener;
            let ready = move || {
                if announce {
                    let _ = nix::unistd::write(&report, READY);
                }
                drop(report);
            };
            run_agent(move || acceptor(&listen, handed), ready)
        }
    }
}

/// The connections `listen` names (inside the agent's runtime).
fn acceptor(
    listen: &Listen,
    handed: Option<std::os::unix::net::UnixListener>,
) -> std::io::Result<Box<dyn Accept>> {
    let unix =
        |l| -> std::io::Result<Box<dyn Accept>> { Ok(Box::new(super::agent::unix_listener(l)?)) };
    match listen {
        Listen::Handed => match handed {
            Some(l) => unix(l),
            None => Err(std::io::Error::other("no listening socket was handed over")),
        },
        Listen::Unix { path } => unix(
            crate::transport::unix::bind_owner_only(path)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?,
        ),
        Listen::Stdio => Ok(Box::new(OneConnection::stdio())),
    }
}
