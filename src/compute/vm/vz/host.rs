//! The VZ machine process: agentenv itself, started with `MACHINE_ENV` naming a `VmSpec` file,
//! holding one Virtualization.framework VM for as long as it runs. To the rest of the VM
//! backend it is what QEMU and its vsock helper are on Linux: the VM's vsock is the hybrid
//! socket `vsock.host_socket`, a guest connection to host port P reaches `host_socket_P`, the
//! console goes to its file, and the VM ends with the process (SIGTERM, SIGINT, SIGHUP, or the
//! parent gone) or the process with the VM (the guest powered off).

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

use super::machine::{Machine, State};
use super::plan::{check_kernel, plan};
use crate::compute::vm::spec::VmSpec;

/// Set to a `VmSpec` JSON file: this process is that VM's machine process.
pub const MACHINE_ENV: &str = "AGENTENV_VZ_MACHINE";

/// How long VZ may take to hand the kernel control.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one host connection waits for the guest to accept it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the machine process for the spec in `spec_path`; its exit code.
pub fn main(spec_path: &Path) -> i32 {
    match run(spec_path) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(spec_path: &Path) -> Result<()> {
    let spec: VmSpec = serde_json::from_slice(
        &std::fs::read(spec_path)
            .with_context(|| format!("cannot read {}", spec_path.display()))?,
    )
    .with_context(|| format!("{} is not a VM description", spec_path.display()))?;
    let plan = plan(&spec)?;
    check_kernel(&plan.kernel)?;

    // Signals are taken by one thread; every thread started from here on has them blocked.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("cannot block signals")?;

    let mut machine = Machine::create(&plan)?;
    phase("VM created");
    for &port in &plan.vsock.host_ports {
        let target = spec.vsock.host_listener(port);
        machine.listen(
            port,
            Box::new(move |guest| {
                let target = target.clone();
                std::thread::spawn(move || match UnixStream::connect(&target) {
                    Ok(host) => crate::compute::vm::hybrid::relay(host, UnixStream::from(guest)),
                    Err(e) => tracing::warn!("guest connection to {}: {e}", target.display()),
                });
            }),
        )?;
    }
    let socket = &plan.vsock.host_socket;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;

    let machine = Arc::new(machine);
    machine.start(START_TIMEOUT)?;
    phase("kernel started");

    let m = Arc::clone(&machine);
    std::thread::spawn(move || {
        crate::compute::vm::hybrid::serve(listener, move |port| m.connect(port, CONNECT_TIMEOUT))
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            let _ = tx.send(sig);
        }
    });

    let parent = nix::unistd::getppid();
    let why = loop {
        if let Ok(sig) = rx.recv_timeout(Duration::from_millis(100)) {
            break format!("{sig}");
        }
        if machine.state() == State::Stopped {
            break "the guest powered off".to_string();
        }
        // No PR_SET_PDEATHSIG here: a parent gone means this process is re-parented.
        if nix::unistd::getppid() != parent {
            break "agentenv, which started the VM, is gone".to_string();
        }
    };
    tracing::debug!("stopping the VM: {why}");
    let stopped = machine.stop(Duration::from_secs(5));
    let _ = std::fs::remove_file(socket);
    stopped
}

/// The prefix of a phase line in the machine process's log; `launch` reads them back for `-v`.
pub const PHASE_PREFIX: &str = "agentenv-phase ";

/// Notes a boot phase in the log (stderr) with its wall-clock time in milliseconds: the
/// launcher, in another process, puts it in its own timeline.
fn phase(name: &str) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    eprintln!("{PHASE_PREFIX}{ms} {name}");
}
