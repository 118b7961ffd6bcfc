//! Starting a VM on a Linux host: the helpers, then QEMU, each tied to this process's life
//! (PR_SET_PDEATHSIG: a `kill -9` of agentenv takes them along), the boot exchange over vsock
//! with a deadline (a VM that does not come up is an error showing its console's tail), and
//! connections to the guest's ports. Dropping the `Vm` ends every process and removes its
//! run directory.

use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::boot::{BootConfig, BootReply, BOOT_PORT};
use super::qemu::{self, Accel, Cmd, Plan, Tools};
use super::spec::{Console, VmSpec};
use crate::diag::Diagnostic;

/// How long a VM may take to answer at boot (TCG is slow; KVM takes well under a second).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a guest may take to power off once asked (TCG is slow at it too).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

impl Tools {
    /// Finds QEMU for `arch` on PATH, and the helpers on PATH or in `~/.cargo/bin` (where
    /// `cargo install` puts them). The error names what is missing and how to get it.
    pub fn find(arch: super::spec::Arch) -> Result<Self> {
        let qemu_name = qemu::qemu_program(arch);
        let qemu = find_program(qemu_name).ok_or_else(|| {
            Diagnostic::new(format!("{qemu_name} is not installed")).hint(
                "install it: apt-get install qemu-system-arm (aarch64 guests) or qemu-system-x86",
            )
        })?;
        let virtiofsd = find_program("virtiofsd").ok_or_else(|| {
            Diagnostic::new("virtiofsd is not installed (the VM's project and profile shares need it)")
                .hint("install it: apt-get install libseccomp-dev libcap-ng-dev && cargo install --locked virtiofsd")
        })?;
        let vsock = find_program("vhost-device-vsock").ok_or_else(|| {
            Diagnostic::new(
                "vhost-device-vsock is not installed (the VM's agent is reached through it)",
            )
            .hint("install it: cargo install vhost-device-vsock")
        })?;
        Ok(Self {
            qemu,
            virtiofsd,
            vsock,
        })
    }
}

/// `name` on PATH, else in `$CARGO_HOME/bin` or `~/.cargo/bin`; also a few sbin directories
/// (Debian ships some helpers in /usr/libexec).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(c) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(c).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.push("/usr/libexec".into());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running VM and its helpers.
pub struct Vm {
    pub spec: VmSpec,
    pub run_dir: PathBuf,
    pub accel: Accel,
    qemu: Option<Child>,
    helpers: Vec<Child>,
    /// Held open for the VM's life: the guest powers off when it closes.
    boot_conn: Option<UnixStream>,
    pub reply: Option<BootReply>,
    pub boot_time: Duration,
}

/// Ends the child with the caller (SIGKILL when the thread that spawned it exits).
fn tie_to_parent(cmd: &mut Command) {
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal would come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn spawn(cmd: &Cmd, log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot create {}", log.display()))?;
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    tie_to_parent(&mut c);
    c.spawn()
        .with_context(|| format!("cannot start {}", cmd.program.display()))
}

pub use super::boot::tail;

/// What the kernel said last: its panic line where it panicked (the stack trace after it is
/// noise to a user), else its last lines.
fn kernel_story(path: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    match text.lines().find(|l| l.contains("Kernel panic")) {
        Some(panic) => panic.trim().to_string(),
        None => tail(path, 10),
    }
}

impl Vm {
    /// Starts `spec` with its helpers' sockets and logs in `run_dir` (created, and removed
    /// again when the VM is dropped), sends `config` at boot and waits for the guest's answer.
    pub fn start(spec: VmSpec, tools: &Tools, run_dir: &Path, config: &BootConfig) -> Result<Vm> {
        spec.validate()
            .map_err(|e| anyhow::anyhow!("invalid VM description: {e}"))?;
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let accel = Accel::detect(spec.arch);
        if accel == Accel::Tcg {
            eprintln!(
                "agentenv: warning: no KVM for {} guests here: the VM is emulated (TCG), and slow",
                spec.arch
            );
        }
        let plan = qemu::plan(&spec, tools, accel, run_dir);
        let started = Instant::now();
        let mut vm = Vm {
            spec,
            run_dir: run_dir.to_path_buf(),
            accel,
            qemu: None,
            helpers: Vec::new(),
            boot_conn: None,
            reply: None,
            boot_time: Duration::ZERO,
        };
        vm.boot(&plan, config, started)?;
        Ok(vm)
    }

    fn boot(&mut self, plan: &Plan, config: &BootConfig, started: Instant) -> Result<()> {
        for (i, h) in plan.helpers.iter().enumerate() {
            let log = self.run_dir.join(format!("helper{i}.log"));
            let _ = std::fs::remove_file(&h.socket);
            let mut child = spawn(&h.cmd, &log)?;
            wait_for_socket(&h.socket, &mut child, &log)?;
            self.helpers.push(child);
        }
        let boot_listener_path = self.spec.vsock.host_listener(BOOT_PORT);
        let _ = std::fs::remove_file(&boot_listener_path);
        let listener = UnixListener::bind(&boot_listener_path)
            .with_context(|| format!("cannot listen on {}", boot_listener_path.display()))?;
        listener.set_nonblocking(true)?;
        let qemu = self
            .qemu
            .insert(spawn(&plan.qemu, &self.run_dir.join("qemu.log"))?);

        let deadline = started + BOOT_TIMEOUT;
        let exchanged =
            super::boot::exchange(&listener, config, deadline, || match qemu.try_wait() {
                Ok(Some(status)) => Some(format!("QEMU exited ({status})")),
                _ => None,
            });
        drop(listener);
        let _ = std::fs::remove_file(&boot_listener_path);
        let (conn, reply) = match exchanged {
            Ok(r) => r,
            Err(super::boot::ExchangeError::NoGuest(what)) => return Err(self.boot_failure(&what)),
            Err(super::boot::ExchangeError::Host(e)) => {
                return Err(e).context("the boot exchange with the guest failed")
            }
        };
        if let BootReply::Failed { message } = &reply {
            return Err(self.boot_failure(&format!("the guest could not start: {message}")));
        }
        // The guest has no clock of its own: it follows the host's after sleep too.
        if let Ok(c) = conn.try_clone() {
            super::clock::keep_in_step(c);
        }
        self.boot_conn = Some(conn);
        self.reply = Some(reply);
        self.boot_time = started.elapsed();
        Ok(())
    }

    /// An error for a VM that did not come up, with the console's last lines.
    fn boot_failure(&self, what: &str) -> anyhow::Error {
        let mut d = Diagnostic::new(format!("{what} ({})", self.spec.name));
        let console = match &self.spec.console {
            Console::File { path } => tail(path, 15),
            Console::None => String::new(),
        };
        let kernel = kernel_story(&self.run_dir.join("kernel.log"));
        let qemu = tail(&self.run_dir.join("qemu.log"), 5);
        for (name, text) in [("console", console), ("kernel", kernel), ("qemu", qemu)] {
            if !text.trim().is_empty() {
                d = d.detail(format!("{name}:"));
                for l in text.lines() {
                    d = d.detail(format!("  {l}"));
                }
            }
        }
        d.hint("check the VM assets with `agentenv doctor`; `agentenv vm setup DIR` installs a fresh set")
            .into()
    }

    /// Where the guest agent answers: its vsock port, through the VM's hybrid socket.
    pub fn agent(&self) -> crate::transport::AgentAddress {
        crate::transport::AgentAddress::HybridVsock {
            path: self.spec.vsock.host_socket.clone(),
            port: super::boot::AGENT_PORT,
        }
    }

    /// Sets the guest's clock now (as after the host slept): one line on the boot connection.
    pub fn push_clock(&self, update: super::clock::ClockUpdate) -> Result<()> {
        let mut conn = self
            .boot_conn
            .as_ref()
            .context("the VM has no boot connection")?;
        std::io::Write::write_all(&mut conn, &update.line()).context("cannot reach the guest")
    }

    /// Every host-side process of the VM (QEMU and helpers).
    pub fn pids(&self) -> Vec<u32> {
        self.qemu
            .iter()
            .chain(self.helpers.iter())
            .map(|c| c.id())
            .collect()
    }

    /// Waits up to `timeout` for QEMU to exit (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.qemu.as_mut().map(|q| q.try_wait()) {
                None | Some(Ok(Some(_))) => return true,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn wait_for_socket(socket: &Path, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if let Some(status) = child.try_wait()? {
            return Err(Diagnostic::new(format!(
                "a VM helper exited ({status}) before it listened"
            ))
            .detail(tail(log, 5))
            .into());
        }
        if Instant::now() > deadline {
            return Err(Diagnostic::new(format!(
                "a VM helper did not create {}",
                socket.display()
            ))
            .detail(tail(log, 5))
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Closing the boot connection asks the guest to stop: its processes end, its disks
        // are synced and it powers off. Killing QEMU before that could lose what the guest
        // wrote to the environment's /nix disk.
        if let Some(conn) = self.boot_conn.take() {
            super::boot::ask_to_stop(conn);
        }
        if !self.wait_exit(SHUTDOWN_TIMEOUT) {
            if let Some(q) = self.qemu.as_mut() {
                let _ = q.kill();
            }
        }
        if let Some(q) = self.qemu.as_mut() {
            let _ = q.wait();
        }
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
