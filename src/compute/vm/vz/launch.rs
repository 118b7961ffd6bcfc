//! Starting a VM on a Mac, the twin of `vm::launch` on Linux: one machine process (agentenv
//! itself holding the VZ VM, `host`) in place of QEMU and its helpers, then the same boot
//! exchange over vsock. Dropping the `Vm` ends the machine process (it stops the VM) and
//! removes its run directory.

use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::host::MACHINE_ENV;
use super::plan::{check_kernel, plan};
use crate::compute::vm::boot::{exchange, tail, BootConfig, BootReply, ExchangeError, BOOT_PORT};
use crate::compute::vm::spec::{Console, VmSpec};
use crate::diag::Diagnostic;

/// How long a VM may take to answer at boot (VZ boots in about a second).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running VM: its machine process and the boot connection held open for its life.
pub struct Vm {
    pub spec: VmSpec,
    pub run_dir: PathBuf,
    machine: Option<Child>,
    /// Held open for the VM's life: the guest powers off when it closes.
    boot_conn: Option<UnixStream>,
    pub reply: Option<BootReply>,
    pub boot_time: Duration,
}

impl Vm {
    /// Starts `spec` with its sockets, description and logs in `run_dir` (created, and removed
    /// when the VM is dropped), sends `config` at boot and waits for the guest's answer.
    pub fn start(spec: VmSpec, run_dir: &Path, config: &BootConfig) -> Result<Vm> {
        // What VZ would refuse, refused here with a reason it would not give.
        plan(&spec)?;
        check_kernel(&spec.kernel)?;
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let started = Instant::now();
        let started_wall = std::time::SystemTime::now();
        let description = run_dir.join("vm.json");
        crate::util::write_atomic(&description, &serde_json::to_vec(&spec)?)?;

        let boot_listener_path = spec.vsock.host_listener(BOOT_PORT);
        let _ = std::fs::remove_file(&boot_listener_path);
        let listener = UnixListener::bind(&boot_listener_path)
            .with_context(|| format!("cannot listen on {}", boot_listener_path.display()))?;

        let log_path = run_dir.join("machine.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let exe = std::env::current_exe().context("cannot find agentenv's own binary")?;
        let child = Command::new(&exe)
            // Shown by ps as the VM's name, as QEMU's `-name process=` does on Linux.
            .arg0(&spec.name)
            .env(MACHINE_ENV, &description)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let mut vm = Vm {
            spec,
            run_dir: run_dir.to_path_buf(),
            machine: Some(child),
            boot_conn: None,
            reply: None,
            boot_time: Duration::ZERO,
        };
        let machine = vm.machine.as_mut().expect("just set");
        let exchanged = exchange(&listener, config, started + BOOT_TIMEOUT, || match machine
            .try_wait()
        {
            Ok(Some(status)) => Some(format!("the VM's machine process exited ({status})")),
            _ => None,
        });
        drop(listener);
        let _ = std::fs::remove_file(&boot_listener_path);
        let (conn, reply) = match exchanged {
            Ok(r) => r,
            Err(ExchangeError::NoGuest(what)) => return Err(vm.boot_failure(&what)),
            Err(ExchangeError::Host(e)) => {
                return Err(e).context("the boot exchange with the guest failed")
            }
        };
        if let BootReply::Failed { message } = &reply {
            return Err(vm.boot_failure(&format!("the guest could not start: {message}")));
        }
        // The guest has no clock of its own: it follows the host's after sleep too.
        if let Ok(c) = conn.try_clone() {
            crate::compute::vm::clock::keep_in_step(c);
        }
        vm.boot_conn = Some(conn);
        vm.reply = Some(reply);
        vm.boot_time = started.elapsed();
        vm.report_machine_phases(started_wall);
        Ok(vm)
    }

    /// The machine process's boot phases (VM created, kernel started), logged for `-v` with
    /// their times since this launch began.
    fn report_machine_phases(&self, started: std::time::SystemTime) {
        let since = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let log = std::fs::read_to_string(self.run_dir.join("machine.log")).unwrap_or_default();
        for (ms, name) in log
            .lines()
            .filter_map(|l| l.strip_prefix(super::host::PHASE_PREFIX)?.split_once(' '))
        {
            if let Ok(ms) = ms.parse::<u128>() {
                tracing::debug!("boot phase: {name} after {} ms", ms.saturating_sub(since));
            }
        }
    }

    /// An error for a VM that did not come up, with the console's and the machine process's
    /// last lines, and the signing fix when VZ refused for want of the entitlement.
    fn boot_failure(&self, what: &str) -> anyhow::Error {
        let mut d = Diagnostic::new(format!("{what} ({})", self.spec.name));
        let console = match &self.spec.console {
            Console::File { path } => tail(path, 15),
            Console::None => String::new(),
        };
        let machine = tail(&self.run_dir.join("machine.log"), 10);
        for (name, text) in [("console", &console), ("machine", &machine)] {
            if !text.trim().is_empty() {
                d = d.detail(format!("{name}:"));
                for l in text.lines() {
                    d = d.detail(format!("  {l}"));
                }
            }
        }
        if machine.contains("VZErrorDomain 2)") || machine.contains("entitlement") {
            let exe = std::env::current_exe().unwrap_or_else(|_| "agentenv".into());
            return d.hint(super::entitlement::sign_hint(&exe)).into();
        }
        d.hint("check the VM assets with `agentenv doctor`; `agentenv vm setup DIR` installs a fresh set")
            .into()
    }

    /// Where the guest agent answers: its vsock port, through the machine process's socket.
    pub fn agent(&self) -> crate::transport::AgentAddress {
        crate::transport::AgentAddress::HybridVsock {
            path: self.spec.vsock.host_socket.clone(),
            port: crate::compute::vm::boot::AGENT_PORT,
        }
    }

    /// Sets the guest's clock now (as after the host slept): one line on the boot connection.
    pub fn push_clock(&self, update: crate::compute::vm::clock::ClockUpdate) -> Result<()> {
        let mut conn = self
            .boot_conn
            .as_ref()
            .context("the VM has no boot connection")?;
        std::io::Write::write_all(&mut conn, &update.line()).context("cannot reach the guest")
    }

    /// The host-side process of the VM (the machine process).
    pub fn pids(&self) -> Vec<u32> {
        self.machine.iter().map(|c| c.id()).collect()
    }

    /// Waits up to `timeout` for the machine process to exit (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.machine.as_mut().map(|m| m.try_wait()) {
                None | Some(Ok(Some(_))) => return true,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Closing the boot connection asks the guest to stop; SIGTERM makes the machine
        // process stop the VM if it has not.
        if let Some(conn) = self.boot_conn.take() {
            crate::compute::vm::boot::ask_to_stop(conn);
        }
        if !self.wait_exit(Duration::from_millis(500)) {
            if let Some(m) = &self.machine {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(m.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if !self.wait_exit(Duration::from_secs(6)) {
                if let Some(m) = self.machine.as_mut() {
                    let _ = m.kill();
                }
            }
        }
        if let Some(m) = self.machine.as_mut() {
            let _ = m.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
