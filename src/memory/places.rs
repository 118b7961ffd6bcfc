//! Where an agent's memory shows in a home: the files and directories agents read and write
//! (Claude Code's `~/.claude/CLAUDE.md` and skills, Codex's `~/.codex/AGENTS.md`, a plain
//! `~/.agent-memory/`), plus what the profile's manifest adds under `[memory]`; and the size
//! past which the tool that reads a file stops reading (or warns).

use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use crate::diag::Diagnostic;
use crate::profile::Manifest;

/// A place, relative to `$HOME`: a file, or a directory and everything below it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Place {
    pub path: PathBuf,
    pub dir: bool,
}

impl Place {
    fn file(p: &str) -> Self {
        Self {
            path: p.into(),
            dir: false,
        }
    }

    fn directory(p: &str) -> Self {
        Self {
            path: p.into(),
            dir: true,
        }
    }

    /// True if the memory path `path` (as git spells it) is this place or below it.
    pub fn holds(&self, path: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let me = self.path.as_os_str().as_bytes();
        path == me
            || (self.dir && path.len() > me.len() && path.starts_with(me) && path[me.len()] == b'/')
    }
}

/// The places every agent has.
pub fn default_places() -> Vec<Place> {
    vec![
        Place::file(".claude/CLAUDE.md"),
        Place::directory(".claude/skills"),
        Place::file(".codex/AGENTS.md"),
        Place::directory(".agent-memory"),
    ]
}

/// The default places and the manifest's `[memory] files` and `dirs`; none may hold another.
pub fn places_for(manifest: Option<&Manifest>) -> Result<Vec<Place>> {
    let mut places = default_places();
    if let Some(m) = manifest {
        for (list, dir) in [(&m.memory.files, false), (&m.memory.dirs, true)] {
            for p in list {
                let path = home_relative(p)?;
                places.push(Place { path, dir });
            }
        }
    }
    for a in &places {
        for b in &places {
            if a != b && (a.path == b.path || (a.dir && b.path.starts_with(&a.path))) {
                return Err(Diagnostic::new(format!(
                    "the memory places {} and {} overlap",
                    a.path.display(),
                    b.path.display()
                ))
                .hint("list each file or directory once in [memory] of agentenv.toml, and none inside a directory listed there (or one of the defaults: ~/.claude/skills, ~/.agent-memory)")
                .into());
            }
        }
    }
    Ok(places)
}

fn home_relative(p: &str) -> Result<PathBuf> {
    let path = Path::new(p.trim_end_matches('/'));
    let plain = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(Diagnostic::new(format!(
            "[memory] names {p:?}, which is not a path inside $HOME"
        ))
        .hint("give paths relative to $HOME, e.g. \".cursor/rules\", without `..`")
        .into());
    }
    Ok(path.to_path_buf())
}

/// How much of a file its tool takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub path: &'static str,
    /// Bytes, or characters when `chars`.
    pub max: usize,
    pub chars: bool,
    /// What happens past it.
    pub effect: &'static str,
}

/// The limits of the tools that read the default places.
pub const LIMITS: &[Limit] = &[
    Limit {
        path: ".codex/AGENTS.md",
        max: 32 * 1024,
        chars: false,
        effect: "Codex reads at most 32 KiB of AGENTS.md files and ignores the rest",
    },
    Limit {
        path: ".claude/CLAUDE.md",
        max: 40_000,
        chars: true,
        effect: "Claude Code warns that a CLAUDE.md past 40,000 characters impairs performance",
    },
];

/// A warning for `data` at `path` if its tool reads less of it than there is.
pub fn over_limit(path: &[u8], data: &[u8]) -> Option<String> {
    let limit = LIMITS.iter().find(|l| l.path.as_bytes() == path)?;
    let size = match limit.chars {
        true => String::from_utf8_lossy(data).chars().count(),
        false => data.len(),
    };
    let unit = if limit.chars { "characters" } else { "bytes" };
    (size > limit.max).then(|| {
        format!(
            "~/{} has {size} {unit}, past its limit of {}: {}",
            limit.path, limit.max, limit.effect
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_place_holds_what_is_below_it_only() {
        let skills = Place::directory(".claude/skills");
        assert!(skills.holds(b".claude/skills/x/SKILL.md"));
        assert!(!skills.holds(b".claude/skills2/x"));
        assert!(!Place::file(".claude/CLAUDE.md").holds(b".claude/CLAUDE.md.conflict-1"));
    }

    #[test]
    fn the_manifest_adds_places_and_refuses_overlaps_and_escapes() {
        let mut m = Manifest::default();
        m.memory.files = vec!["CONVENTIONS.md".into()];
        m.memory.dirs = vec![".cursor/rules/".into()];
        let places = places_for(Some(&m)).unwrap();
        assert!(places.contains(&Place::directory(".cursor/rules")));
        m.memory.dirs = vec![".agent-memory/sub".into()];
        assert!(places_for(Some(&m)).is_err());
        m.memory.dirs = vec!["../x".into()];
        assert!(places_for(Some(&m)).is_err());
    }

    #[test]
    fn agents_md_past_32_kib_is_said() {
        assert!(over_limit(b".codex/AGENTS.md", &[b'a'; 32 * 1024]).is_none());
        let w = over_limit(b".codex/AGENTS.md", &[b'a'; 32 * 1024 + 1]).unwrap();
        assert!(w.contains("32 KiB"), "{w}");
        assert!(over_limit(b".agent-memory/big.md", &[b'a'; 1 << 20]).is_none());
    }
}
