//! Who the sandbox runs as and whether it needs a user namespace: real root with
//! CAP_SYS_ADMIN needs none; anyone else gets one that maps their own uid and gid to
//! themselves. Also explains, with the exact sysctl, why the kernel refused one.

use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;

use crate::diag::Diagnostic;

/// How the sandbox gets the privilege to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// Already root with CAP_SYS_ADMIN: plain namespaces.
    Root,
    /// A user namespace mapping `uid` and `gid` to themselves.
    UserNamespace { uid: u32, gid: u32 },
}

const CAP_SYS_ADMIN: u32 = 21;

impl IdMode {
    pub fn detect() -> Self {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        if uid == 0 && has_effective_cap(CAP_SYS_ADMIN) {
            IdMode::Root
        } else {
            IdMode::UserNamespace { uid, gid }
        }
    }

    pub fn userns(&self) -> bool {
        matches!(self, IdMode::UserNamespace { .. })
    }
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
