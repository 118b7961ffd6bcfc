//! What agentenv keeps on disk, listed with what uses it: evaluated dev shells (with their GC
//! roots), environments (home and store layer), profile tool builds and attach homes. This
//! module only looks; `reclaim` removes, and `policy` decides what a `gc` may take.
//!
//! Each kind of state has one source function below; a new kind (an agent's memory, say) adds
//! a `Kind` and a source in `inventory`, and `reclaim::remove` learns how to take it apart.

pub mod policy;
pub mod reclaim;
mod size;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::nix::cache::DevEnvCache;
use crate::paths::StateDirs;
use crate::runtime::{RunState, Runtime};

/// A first run that has not yet recorded its project is left alone this long.
const UNRECORDED_GRACE: Duration = Duration::from_secs(600);

/// What a kept thing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An environment's private home and `/nix` layer (`data/envs/ID`).
    Environment,
    /// An evaluated dev shell and its GC root (`cache/devenv/entries/KEY`).
    DevShell,
    /// A build of a profile's tools and its GC root (`cache/profile-tools/entries/KEY`).
    ProfileTools,
    /// The private home of sessions attached to a running target (`data/attach-homes/...`).
    AttachHome,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Environment => "environment",
            Kind::DevShell => "dev shell",
            Kind::ProfileTools => "profile tools",
            Kind::AttachHome => "attach home",
        }
    }
}

/// Who still uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A running environment (or attached target) uses it: never removed.
    Running,
    /// The current state of a project that exists.
    Current,
    /// An older evaluation of a project that has moved on (the flake was edited since).
    Superseded,
    /// Its project (or profile flake) no longer exists.
    ProjectGone,
    /// The target it was made for no longer runs.
    TargetGone,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Current => "current",
            Status::Superseded => "superseded",
            Status::ProjectGone => "project gone",
            Status::TargetGone => "target gone",
        }
    }
}

/// One thing agentenv keeps.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub kind: Kind,
    /// The project (or, for profile tools, the profile flake) it belongs to.
    pub project: Option<PathBuf>,
    pub shell: Option<String>,
    /// The environment's id, for environments.
    pub id: Option<String>,
    pub path: PathBuf,
    pub bytes: u64,
    /// Seconds since the epoch.
    pub last_used: u64,
    pub status: Status,
    /// The lock its users hold; `gc` takes it before removing.
    #[serde(skip)]
    pub lock: Option<PathBuf>,
    /// Index records pointing at it, removed with it.
    #[serde(skip)]
    pub records: Vec<PathBuf>,
}

/// Everything agentenv keeps under `state`, sizes measured.
pub fn inventory(state: &StateDirs) -> Vec<Kept> {
    let running = Runtime::new(state.runtime.clone()).list();
    let running: Vec<RunState> = running.into_iter().map(|r| r.state).collect();
    let mut all = Vec::new();
    all.extend(environments(state, &running));
    all.extend(dev_shells(state, &running));
    all.extend(profile_tools(state, &running));
    #[cfg(target_os = "linux")]
    all.extend(attach_homes(state));
    for k in &mut all {
        k.bytes = size::disk_usage(&k.path);
    }
    all.sort_by(|a, b| {
        (&a.project, &a.shell, a.kind, std::cmp::Reverse(a.last_used)).cmp(&(
            &b.project,
            &b.shell,
            b.kind,
            std::cmp::Reverse(b.last_used),
        ))
    });
    all
}

fn is_running(running: &[RunState], project: &Path, shell: &str) -> bool {
    running
        .iter()
        .any(|r| r.project == project && r.shell == shell)
}

fn project_exists(root: &Path) -> bool {
    root.join("flake.nix").is_file()
}

/// The later of a file's modification and access times, in seconds since the epoch (reads
/// on a warm start move the access time, to the day where the filesystem keeps it).
fn last_touched(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .map(|m| m.mtime().max(m.atime()).max(0) as u64)
        .unwrap_or(0)
}

/// A file's modification time (listing a directory moves its access time: no use).
fn modified(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .map(|m| m.mtime().max(0) as u64)
        .unwrap_or(0)
}

/// Reads a file without moving its access time (which is what tells a use).
fn read_quietly(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // macOS has no O_NOATIME (and mounts its volumes with relatime-like behaviour anyway).
    #[cfg(target_os = "linux")]
    let quiet = libc::O_NOATIME;
    #[cfg(not(target_os = "linux"))]
    let quiet = 0;
    let mut file = std::fs::File::options()
        .read(true)
        .custom_flags(quiet)
        .open(path)
        .or_else(|_| std::fs::File::open(path))
        .ok()?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).ok()?;
    Some(data)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn environments(state: &StateDirs, running: &[RunState]) -> Vec<Kept> {
    #[derive(serde::Deserialize)]
    struct Meta {
        project: PathBuf,
        shell: String,
    }
    let Ok(rd) = std::fs::read_dir(state.envs()) else {
        return Vec::new();
    };
    let locks = state.data.join("locks");
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            let meta_path = e.path().join("env.json");
            let meta: Option<Meta> =
                read_quietly(&meta_path).and_then(|d| serde_json::from_slice(&d).ok());
            let in_ps = running.iter().any(|r| r.id == id);
            let (project, shell, status, last_used) = match meta {
                Some(m) => {
                    let status = if in_ps || is_running(running, &m.project, &m.shell) {
                        Status::Running
                    } else if project_exists(&m.project) {
                        Status::Current
                    } else {
                        Status::ProjectGone
                    };
                    let used = std::fs::metadata(&meta_path)
                        .map(|m| m.mtime().max(0) as u64)
                        .unwrap_or(0);
                    (Some(m.project), Some(m.shell), status, used)
                }
                None => {
                    // Its first run has not ended yet, or crashed before it could record.
                    let made = last_touched(&e.path());
                    let young = now_secs().saturating_sub(made) < UNRECORDED_GRACE.as_secs();
                    let status = if in_ps || young {
                        Status::Running
                    } else {
                        Status::ProjectGone
                    };
                    (None, None, status, made)
                }
            };
            Some(Kept {
                kind: Kind::Environment,
                project,
                shell,
                lock: Some(locks.join(format!("{id}.store"))),
                id: Some(id),
                path: e.path(),
                bytes: 0,
                last_used,
                status,
                records: Vec::new(),
            })
        })
        .collect()
}

/// Evaluated dev shells: current while an index record points at them.
fn dev_shells(state: &StateDirs, running: &[RunState]) -> Vec<Kept> {
    let cache = DevEnvCache::new(state.devenv_cache());
    let records = cache.index_records();
    cache
        .entry_keys()
        .into_iter()
        .map(|key| {
            let dir = cache.entry_dir(&key);
            let installable = read_quietly(&dir.join("entry.json"))
                .and_then(|d| serde_json::from_slice::<crate::nix::devenv::DevEnv>(&d).ok())
                .map(|e| e.installable);
            let (project, shell) = match &installable {
                // A flake's path never holds `#` (nix could not be given it).
                Some(i) => match i.split_once('#') {
                    Some((root, attr)) => (Some(PathBuf::from(root)), attr.to_string()),
                    None => (Some(PathBuf::from(i)), "default".to_string()),
                },
                None => (None, "default".to_string()),
            };
            let pointing: Vec<PathBuf> = records
                .iter()
                .filter(|r| r.content_key.as_deref() == Some(key.as_str()))
                .map(|r| r.path.clone())
                .collect();
            let status = match &project {
                Some(p) if is_running(running, p, &shell) => Status::Running,
                Some(p) if !project_exists(p) => Status::ProjectGone,
                // Half-made (evaluation under way or failed): its lock tells which.
                None => Status::Superseded,
                Some(_) if pointing.is_empty() => Status::Superseded,
                Some(_) => Status::Current,
            };
            Kept {
                kind: Kind::DevShell,
                project,
                shell: Some(shell),
                id: None,
                last_used: last_touched(&dir.join("entry.json")).max(modified(&dir)),
                path: dir,
                bytes: 0,
                status,
                lock: Some(cache.lock_path(&key)),
                records: pointing,
            }
        })
        .collect()
}

/// Builds of profiles' tools: current while an index record points at them and the profile's
/// flake is there; running while a running environment uses that profile.
fn profile_tools(state: &StateDirs, running: &[RunState]) -> Vec<Kept> {
    let cache = DevEnvCache::new(crate::profile::tools::cache_root(state));
    let records = cache.index_records();
    cache
        .entry_keys()
        .into_iter()
        .map(|key| {
            let dir = cache.entry_dir(&key);
            let pointing: Vec<_> = records
                .iter()
                .filter(|r| r.content_key.as_deref() == Some(key.as_str()))
                .collect();
            // The profile flake: the directory of the shallowest flake.nix among the inputs.
            let flake: Option<PathBuf> = pointing
                .iter()
                .flat_map(|r| r.inputs.iter())
                .filter(|p| p.file_name().is_some_and(|n| n == "flake.nix"))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .min_by_key(|p| p.components().count())
                .and_then(|p| p.parent().map(Path::to_path_buf));
            let used = flake.as_ref().is_some_and(|f| {
                running
                    .iter()
                    .any(|r| r.profile.as_ref().is_some_and(|p| f.starts_with(p)))
            });
            let status = match &flake {
                _ if used => Status::Running,
                None => Status::Superseded,
                Some(f) if !project_exists(f) => Status::ProjectGone,
                Some(_) => Status::Current,
            };
            Kept {
                kind: Kind::ProfileTools,
                project: flake,
                shell: None,
                id: None,
                // Its `tools` link is read at each start that uses it.
                last_used: last_touched(&dir.join("tools")).max(modified(&dir)),
                path: dir,
                bytes: 0,
                status,
                lock: Some(cache.lock_path(&key)),
                records: pointing.iter().map(|r| r.path.clone()).collect(),
            }
        })
        .collect()
}

#[cfg(target_os = "linux")]
fn attach_homes(state: &StateDirs) -> Vec<Kept> {
    let Ok(rd) = std::fs::read_dir(crate::attach::home::homes_dir(state)) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let live = crate::attach::home::home_in_use(e.file_name().to_str()?)?;
            Some(Kept {
                kind: Kind::AttachHome,
                project: None,
                shell: None,
                id: None,
                last_used: modified(&e.path().join("home")),
                path: e.path(),
                bytes: 0,
                status: if live {
                    Status::Running
                } else {
                    Status::TargetGone
                },
                lock: None,
                records: Vec::new(),
            })
        })
        .collect()
}
