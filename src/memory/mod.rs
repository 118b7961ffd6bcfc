//! Agents: a profile (the user's, read-only to the agent) plus a memory the agent writes, kept
//! as a bare git repository in agentenv's data directory, every change a commit with its
//! provenance in trailers. A session works on a copy of the memory as it was when it started
//! (its base) and lands its changes when it ends, fast-forward or by a three-way merge that
//! keeps both sides of a conflict. A session killed half-way is landed by the next command
//! that opens the agent.
//!
//! ```text
//! data/agents/NAME/
//!   agent.json        name, profile, creation time
//!   memory.git/       the memory (bare; `git --git-dir=... log` reads it)
//!   lock              held while the memory's branch moves
//!   homes/ENV/        the agent's private home in one project (and its profile state)
//!   sessions/ID/      one running (or killed) session: session.json, lock, snapshot, tree/
//!   clean/            the tree a finished session left, which the next one starts from
//! ```
//!
//! The API for a remote run (dispatch): take `repo().head()` as the base, carry the tree of
//! the places out, bring back the changed files as `repo::Change`s, then
//! `session::land_changes(agent, base, changes, provenance)`: the same path a local session's
//! end takes.

pub mod checkout;
pub mod history;
pub mod merge;
pub mod places;
pub mod provenance;
pub mod repo;
pub mod run;
pub mod session;
pub mod status;
pub mod tree;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::paths::StateDirs;
use places::Place;
use repo::{Change, Repo};

/// What `agent.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    /// The profile the agent runs with (shown read-only, as the user's).
    pub profile: Option<PathBuf>,
    /// Seconds since the epoch.
    pub created: u64,
}

/// An agent that exists.
#[derive(Debug, Clone)]
pub struct Agent {
    pub dir: PathBuf,
    pub record: AgentRecord,
}

/// Where agents live.
pub fn agents_dir(state: &StateDirs) -> PathBuf {
    state.data.join("agents")
}

/// Checks an agent's name: it names a directory and goes into commit trailers.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if !ok {
        return Err(Diagnostic::new(format!("'{name}' cannot name an agent"))
            .hint(
                "use letters, digits, '.', '_' and '-' (at most 64, not starting with '.' or '-')",
            )
            .into());
    }
    Ok(())
}

impl Agent {
    /// Creates the agent `name` with `profile`, its memory seeded with the files the profile
    /// has at the memory's file places (say, its `home/.claude/CLAUDE.md`).
    pub fn create(state: &StateDirs, name: &str, profile: Option<&Path>) -> Result<Self> {
        check_name(name)?;
        if !repo::git_available() {
            return Err(Diagnostic::new(
                "git is not installed: an agent's memory is a git repository",
            )
            .hint("install git (`apt-get install git`) and try again")
            .into());
        }
        let profile = profile
            .map(|p| crate::profile::Profile::load(p).map(|p| p.root))
            .transpose()?;
        let dir = agents_dir(state).join(name);
        std::fs::create_dir_all(agents_dir(state))
            .with_context(|| format!("cannot create {}", agents_dir(state).display()))?;
        // A half-made agent is made in a scratch directory and renamed into place.
        let scratch = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(agents_dir(state))
            .context("cannot create the agent's directory")?;
        let record = AgentRecord {
            name: name.to_string(),
            profile: profile.clone(),
            created: provenance::now(),
        };
        let places = places_of(profile.as_deref())?;
        let seed = seed_from_profile(profile.as_deref(), &places);
        let prov = provenance::Provenance {
            agent: name.to_string(),
            host: provenance::host_name(),
            project: None,
            backend: "agentenv".into(),
            command: format!("agent new {name}"),
            started: record.created,
            session: "new".into(),
        };
        let what = match (&profile, seed.len()) {
            (Some(p), n) if n > 0 => format!("new agent {name}, seeded from {}", p.display()),
            _ => format!("new agent {name}"),
        };
        Repo::init(
            &scratch.path().join("memory.git"),
            &seed,
            &prov.message(&what, record.created, &[]),
            &prov.signature(record.created),
        )?;
        crate::util::write_atomic(
            &scratch.path().join("agent.json"),
            &serde_json::to_vec_pretty(&record)?,
        )?;
        match std::fs::rename(scratch.path(), &dir) {
            Ok(()) => {
                let _ = scratch.keep();
            }
            Err(e) if dir.exists() || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                return Err(Diagnostic::new(format!("the agent {name} exists already"))
                    .hint(format!(
                        "see it with `agentenv agent show {name}`, or pick another name"
                    ))
                    .into())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
        Ok(Self { dir, record })
    }

    /// The agent `name`, with any session that was killed landed first.
    pub fn open(state: &StateDirs, name: &str) -> Result<Self> {
        let agent = Self::load(state, name)?;
        for landed in session::recover(&agent)? {
            eprintln!(
                "agentenv: landed the memory of an interrupted session of {name} ({})",
                &landed.commit[..12.min(landed.commit.len())]
            );
        }
        Ok(agent)
    }

    /// The agent `name` as it is on disk.
    pub fn load(state: &StateDirs, name: &str) -> Result<Self> {
        check_name(name)?;
        let dir = agents_dir(state).join(name);
        let path = dir.join("agent.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let known: Vec<String> = list(state).into_iter().map(|a| a.record.name).collect();
                let mut d = Diagnostic::new(format!("no agent is called '{name}'"));
                if !known.is_empty() {
                    d = d.detail(format!("agents: {}", known.join(", ")));
                }
                return Err(d
                    .hint(format!(
                        "create it with `agentenv agent new {name} [--profile DIR]`"
                    ))
                    .into());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let record = serde_json::from_slice(&text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self { dir, record })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn repo(&self) -> Repo {
        Repo::at(&self.dir.join("memory.git"))
    }

    /// Held while the memory's branch moves and sessions are landed.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        crate::util::lock_file(&self.dir.join("lock"), "landing a memory")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.dir.join("sessions")
    }

    /// The agent's own home in the environment `env` (its profile is activated there).
    pub fn home_root(&self, env: &str) -> PathBuf {
        self.dir.join("homes").join(env)
    }

    /// Where the memory shows in a home.
    pub fn places(&self) -> Result<Vec<Place>> {
        places_of(self.record.profile.as_deref())
    }

    /// Every directory the agent keeps (for listing and clean-up): its memory, its homes, its
    /// sessions. Nothing outside `dir`.
    pub fn kept(&self) -> Vec<PathBuf> {
        let mut out = vec![self.dir.join("memory.git"), self.dir.join("clean")];
        for sub in ["homes", "sessions"] {
            if let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) {
                out.extend(rd.flatten().map(|e| e.path()));
            }
        }
        out
    }

    /// Removes the agent, its memory and homes. Refused while a session of it runs.
    pub fn remove(self) -> Result<()> {
        let _lock = self.lock()?;
        let live = session::live_sessions(&self)?;
        if !live.is_empty() {
            return Err(Diagnostic::new(format!(
                "the agent {} has {} running session(s)",
                self.name(),
                live.len()
            ))
            .hint("end them (leave the shell, or `agentenv down` the environment), then remove it")
            .into());
        }
        crate::util::remove_tree(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// Every agent, by name.
pub fn list(state: &StateDirs) -> Vec<Agent> {
    let mut out: Vec<Agent> = std::fs::read_dir(agents_dir(state))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('.') {
                return None;
            }
            Agent::load(state, &name).ok()
        })
        .collect();
    out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    out
}

fn places_of(profile: Option<&Path>) -> Result<Vec<Place>> {
    let manifest = match profile {
        Some(p) => Some(crate::profile::Profile::load(p)?.manifest),
        None => None,
    };
    places::places_for(manifest.as_ref())
}

/// The regular files the profile's `home/` has at the file places.
fn seed_from_profile(profile: Option<&Path>, places: &[Place]) -> Vec<Change> {
    use std::os::unix::ffi::OsStrExt;
    let Some(home) = profile
        .and_then(|p| crate::profile::Profile::load(p).ok())
        .map(|p| p.home_dir())
    else {
        return Vec::new();
    };
    places
        .iter()
        .filter(|p| !p.dir)
        .filter_map(|p| {
            let data = std::fs::read(home.join(&p.path)).ok()?;
            Some(Change::Write {
                path: p.path.as_os_str().as_bytes().to_vec(),
                mode: 0o100644,
                data,
            })
        })
        .collect()
}
