//! Whether agentenv may attach at all: joining another process's namespaces and mounting in a
//! copy of its mount namespace take CAP_SYS_ADMIN, CAP_SYS_CHROOT (setns into a mount
//! namespace) and CAP_SYS_PTRACE (reading another user's `/proc/PID`). Checked before anything.

use anyhow::Result;

use crate::diag::Diagnostic;

/// The capabilities attaching needs, with their bit numbers.
const NEEDED: [(&str, u32); 3] = [
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
];

/// The needed capabilities missing from the effective set `effective`.
pub fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(_, bit)| effective & (1 << bit) == 0)
        .map(|(name, _)| *name)
        .collect()
}

/// This process's effective capabilities, from `/proc/self/status`.
fn effective_capabilities() -> u64 {
    super::facts::read_privileges(0).map_or(0, |p| p.effective)
}

/// The needed capabilities this process lacks.
pub fn missing_here() -> Vec<&'static str> {
    missing_capabilities(effective_capabilities())
}

/// Fails, naming each missing capability, unless this process may attach.
pub fn check_attach_privilege() -> Result<()> {
    let missing = missing_here();
    if missing.is_empty() {
        return Ok(());
    }
    let list = match missing.as_slice() {
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
        [] => unreachable!(),
    };
    Err(Diagnostic::new(format!(
        "attaching needs {list}, which agentenv does not have"
    ))
    .detail("joining a process's namespaces and mounting the toolbox in a copy of its mount namespace are privileged")
    .hint("run it as root: `sudo agentenv attach ...`")
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_capability_is_named() {
        assert_eq!(
            missing_capabilities(0),
            vec!["CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE"]
        );
        assert!(missing_capabilities(u64::MAX).is_empty());
        assert_eq!(
            missing_capabilities(1 << 21 | 1 << 18),
            vec!["CAP_SYS_PTRACE"]
        );
    }
}
