//! agentenv's directory on a host, and what lives where in it. The content caches (`bin/`,
//! `nix/store/`, `profiles/`) stay between sessions; a session's own directory
//! (`sessions/ID/`: the spec, the private home, start-up scripts) goes when the session ends.

/// The directory names, relative to the host's agentenv directory.
pub const BIN: &str = "bin";
pub const NIX: &str = "nix";
pub const STORE: &str = "nix/store";
pub const PROFILES: &str = "profiles";
pub const SESSIONS: &str = "sessions";
/// A session's spec, in its directory (`__remote session` and `attach` read it).
pub const SPEC: &str = "spec.json";

/// What may remain on the host after every session has ended and been cleaned.
pub const CACHES: &[&str] = &[BIN, NIX, PROFILES];

/// `DIR/sub` for a remote directory string.
pub fn join(dir: &str, sub: &str) -> String {
    format!("{}/{sub}", dir.trim_end_matches('/'))
}

/// A session id: time and randomness, letters and digits only (it is used in remote paths).
pub fn new_session_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rand = [0u8; 6];
    let _ = getrandom(&mut rand);
    let hex: String = rand.iter().map(|b| format!("{b:02x}")).collect();
    format!("{t:x}{hex}")
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_path_safe_and_differ() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert!(crate::util::is_plain_id(&a), "{a}");
    }

    #[test]
    fn join_keeps_one_slash() {
        assert_eq!(join("/tmp/a/", "bin"), "/tmp/a/bin");
        assert_eq!(join("/tmp/a", "nix/store"), "/tmp/a/nix/store");
    }
}
