//! What the host tells a VM's `/init` at boot, and what `/init` answers. The guest connects to
//! the host's vsock port `BOOT_PORT` as soon as its vsock driver is loaded; the host sends one
//! `BootConfig` (a JSON line) and the guest answers one `BootReply` once its agent listens on
//! `agent_port`. The connection then stays open for the VM's life. The kernel command line
//! carries nothing but the console: everything else is here, so every hypervisor passes it
//! the same way.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The host port the guest's `/init` connects to.
pub const BOOT_PORT: u32 = 1025;
/// The guest port its agent listens on (apple/container's vminitd uses the same).
pub const AGENT_PORT: u32 = 1024;
/// The guest's CID (each VM has a vsock device of its own).
pub const GUEST_CID: u32 = 3;

/// Where a guest mount comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSource {
    /// The disk whose id (virtio serial) is `id`, holding a filesystem of type `fstype`.
    Disk { id: String, fstype: String },
    /// The virtio-fs share tagged `tag`.
    Share { tag: String },
}

/// A mount in the environment's root, done in order (parents first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub source: MountSource,
    /// An absolute path inside the environment.
    pub target: PathBuf,
    pub read_only: bool,
}

/// The host's instructions to the guest's `/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootConfig {
    /// The host's agentenv version: a guest of another version refuses to serve it.
    pub software: String,
    /// The host's clock (the guest has no RTC under Virtualization.framework, nor a right one
    /// under QEMU until told): seconds and nanoseconds since the epoch.
    pub time_secs: i64,
    pub time_nanos: u32,
    /// The disk holding the guest's root (read-only, with an overlay on top).
    pub root_disk: String,
    pub mounts: Vec<GuestMount>,
    pub hostname: String,
    pub agent_port: u32,
}

/// The guest's answer: ready to serve, or why not (with the console's story on the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BootReply {
    Ready {
        /// `uname -m` inside.
        machine: String,
        kernel: String,
    },
    Failed {
        message: String,
    },
}

/// `agentenv <version>`, as both ends compare it.
pub fn software() -> String {
    format!("agentenv {}", env!("CARGO_PKG_VERSION"))
}

impl BootConfig {
    /// The host's clock now.
    pub fn now(root_disk: &str, mounts: Vec<GuestMount>, hostname: &str) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            software: software(),
            time_secs: now.as_secs() as i64,
            time_nanos: now.subsec_nanos(),
            root_disk: root_disk.to_string(),
            mounts,
            hostname: hostname.to_string(),
            agent_port: AGENT_PORT,
        }
    }
}

/// Logs a boot phase with its time since `since`: what `-v` shows of a VM's start (VM created,
/// kernel started, agent ready, dev env ready), whatever the hypervisor.
pub fn phase(name: &str, since: std::time::Instant) {
    tracing::debug!(
        "boot phase: {name} after {} ms",
        since.elapsed().as_millis()
    );
}

/// The last `lines` lines of a file, for the messages about a VM that did not come up.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Why the boot exchange failed, for the caller to tell with the console's story.
#[derive(Debug)]
pub enum ExchangeError {
    /// The VM stopped, or never answered within the deadline: what happened.
    NoGuest(String),
    /// The host's side failed (accept, write): not the guest's fault.
    Host(std::io::Error),
}

/// The host's side of the boot exchange, the same for every hypervisor: waits on `listener`
/// (the host port `BOOT_PORT`'s listener) for the guest's connection, sends `config`, and
/// reads the guest's answer, all before `deadline`. `vm_gone` is asked between polls whether
/// the VM has stopped (and why).
pub fn exchange(
    listener: &std::os::unix::net::UnixListener,
    config: &BootConfig,
    deadline: std::time::Instant,
    mut vm_gone: impl FnMut() -> Option<String>,
) -> Result<(std::os::unix::net::UnixStream, BootReply), ExchangeError> {
    use std::io::{BufRead, BufReader, Write};
    use std::time::{Duration, Instant};
    listener
        .set_nonblocking(true)
        .map_err(ExchangeError::Host)?;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ExchangeError::Host(e)),
        }
        if let Some(why) = vm_gone() {
            return Err(ExchangeError::NoGuest(format!(
                "{why} before the guest answered"
            )));
        }
        if Instant::now() > deadline {
            return Err(ExchangeError::NoGuest(
                "the VM did not come up in time".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    conn.set_nonblocking(false).map_err(ExchangeError::Host)?;
    let mut line = serde_json::to_vec(config).map_err(|e| ExchangeError::Host(e.into()))?;
    line.push(b'\n');
    (&conn).write_all(&line).map_err(ExchangeError::Host)?;
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    conn.set_read_timeout(Some(remaining))
        .map_err(ExchangeError::Host)?;
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .map_err(|e| ExchangeError::NoGuest(format!("no answer from the guest: {e}")))?;
    conn.set_read_timeout(None).map_err(ExchangeError::Host)?;
    let reply: BootReply = serde_json::from_str(&answer)
        .map_err(|_| ExchangeError::NoGuest("the guest's boot answer is malformed".into()))?;
    Ok((conn, reply))
}

/// Asks the guest to stop by ending the boot connection: shut down, not only closed, since
/// the clock's thread holds a second descriptor of it.
pub fn ask_to_stop(conn: std::os::unix::net::UnixStream) {
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_config_is_one_json_line() {
        let c = BootConfig::now(
            "root",
            vec![GuestMount {
                source: MountSource::Share {
                    tag: "project".into(),
                },
                target: "/src/app".into(),
                read_only: false,
            }],
            "app",
        );
        let line = serde_json::to_string(&c).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<BootConfig>(&line).unwrap(), c);
        assert!(c.time_secs > 1_700_000_000);
    }
}
