//! What this machine keeps of each dispatched session until it has ended and its learnings
//! are back: `dispatch/ID.json` in agentenv's data directory (where the session runs, its
//! agent's memory session, whether it was detached), and `ID.lock`, held by the agentenv that
//! is connected to it. `ps` lists them; `--attach` and `--collect` take them up.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::StateDirs;

/// One dispatched session, as this machine knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DispatchRecord {
    pub id: String,
    /// The target as given (`dispatch --attach` connects to it again).
    pub target: String,
    /// agentenv's directory on the host, and its binary there.
    pub dir: String,
    pub bin: String,
    /// The agent, and its memory session whose tree is on the host.
    pub agent: Option<String>,
    pub memory_session: Option<String>,
    pub command: String,
    /// Seconds since the epoch.
    pub started: u64,
    /// Started with `--detach`: its command runs on without a connection.
    #[serde(default)]
    pub detached: bool,
    /// The container on the host it works in (`--container`).
    #[serde(default)]
    pub container: Option<String>,
}

/// Where a session works, for people: its target, and the container there.
pub fn place(target: &str, container: Option<&str>) -> String {
    match container {
        Some(c) => format!("{target} in {c}"),
        None => target.to_string(),
    }
}

/// How a recorded session stands, as seen from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// An agentenv here is connected to it.
    Connected,
    /// Detached: running on the host, or ended and waiting to be collected.
    Detached,
    /// Its connection was lost; what it learned waits on the host.
    LinkLost,
}

impl Standing {
    pub fn describe(self) -> &'static str {
        match self {
            Standing::Connected => "connected",
            Standing::Detached => "detached",
            Standing::LinkLost => "link lost",
        }
    }
}

fn records_dir(state: &StateDirs) -> PathBuf {
    state.data.join("dispatch")
}

fn checked_id(id: &str) -> Result<&str> {
    if !crate::util::is_plain_id(id) {
        return Err(
            crate::diag::Diagnostic::new(format!("not a dispatch id: {id:?}"))
                .hint("`agentenv ps` lists the dispatched sessions and their ids")
                .into(),
        );
    }
    Ok(id)
}

impl DispatchRecord {
    fn path(state: &StateDirs, id: &str) -> PathBuf {
        records_dir(state).join(format!("{id}.json"))
    }

    /// Writes the record (atomically: a reader sees the old or the new one).
    pub fn save(&self, state: &StateDirs) -> Result<()> {
        let dir = records_dir(state);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        crate::util::write_atomic(
            &Self::path(state, checked_id(&self.id)?),
            &serde_json::to_vec_pretty(self)?,
        )
    }

    pub fn load(state: &StateDirs, id: &str) -> Result<Option<Self>> {
        let path = Self::path(state, checked_id(id)?);
        match std::fs::read(&path) {
            Ok(data) => {
                Ok(Some(serde_json::from_slice(&data).with_context(|| {
                    format!("cannot read {}", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Every record, oldest first.
    pub fn list(state: &StateDirs) -> Vec<Self> {
        let mut out: Vec<Self> = std::fs::read_dir(records_dir(state))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let id = name.strip_suffix(".json")?;
                        Self::load(state, id).ok().flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|r| (r.started, r.id.clone()));
        out
    }

    /// Forgets the session: it has ended and nothing of it waits anywhere.
    pub fn remove(&self, state: &StateDirs) -> Result<()> {
        let path = Self::path(state, checked_id(&self.id)?);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => {}
        }
        let _ = std::fs::remove_file(lock_path(state, &self.id));
        Ok(())
    }

    /// Marks the session as connected to this process, until the returned lock is dropped;
    /// `None` when another agentenv is connected to it.
    pub fn hold(&self, state: &StateDirs) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
        let dir = records_dir(state);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = lock_path(state, checked_id(&self.id)?);
        Ok(crate::util::try_lock_file(&path)?.ok())
    }

    pub fn standing(&self, state: &StateDirs) -> Standing {
        let held = match self.hold(state) {
            Ok(lock) => lock.is_none(),
            Err(_) => false,
        };
        match (held, self.detached) {
            (true, _) => Standing::Connected,
            (false, true) => Standing::Detached,
            (false, false) => Standing::LinkLost,
        }
    }
}

fn lock_path(state: &StateDirs, id: &str) -> PathBuf {
    records_dir(state).join(format!("{id}.lock"))
}

/// The records of sessions on `target`, as given.
pub fn on_target(state: &StateDirs, target: &str) -> Vec<DispatchRecord> {
    DispatchRecord::list(state)
        .into_iter()
        .filter(|r| r.target == target)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, started: u64) -> DispatchRecord {
        DispatchRecord {
            id: id.into(),
            target: "dev@box".into(),
            dir: "/home/dev/.agentenv".into(),
            bin: "/home/dev/.agentenv/bin/agentenv-x".into(),
            agent: Some("ana".into()),
            memory_session: Some("abc".into()),
            command: "make".into(),
            started,
            detached: false,
            container: None,
        }
    }

    #[test]
    fn records_round_trip_list_in_order_and_go() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDirs::under(tmp.path());
        let (a, b) = (record("b2", 2), record("a1", 1));
        a.save(&state).unwrap();
        b.save(&state).unwrap();
        assert_eq!(DispatchRecord::list(&state), vec![b.clone(), a.clone()]);
        assert_eq!(DispatchRecord::load(&state, "b2").unwrap(), Some(a.clone()));
        assert_eq!(on_target(&state, "dev@box").len(), 2);
        assert!(on_target(&state, "other").is_empty());
        a.remove(&state).unwrap();
        assert_eq!(DispatchRecord::list(&state), vec![b]);
    }

    #[test]
    fn a_held_record_stands_connected_and_is_not_held_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDirs::under(tmp.path());
        let r = record("c3", 3);
        r.save(&state).unwrap();
        assert_eq!(r.standing(&state), Standing::LinkLost);
        let held = r.hold(&state).unwrap().expect("free");
        assert_eq!(r.standing(&state), Standing::Connected);
        drop(held);
        assert_eq!(r.standing(&state), Standing::LinkLost);
        let detached = DispatchRecord {
            detached: true,
            ..r
        };
        assert_eq!(detached.standing(&state), Standing::Detached);
        let place_of = |r: &DispatchRecord| place(&r.target, r.container.as_deref());
        assert_eq!(place_of(&detached), "dev@box");
        let inside = DispatchRecord {
            container: Some("web".into()),
            ..detached
        };
        assert_eq!(place_of(&inside), "dev@box in web");
    }

    #[test]
    fn ids_that_are_not_plain_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDirs::under(tmp.path());
        assert!(DispatchRecord::load(&state, "../x").is_err());
        assert!(DispatchRecord::load(&state, "").is_err());
    }
}
