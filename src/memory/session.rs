//! One session of an agent: its own copy of the memory's places (the tree), written from the
//! live memory as it was when the session began (its base), shown read-write in the session,
//! and landed when it ends. Everything a session is lives on disk in `sessions/ID/`:
//! `session.json` (its base and provenance), `snapshot` (the stat and hash of each file as of
//! its base), `tree/`, and `lock`, held by the session's processes (a sandbox's PID 1 inherits
//! it), so that one whose lock is free was killed and is landed by `recover`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::fs::{flock, FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::checkout;
use super::merge::{land, Landed};
use super::places::{over_limit, Place};
use super::provenance::{now, Provenance};
use super::repo::{Change, Oid};
use super::tree::{self, ProfileLinks};
use super::Agent;

/// A session directory still being made, with no lock yet, is left alone this long.
const STARTING_FOR: Duration = Duration::from_secs(60);

/// What `session.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub prov: Provenance,
    /// The commit the tree is compared with: the live memory when the session began, then
    /// the session's own last landed commit.
    pub base: Oid,
    /// The persistent environment the session is, if it is one.
    pub env: Option<String>,
    pub places: Vec<Place>,
    pub profile_links: Vec<(Vec<u8>, Vec<u8>)>,
    /// The host whose copy of the tree is the session's (a dispatch): while it is set, the
    /// tree here is not the session's last word, so a killed session is not landed from it
    /// but waits to be collected (`Session::reopen`).
    #[serde(default)]
    pub away: Option<String>,
}

/// A memory place shown in a session: `source` (in the tree) at `$HOME/rel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceMount {
    pub source: PathBuf,
    pub rel: PathBuf,
    pub file: bool,
}

/// Who started a session, for its provenance.
#[derive(Debug, Clone)]
pub struct Origin {
    pub project: Option<PathBuf>,
    pub backend: String,
    pub command: String,
}

/// A running session, held by this process.
pub struct Session {
    pub dir: PathBuf,
    pub record: Record,
    /// Held (and inherited by the sandbox's PID 1) as long as the session runs.
    _lock: OwnedFd,
}

fn try_lock(path: &Path) -> Result<Option<OwnedFd>> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

fn new_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    crate::util::hash_parts(
        [&t.to_le_bytes()[..], &std::process::id().to_le_bytes()[..]],
        6,
    )
}

impl Session {
    /// Starts a session of `agent` on the live memory; `env` names the persistent environment
    /// it is, and `profile_links` are the profile's links to show in its places.
    pub fn begin(
        agent: &Agent,
        origin: Origin,
        env: Option<&str>,
        profile_links: ProfileLinks,
    ) -> Result<Self> {
        let id = new_id();
        let sessions = agent.sessions_dir();
        std::fs::create_dir_all(&sessions)
            .with_context(|| format!("cannot create {}", sessions.display()))?;
        let making = sessions.join(format!(".new-{id}"));
        let places = agent.places()?;
        let base = agent.repo().head()?;
        let (lock, snapshot) = match claim_clean(agent, &making, &places)? {
            Some((lock, clean)) => {
                // The tree a finished session left, brought to the live memory.
                let tree = making.join("tree");
                let mut snapshot = tree::decode(&std::fs::read(making.join("snapshot"))?)?;
                checkout::remove_links(&tree, &clean.profile_links.into_iter().collect())?;
                checkout::update(
                    &agent.repo(),
                    &clean.commit,
                    &base,
                    &tree,
                    &places,
                    &mut snapshot,
                )?;
                checkout::complete(&tree, &places, &profile_links)?;
                (lock, snapshot)
            }
            None => {
                std::fs::create_dir(&making)
                    .with_context(|| format!("cannot create {}", making.display()))?;
                let lock = try_lock(&making.join("lock"))?.context("cannot lock a new session")?;
                let snapshot = checkout::checkout(
                    &agent.repo(),
                    &base,
                    &making.join("tree"),
                    &places,
                    &profile_links,
                )?;
                (lock, snapshot)
            }
        };
        std::fs::write(making.join("snapshot"), tree::encode(&snapshot))
            .context("cannot write the session's snapshot")?;
        let record = Record {
            prov: Provenance {
                agent: agent.name().to_string(),
                host: super::provenance::host_name(),
                project: origin.project,
                backend: origin.backend,
                command: origin.command,
                started: now(),
                session: id.clone(),
            },
            base,
            env: env.map(str::to_string),
            places,
            profile_links: profile_links.into_iter().collect(),
            away: None,
        };
        write_record(&making, &record)?;
        let dir = sessions.join(&id);
        std::fs::rename(&making, &dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        tracing::debug!(session = %id, base = %record.base, "memory session begins");
        Ok(Self {
            dir,
            record,
            _lock: lock,
        })
    }

    /// Names the host the session runs on, when that is not this one (a dispatch): its tree
    /// is away there until it comes back.
    pub fn set_host(&mut self, host: &str) -> Result<()> {
        self.record.prov.host = host.to_string();
        self.record.away = Some(host.to_string());
        write_record(&self.dir, &self.record)
    }

    /// Takes up again a session that is away on a host (its dispatching agentenv ended
    /// before the tree came back), to bring the tree back and land it. `None` when it does
    /// not exist or another process holds it.
    pub fn reopen(agent: &Agent, id: &str) -> Result<Option<Self>> {
        if !crate::util::is_plain_id(id) {
            anyhow::bail!("not a memory session id: {id:?}");
        }
        let dir = agent.sessions_dir().join(id);
        if !dir.is_dir() {
            return Ok(None);
        }
        let Some(lock) = try_lock(&dir.join("lock"))? else {
            return Ok(None);
        };
        Ok(read_record(&dir)?.map(|record| Self {
            dir,
            record,
            _lock: lock,
        }))
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.record.prov.session
    }

    /// The session's tree: its places, at their paths relative to the home.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// The places to show, from the session's tree.
    pub fn mounts(&self) -> Vec<PlaceMount> {
        self.record
            .places
            .iter()
            .map(|p| PlaceMount {
                source: self.dir.join("tree").join(&p.path),
                rel: p.path.clone(),
                file: !p.dir,
            })
            .collect()
    }

    /// Lands what the session changed, and keeps its tree for the next session to start from
    /// (or removes it).
    pub fn end(self, agent: &Agent) -> Result<Option<Landed>> {
        let _lock = agent.lock()?;
        let mut record = self.record.clone();
        let (landed, exact) = commit_dir(agent, &self.dir, &mut record, None)?;
        retire(agent, &self.dir, &record, exact)?;
        Ok(landed)
    }
}

/// What `clean/clean.json` holds: the commit whose places the tree there has.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Clean {
    commit: Oid,
    places: Vec<Place>,
    profile_links: Vec<(Vec<u8>, Vec<u8>)>,
}

fn clean_dir(agent: &Agent) -> PathBuf {
    agent.dir.join("clean")
}

/// Takes the tree a finished session left (locked, then moved to `making`), if there is one
/// for these places.
fn claim_clean(agent: &Agent, making: &Path, places: &[Place]) -> Result<Option<(OwnedFd, Clean)>> {
    let clean = clean_dir(agent);
    if !clean.join("clean.json").exists() {
        return Ok(None);
    }
    let Some(lock) = try_lock(&clean.join("lock"))? else {
        return Ok(None);
    };
    if std::fs::rename(&clean, making).is_err() {
        return Ok(None);
    }
    let record: Option<Clean> = std::fs::read(making.join("clean.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok());
    let _ = std::fs::remove_file(making.join("clean.json"));
    match record {
        Some(c) if c.places == places => Ok(Some((lock, c))),
        _ => {
            crate::util::remove_tree(making)?;
            Ok(None)
        }
    }
}

/// A session is over: its tree is kept as the clean tree when it holds exactly its last
/// commit's places (and there is none yet), else removed.
fn retire(agent: &Agent, dir: &Path, record: &Record, exact: bool) -> Result<()> {
    let clean = clean_dir(agent);
    if exact && !clean.exists() {
        let c = Clean {
            commit: record.base.clone(),
            places: record.places.clone(),
            profile_links: record.profile_links.clone(),
        };
        let kept = crate::util::write_atomic(&dir.join("clean.json"), &serde_json::to_vec(&c)?)
            .and_then(|()| Ok(std::fs::remove_file(dir.join("session.json"))?))
            .and_then(|()| Ok(std::fs::rename(dir, &clean)?));
        if kept.is_ok() {
            return Ok(());
        }
    }
    crate::util::remove_tree(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

fn write_record(dir: &Path, record: &Record) -> Result<()> {
    crate::util::write_atomic(
        &dir.join("session.json"),
        &serde_json::to_vec_pretty(record)?,
    )
}

fn read_record(dir: &Path) -> Result<Option<Record>> {
    match std::fs::read(dir.join("session.json")) {
        Ok(t) => Ok(Some(serde_json::from_slice(&t).with_context(|| {
            format!("cannot read {}", dir.join("session.json").display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Lands what the session in `dir` changed since its base (its command `command`, if given,
/// for a persistent environment's exec), and moves its base there. The caller holds the
/// agent's lock.
pub fn commit_dir(
    agent: &Agent,
    dir: &Path,
    record: &mut Record,
    command: Option<(String, u64)>,
) -> Result<(Option<Landed>, bool)> {
    let snap_path = dir.join("snapshot");
    let snapshot =
        tree::decode(&std::fs::read(&snap_path).context("cannot read the session's snapshot")?)?;
    let skip: ProfileLinks = record.profile_links.iter().cloned().collect();
    let scan = tree::scan(&dir.join("tree"), &record.places, &snapshot, &skip)?;
    for w in &scan.warnings {
        eprintln!("agentenv: memory of {}: {w}", agent.name());
    }
    let exact = scan.warnings.is_empty();
    if scan.changes.is_empty() {
        if scan.snapshot != snapshot {
            std::fs::write(&snap_path, tree::encode(&scan.snapshot))?;
        }
        return Ok((None, exact));
    }
    for c in &scan.changes {
        if let Change::Write { path, data, .. } = c {
            if let Some(w) = over_limit(path, data) {
                eprintln!("agentenv: memory of {}: {w}", agent.name());
            }
        }
    }
    let mut prov = record.prov.clone();
    if let Some((cmd, started)) = command {
        prov.command = cmd;
        prov.started = started;
    }
    let (commit, landed) = land_changes(agent, &record.base, &scan.changes, &prov, now())?;
    for k in &landed.conflicts {
        let beside = k
            .beside
            .as_deref()
            .map(|b| format!("; the session's is kept at ~/{b}"))
            .unwrap_or_default();
        eprintln!(
            "agentenv: memory of {}: ~/{}: {}{beside} (see `agentenv memory status {}`)",
            agent.name(),
            k.path,
            k.what,
            agent.name()
        );
    }
    record.base = commit;
    std::fs::write(&snap_path, tree::encode(&scan.snapshot))?;
    write_record(dir, record)?;
    Ok((Some(landed), exact))
}

/// Commits `changes` on `base` as the session `prov` (ended at `ended`) and lands them on the
/// live memory: the one path every session's result takes, local or brought back from
/// elsewhere. Returns the session's own commit and what landing did. The caller holds the
/// agent's lock.
pub fn land_changes(
    agent: &Agent,
    base: &str,
    changes: &[Change],
    prov: &Provenance,
    ended: u64,
) -> Result<(Oid, Landed)> {
    let repo = agent.repo();
    let scratch = format!("refs/agentenv/sessions/{}", prov.session);
    let message = prov.message(&prov.summary(changes.len()), ended, &[]);
    let commit = repo.commit_changes(
        Some(base),
        changes,
        &message,
        &prov.signature(ended),
        &scratch,
    )?;
    let landed = land(&repo, &commit, base, prov, ended, &scratch)?;
    Ok((commit, landed))
}

/// Lands the sessions of `agent` that were killed (their lock is free) and removes them.
pub fn recover(agent: &Agent) -> Result<Vec<Landed>> {
    let Ok(rd) = std::fs::read_dir(agent.sessions_dir()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut agent_lock = None;
    for entry in rd.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".new-") {
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < STARTING_FOR);
            if young {
                continue;
            }
        }
        let Some(_held) = try_lock(&dir.join("lock"))? else {
            continue;
        };
        if agent_lock.is_none() {
            agent_lock = Some(agent.lock()?);
        }
        if !name.starts_with(".new-") {
            if let Some(mut record) = read_record(&dir)? {
                if record.away.is_some() {
                    // Its tree is on a host: `dispatch --collect` brings it back.
                    continue;
                }
                tracing::debug!(session = %name, "landing an interrupted session");
                let (landed, exact) = commit_dir(agent, &dir, &mut record, None)?;
                out.extend(landed);
                retire(agent, &dir, &record, exact)?;
                continue;
            }
        }
        crate::util::remove_tree(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(out)
}

/// The directories of the sessions of `agent` that run now.
pub fn live_sessions(agent: &Agent) -> Result<Vec<PathBuf>> {
    let Ok(rd) = std::fs::read_dir(agent.sessions_dir()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        if try_lock(&entry.path().join("lock"))?.is_none() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Lands what the running session of the persistent environment `env` changed so far, after
/// `command` (started at `started`) ran in it.
pub fn commit_env(
    agent: &Agent,
    env: &str,
    command: String,
    started: u64,
) -> Result<Option<Landed>> {
    let _lock = agent.lock()?;
    for dir in live_sessions(agent)? {
        let Some(mut record) = read_record(&dir)? else {
            continue;
        };
        if record.env.as_deref() == Some(env) {
            return Ok(commit_dir(agent, &dir, &mut record, Some((command, started)))?.0);
        }
    }
    Ok(None)
}

/// How many sessions of `agent` run now.
pub fn session_count(agent: &Agent) -> usize {
    live_sessions(agent).map(|l| l.len()).unwrap_or(0)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
