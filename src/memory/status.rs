//! What `memory status` says of an agent: its live memory's commit, the sessions running, the
//! conflicts kept (a `Conflict:` trailer whose other side is still beside the file), and the
//! files past the size their tool reads.

use anyhow::Result;
use serde::Serialize;

use super::merge::CONFLICT_TRAILER;
use super::places::{over_limit, LIMITS};
use super::provenance::trailers;
use super::repo::{shown, Oid, TreeEntry, MAIN};
use super::Agent;

/// A conflict waiting for `memory resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenConflict {
    /// Keeps one side.
    pub path: String,
    /// Holds the other.
    pub beside: String,
    /// The commit that kept it.
    pub commit: Oid,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub agent: String,
    pub head: Oid,
    pub files: usize,
    pub running_sessions: usize,
    pub conflicts: Vec<OpenConflict>,
    pub warnings: Vec<String>,
}

/// The conflicts of the live memory still open: named by a `Conflict:` trailer, with the other
/// side still in `files`.
pub fn open_conflicts(agent: &Agent, files: &[TreeEntry]) -> Result<Vec<OpenConflict>> {
    let out = agent.repo().run(&["log", "--format=%H%x00%B%x00", MAIN])?;
    let text = String::from_utf8_lossy(&out);
    let mut fields = text.split('\0');
    let mut open = Vec::new();
    while let (Some(commit), Some(body)) = (fields.next(), fields.next()) {
        let commit = commit.trim();
        if commit.is_empty() {
            break;
        }
        for (k, v) in trailers(body) {
            if k != CONFLICT_TRAILER {
                continue;
            }
            let Some((path, beside)) = v.split_once(" | ") else {
                continue;
            };
            let there = files.iter().any(|f| shown(&f.path) == beside);
            if there && !open.iter().any(|o: &OpenConflict| o.beside == beside) {
                open.push(OpenConflict {
                    path: path.to_string(),
                    beside: beside.to_string(),
                    commit: commit.to_string(),
                });
            }
        }
    }
    Ok(open)
}

pub fn status(agent: &Agent) -> Result<Status> {
    let repo = agent.repo();
    let head = repo.head()?;
    let files = repo.ls_tree(&head)?;
    let conflicts = open_conflicts(agent, &files)?;
    let mut warnings = Vec::new();
    for limit in LIMITS {
        if let Some(f) = files.iter().find(|f| f.path == limit.path.as_bytes()) {
            let data = repo.read_blob(&f.oid)?;
            warnings.extend(over_limit(&f.path, &data));
        }
    }
    Ok(Status {
        agent: agent.name().to_string(),
        head,
        files: files.len(),
        running_sessions: super::session::session_count(agent),
        conflicts,
        warnings,
    })
}

impl Status {
    /// For a person.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "agent {}: memory at {} ({} files), {} session(s) running\n",
            self.agent,
            &self.head[..12.min(self.head.len())],
            self.files,
            self.running_sessions
        );
        if self.conflicts.is_empty() {
            out.push_str("no conflicts\n");
        }
        for c in &self.conflicts {
            out.push_str(&format!(
                "conflict: ~/{} (kept) and ~/{} (the other side), since {}\n",
                c.path,
                c.beside,
                &c.commit[..12.min(c.commit.len())]
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}
