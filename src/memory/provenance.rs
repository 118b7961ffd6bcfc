//! Where and when a change to a memory was made, written as git trailers of its commit
//! (`Agent:`, `Host:`, `Project:`, `Backend:`, `Command:`, `Started:`, `Ended:`, `Session:`),
//! so that plain `git log` shows it and `git interpret-trailers` reads it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::repo::Signature;

/// The facts of one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub agent: String,
    pub host: String,
    pub project: Option<PathBuf>,
    /// What ran the session: `linux` (namespaces), `attach` (a running container), ...
    pub backend: String,
    /// The command run, or `shell`.
    pub command: String,
    /// Seconds since the epoch.
    pub started: u64,
    pub session: String,
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `when` (seconds since the epoch) as RFC 3339, UTC.
pub fn rfc3339(when: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(when)).to_string()
}

/// This machine's name.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A command line as one line of text.
pub fn command_line(command: &[std::ffi::OsString]) -> String {
    if command.is_empty() {
        return "shell".into();
    }
    let words: Vec<String> = command
        .iter()
        .map(|w| crate::util::shell_word(&w.to_string_lossy()))
        .collect();
    words.join(" ").replace('\n', " ")
}

impl Provenance {
    /// The commit message of a change made by this session, ended at `ended`: `summary`,
    /// then the trailers. `extra` trailers (a kept conflict, what a revert undid) come last.
    pub fn message(&self, summary: &str, ended: u64, extra: &[(&str, String)]) -> String {
        let mut m = format!("{summary}\n\n");
        let mut t = |k: &str, v: &str| m.push_str(&format!("{k}: {}\n", v.replace('\n', " ")));
        t("Agent", &self.agent);
        t("Host", &self.host);
        if let Some(p) = &self.project {
            t("Project", &p.display().to_string());
        }
        t("Backend", &self.backend);
        t("Command", &self.command);
        t("Started", &rfc3339(self.started));
        t("Ended", &rfc3339(ended));
        t("Session", &self.session);
        for (k, v) in extra {
            t(k, v);
        }
        m
    }

    /// The author of the session's commits.
    pub fn signature(&self, when: u64) -> Signature {
        Signature {
            name: self.agent.clone(),
            email: format!("{}@{}", self.agent, self.host),
            when,
        }
    }

    /// One line saying where the session ran.
    pub fn summary(&self, files: usize) -> String {
        let where_ = self
            .project
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.backend.clone());
        let what = match files {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        format!("{where_}: {what} ({})", short(&self.command, 60))
    }
}

fn short(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The trailers of a commit message, in order.
pub fn trailers(message: &str) -> Vec<(String, String)> {
    let last = message.trim_end().rsplit("\n\n").next().unwrap_or("");
    last.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            let key_ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            key_ok.then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_every_fact_as_a_trailer() {
        let p = Provenance {
            agent: "ana".into(),
            host: "box".into(),
            project: Some("/src/app".into()),
            backend: "linux".into(),
            command: "cargo test".into(),
            started: 0,
            session: "s1".into(),
        };
        let m = p.message(&p.summary(2), 60, &[]);
        assert!(m.starts_with("app: 2 files (cargo test)\n\n"), "{m}");
        let t = trailers(&m);
        let get = |k: &str| t.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Agent"), Some("ana"));
        assert_eq!(get("Project"), Some("/src/app"));
        assert_eq!(get("Started"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(get("Ended"), Some("1970-01-01T00:01:00Z"));
        assert_eq!(get("Session"), Some("s1"));
    }
}
