//! The profile state directory and its journal: the record of one activation (every step, in
//! order), written and synced before the first change, so that an interrupted activation or
//! deactivation can be undone from it. Also the lock that keeps two agentenvs apart.
//!
//! Only the journal itself is synced. Where a transaction is (applied, being removed) is an
//! empty marker file beside it, not synced: undo is correct whatever subset of the steps reached
//! the disk, so a marker lost in a power cut only means the next run undoes once more.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use super::beneath::HomeLinks;
use super::env::ProfileEnv;
use super::links::is_missing;

/// One change to the home, as recorded before it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Step {
    /// Rename `path` to `backup` (same file system: contents, mode and times are kept).
    MoveAside {
        path: PathBuf,
        backup: PathBuf,
    },
    CreateDir {
        path: PathBuf,
    },
    Link {
        path: PathBuf,
        target: PathBuf,
    },
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxState {
    /// Steps are being made; if found so, the transaction was interrupted: undo it.
    #[default]
    Applying,
    /// Every step was made: this profile is active (said `active` everywhere; journals of
    /// earlier versions say `applied`).
    #[serde(rename = "active", alias = "applied")]
    Applied,
    /// Steps are being undone; if found so, finish undoing.
    Removing,
}

/// The record of one activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub id: String,
    /// Read from the marker files, not stored in the journal.
    #[serde(skip)]
    pub state: TxState,
    pub profile: PathBuf,
    pub home: PathBuf,
    /// Which symlinks below the home its steps may go through.
    #[serde(default)]
    pub home_links: HomeLinks,
    pub steps: Vec<Step>,
    pub env: ProfileEnv,
    /// `activate.sh`, if the profile has one, and whether it has yet to succeed: its last run
    /// failed, or a sandbox is to run it and has not reported success.
    pub hook: Option<PathBuf>,
    #[serde(default)]
    pub hook_failed: bool,
    /// The flake the profile was installed from, for `profile install`.
    #[serde(default)]
    pub origin: Option<String>,
}

pub const JOURNAL_VERSION: u32 = 1;

/// The files of a profile state directory.
#[derive(Debug, Clone)]
pub struct StateFiles {
    pub dir: PathBuf,
}

impl StateFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    fn marker(&self, state: TxState) -> PathBuf {
        match state {
            TxState::Applying => self.dir.join("applying"),
            TxState::Applied => self.dir.join("applied"),
            TxState::Removing => self.dir.join("removing"),
        }
    }

    /// Where entries moved aside by transaction `id` are kept.
    pub fn backups(&self, id: &str) -> PathBuf {
        self.dir.join("backup").join(id)
    }

    /// The shell script carrying the active profile's environment.
    pub fn env_script(&self) -> PathBuf {
        self.dir.join("env.sh")
    }

    /// The GC root of an installed profile.
    pub fn installed(&self) -> PathBuf {
        self.dir.join("installed")
    }

    /// The GC root of an installed profile's tools.
    pub fn tools(&self) -> PathBuf {
        self.dir.join("tools")
    }

    /// Creates the directory and takes its lock, waiting for another agentenv to finish.
    pub fn lock(&self) -> Result<Flock<File>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        crate::util::lock_file(
            &self.dir.join("lock"),
            &format!("changing the profile state in {}", self.dir.display()),
        )
    }

    /// The journal, if a profile is active or a transaction was interrupted.
    pub fn read(&self) -> Result<Option<Journal>> {
        let path = self.journal();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut journal: Journal = serde_json::from_slice(&bytes)
            .with_context(|| format!("the profile journal {} is damaged", path.display()))?;
        journal.state = [TxState::Removing, TxState::Applied]
            .into_iter()
            .find(|s| self.marker(*s).exists())
            .unwrap_or(TxState::Applying);
        Ok(Some(journal))
    }

    /// Records the intent of a new transaction, durably, before its first step.
    pub fn begin(&self, journal: &mut Journal) -> Result<()> {
        for state in [TxState::Applied, TxState::Removing] {
            remove_if_present(&self.marker(state))?;
        }
        journal.state = TxState::Applying;
        self.write(journal)
    }

    /// Moves the transaction to `state` (applied, or being removed).
    pub fn mark(&self, journal: &mut Journal, state: TxState) -> Result<()> {
        let path = self.marker(state);
        if state != TxState::Applying {
            File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        if state != TxState::Applied {
            remove_if_present(&self.marker(TxState::Applied))?;
        }
        journal.state = state;
        Ok(())
    }

    /// Replaces the journal durably: a synced temporary file renamed over it, then the
    /// directory synced, so that after a crash the old or the new journal is there, whole.
    pub fn write(&self, journal: &Journal) -> Result<()> {
        let path = self.journal();
        let tmp = self.dir.join("journal.json.tmp");
        let data = serde_json::to_vec(journal)?;
        let mut file =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&data)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        sync_dir(&self.dir)
    }

    /// Removes the journal and its markers: no profile is active.
    pub fn clear(&self) -> Result<()> {
        remove_if_present(&self.journal())?;
        for state in [TxState::Applied, TxState::Removing] {
            remove_if_present(&self.marker(state))?;
        }
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Makes a directory's entries (renames, new files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// A transaction id: readable, ordered by time, unique per process.
pub fn new_tx_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", now.as_millis(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path());
        assert_eq!(files.read().unwrap(), None);
        let mut journal = Journal {
            version: JOURNAL_VERSION,
            id: new_tx_id(),
            state: TxState::Applying,
            profile: "/p".into(),
            home: "/h".into(),
            home_links: HomeLinks::InHome,
            steps: vec![
                Step::MoveAside {
                    path: "/h/.a".into(),
                    backup: "/s/0".into(),
                },
                Step::CreateDir {
                    path: "/h/.c".into(),
                },
                Step::Link {
                    path: "/h/.a".into(),
                    target: "/p/home/.a".into(),
                },
            ],
            env: ProfileEnv::default(),
            hook: None,
            hook_failed: false,
            origin: None,
        };
        files.begin(&mut journal).unwrap();
        assert_eq!(files.read().unwrap().as_ref(), Some(&journal));
        for state in [TxState::Applied, TxState::Removing] {
            files.mark(&mut journal, state).unwrap();
            assert_eq!(files.read().unwrap().unwrap().state, state);
        }
        files.clear().unwrap();
        assert_eq!(files.read().unwrap(), None);
    }
}
