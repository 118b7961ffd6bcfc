//! The user namespace every sandbox runs in, and its id mappings: root's maps every id to
//! itself, anyone else's maps their own uid and gid to themselves. Either way processes inside
//! hold no capability in the host's user namespace. Also explains, with the exact sysctl, why
//! the kernel refused one.

use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult};

use crate::diag::Diagnostic;

/// Which ids the sandbox's user namespace maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// Root with CAP_SETUID and CAP_SETGID: every id this namespace has, mapped to itself.
    ///
    /// Why the whole range and not root alone: files in the project and the store keep their
    /// owners inside (a file of uid 1000 is uid 1000, not `nobody`), `chown` keeps working, and
    /// nix as root can still switch to its build users (nixbld, uids 30000 and up). Why that
    /// is safe: inside, root's capabilities count only in the new namespace. CAP_DAC_OVERRIDE,
    /// CAP_FOWNER and CAP_CHOWN apply to inodes whose owner and group are mapped, which with
    /// this map is every inode inside; but the only inodes inside are those the sandbox shows
    /// (the project, its own home and store view, the profile), which root on the host gave it
    /// and could write anyway. Everything that needs a capability in the host's namespace
    /// (mounting, sysctls, devices, file handles, raw I/O, modules) is refused, as it is to an
    /// unprivileged user. What remains is that root inside writes files as host uid 0: a
    /// setuid file made in the project is a host setuid-root file, as under Docker or Podman
    /// run as root.
    Root,
    /// A user namespace mapping `uid` and `gid` to themselves.
    UserNamespace { uid: u32, gid: u32 },
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_ADMIN: u32 = 21;

impl IdMode {
    pub fn detect() -> Self {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let caps = [CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID];
        if uid == 0 && caps.iter().all(|&c| has_effective_cap(c)) {
            IdMode::Root
        } else {
            IdMode::UserNamespace { uid, gid }
        }
    }

    /// Every sandbox has a user namespace; kept for callers that ask.
    pub fn userns(&self) -> bool {
        true
    }
}

/// Unshares a user namespace (with `flags` besides, e.g. CLONE_NEWPID) and maps ids in it as
/// `mode` says. Must run single-threaded.
pub fn enter_user_namespace(mode: IdMode, flags: CloneFlags) -> Result<()> {
    let flags = flags | CloneFlags::CLONE_NEWUSER;
    match mode {
        IdMode::UserNamespace { uid, gid } => {
            unshare(flags).map_err(|e| unshare_refused(e, mode))?;
            write_id_maps(uid, gid)
        }
        IdMode::Root => enter_mapping_all_ids(flags),
    }
}

/// A namespace cannot be given a map wider than its creator's own ids by a process inside it:
/// the writer needs CAP_SETUID in the parent namespace. So a helper forked beforehand, still
/// outside, writes the maps once this process has unshared.
fn enter_mapping_all_ids(flags: CloneFlags) -> Result<()> {
    let uid_map = identity_of("/proc/self/uid_map")?;
    let gid_map = identity_of("/proc/self/gid_map")?;
    let me = nix::unistd::getpid();
    let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: the caller is single-threaded (see above); the helper only reads a pipe, writes
    // two files and exits.
    let helper = match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(go_write);
            let mut byte = [0u8; 1];
            let ok = matches!(nix::unistd::read(&go_read, &mut byte), Ok(1))
                && std::fs::write(format!("/proc/{me}/uid_map"), &uid_map).is_ok()
                && std::fs::write(format!("/proc/{me}/gid_map"), &gid_map).is_ok();
            // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_read);
    let entered = unshare(flags).map_err(|e| anyhow::Error::from(unshare_refused(e, IdMode::Root)));
    // Either way the helper is told: on failure it sees the pipe close and exits.
    if entered.is_ok() {
        nix::unistd::write(&go_write, b"g").context("cannot reach the id-mapping helper")?;
    }
    drop(go_write);
    let status = waitpid(helper, None).context("cannot wait for the id-mapping helper")?;
    entered?;
    if status != WaitStatus::Exited(helper, 0) {
        anyhow::bail!("cannot map ids in the sandbox's user namespace (/proc/{me}/uid_map)");
    }
    Ok(())
}

/// The map that shows every id of the current namespace as itself: for each of its ranges,
/// `inside inside count` instead of `inside outside count`.
fn identity_of(path: &str) -> Result<String> {
    let map = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let mut out = String::new();
    for line in map.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [inside, _outside, count] = fields[..] {
            out.push_str(&format!("{inside} {inside} {count}\n"));
        }
    }
    Ok(out)
}

fn has_effective_cap(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// Maps the caller's uid and gid to themselves in the user namespace just unshared.
pub fn write_id_maps(uid: u32, gid: u32) -> Result<()> {
    let write = |path: &str, data: &str| {
        std::fs::write(path, data).with_context(|| format!("cannot write {path}"))
    };
    write("/proc/self/setgroups", "deny")?;
    write("/proc/self/uid_map", &format!("{uid} {uid} 1\n"))?;
    write("/proc/self/gid_map", &format!("{gid} {gid} 1\n"))
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The reason user namespaces are unavailable, if a sysctl says so.
pub fn userns_blocker() -> Option<Diagnostic> {
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Some(
            Diagnostic::new("user namespaces are disabled on this machine (kernel.unprivileged_userns_clone = 0)")
                .hint("`sudo sysctl -w kernel.unprivileged_userns_clone=1`, or run agentenv as root"),
        );
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Some(
            Diagnostic::new(
                "user namespaces are disabled on this machine (user.max_user_namespaces = 0)",
            )
            .hint("`sudo sysctl -w user.max_user_namespaces=15000`, or run agentenv as root"),
        );
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Some(
            Diagnostic::new("AppArmor forbids unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns = 1)")
                .hint("`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or give agentenv an AppArmor profile with `userns,`, or run it as root"),
        );
    }
    None
}

/// Explains why `unshare` failed with `errno`.
pub fn unshare_refused(errno: Errno, mode: IdMode) -> Diagnostic {
    if mode.userns() {
        if let Some(d) = userns_blocker() {
            return d;
        }
        if errno == Errno::ENOSPC {
            return Diagnostic::new(format!(
                "the kernel refused a new user namespace: the limit is reached (user.max_user_namespaces = {})",
                read_sysctl("/proc/sys/user/max_user_namespaces").unwrap_or(-1)
            ))
            .hint("raise it: `sudo sysctl -w user.max_user_namespaces=15000`");
        }
    }
    let in_container =
        Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists();
    let mut d = Diagnostic::new(format!("the kernel refused new namespaces: {errno}"));
    if in_container {
        d = d.hint("inside a container, unshare is blocked by seccomp or missing capabilities: run the container with `--privileged`, or `--security-opt seccomp=unconfined --cap-add SYS_ADMIN`");
    } else {
        d = d.hint("a security policy (seccomp, SELinux, AppArmor) blocks unshare(2); run `agentenv doctor` for details, or run agentenv as root");
    }
    d
}
