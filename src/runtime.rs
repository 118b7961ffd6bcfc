//! Running environments, whatever their backend. Each has a directory under the runtime
//! directory (mode 0700) holding a state file (which backend, how to reach its agent, what an
//! exec needs), the agent's log, the backend's sockets, and a lock held while it starts.
//! Finds them by id, id prefix, name or project, and cleans up after ones that died.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::util::write_atomic;

/// What `ps` shows of a running environment, how to find its agent, and what an exec into it
/// needs (so that it needs no nix on the host).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub id: String,
    pub name: Option<String>,
    pub project: PathBuf,
    /// The dev shell's name in the flake.
    pub shell: String,
    pub profile: Option<PathBuf>,
    pub network: crate::compute::Network,
    /// The backend that runs it.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Its host process and its agent's address.
    #[serde(flatten)]
    pub instance: crate::compute::Instance,
    /// Seconds since the epoch.
    pub started_at: u64,
    /// The dev environment it was started with: execs use it as it is, without nix.
    #[serde(default)]
    pub devenv: Option<crate::nix::devenv::DevEnv>,
}

fn default_backend() -> String {
    "namespaces".into()
}

#[derive(Debug, Clone)]
pub struct RunningEnv {
    pub state: RunState,
    pub dir: PathBuf,
}

impl RunningEnv {
    /// Where its agent answers.
    pub fn agent(&self) -> &crate::transport::AgentAddress {
        &self.state.instance.agent
    }
}

/// Held while an environment starts, so two `up`s do not race.
pub struct StartLock {
    _lock: Flock<File>,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// The start time of a living (not zombie) `pid`, in clock ticks since boot (field 22 of
/// /proc/PID/stat). An agent whose parent has gone stays a zombie until init reaps it.
#[cfg(target_os = "linux")]
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The start time of a living (not zombie) `pid`, in microseconds since the epoch.
#[cfg(target_os = "macos")]
pub fn process_start_time(pid: i32) -> Option<u64> {
    /// `pbi_status` of a zombie (sys/proc.h).
    const SZOMB: u32 = 5;
    // SAFETY: proc_bsdinfo is plain old data; all-zero is a valid value.
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: PROC_PIDTBSDINFO writes at most `size` bytes into `info`, which outlives the call.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    if n != size || info.pbi_status == SZOMB {
        return None;
    }
    Some(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

impl Runtime {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn env_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates the environment's runtime directory (0700) and takes its start lock.
    pub fn lock_for_start(&self, id: &str) -> Result<StartLock> {
        let dir = self.env_dir(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        let lock =
            crate::util::lock_file(&dir.join("lock"), &format!("starting the environment {id}"))?;
        Ok(StartLock { _lock: lock })
    }

    pub fn record(&self, state: &RunState) -> Result<()> {
        write_atomic(
            &self.env_dir(&state.id).join("state.json"),
            &serde_json::to_vec_pretty(state)?,
        )
    }

    /// The environment `id` if its agent is alive; a dead one's directory is removed.
    pub fn get(&self, id: &str) -> Option<RunningEnv> {
        let dir = self.env_dir(id);
        let data = std::fs::read(dir.join("state.json")).ok()?;
        let mut value: serde_json::Value = serde_json::from_slice(&data).ok()?;
        // Recorded before the agent's address was: it is the unix socket beside the state.
        if let Some(fields) = value.as_object_mut().filter(|f| !f.contains_key("agent")) {
            let agent = crate::transport::AgentAddress::Unix {
                path: dir.join("agent.sock"),
            };
            fields.insert("agent".into(), serde_json::to_value(agent).ok()?);
        }
        let state: RunState = serde_json::from_value(value).ok()?;
        if state.instance.is_alive() {
            return Some(RunningEnv { state, dir });
        }
        tracing::debug!(id, "removing the state of a stopped environment");
        let _ = std::fs::remove_dir_all(&dir);
        None
    }

    /// Every live environment.
    pub fn list(&self) -> Vec<RunningEnv> {
        let mut envs: Vec<RunningEnv> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| self.get(e.file_name().to_str()?))
                    .collect()
            })
            .unwrap_or_default();
        envs.sort_by(|a, b| a.state.id.cmp(&b.state.id));
        envs
    }

    /// Finds a live environment by exact id or name, or by a unique id prefix.
    pub fn find(&self, query: &str) -> Result<Option<RunningEnv>> {
        let all = self.list();
        if let Some(e) = all
            .iter()
            .find(|e| e.state.id == query || e.state.name.as_deref() == Some(query))
        {
            return Ok(Some(e.clone()));
        }
        let matches: Vec<&RunningEnv> = all
            .iter()
            .filter(|e| e.state.id.starts_with(query))
            .collect();
        match matches.len() {
            0 => Ok(None),
            1 => Ok(Some(matches[0].clone())),
            _ => Err(Diagnostic::new(format!(
                "'{query}' matches {} running environments",
                matches.len()
            ))
            .detail(format!(
                "candidates: {}",
                matches
                    .iter()
                    .map(|e| e.state.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .hint("use a longer id or the full name")
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, pid: i32) -> RunState {
        RunState {
            id: id.into(),
            name: Some(format!("n-{id}")),
            project: "/p".into(),
            shell: "default".into(),
            profile: None,
            network: crate::compute::Network::Host,
            backend: "namespaces".into(),
            instance: crate::compute::Instance::of_process(
                pid,
                crate::transport::AgentAddress::Unix {
                    path: "/nonexistent".into(),
                },
            ),
            started_at: 0,
            devenv: None,
        }
    }

    #[test]
    fn live_environments_are_found_by_id_prefix_and_name_and_dead_ones_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::new(tmp.path().join("run"));
        let me = std::process::id() as i32;
        for id in ["app-1111", "app-2222"] {
            let _l = rt.lock_for_start(id).unwrap();
            rt.record(&state(id, me)).unwrap();
        }
        let _l = rt.lock_for_start("gone-3333").unwrap();
        let mut dead = state("gone-3333", me);
        dead.instance.pid_start += 1;
        rt.record(&dead).unwrap();

        assert_eq!(rt.list().len(), 2);
        assert!(
            !rt.env_dir("gone-3333").exists(),
            "a stopped environment's state is removed"
        );
        assert_eq!(rt.find("app-1").unwrap().unwrap().state.id, "app-1111");
        assert_eq!(rt.find("n-app-2222").unwrap().unwrap().state.id, "app-2222");
        assert!(rt.find("app").is_err(), "ambiguous");
        assert!(rt.find("zzz").unwrap().is_none());
    }

    #[test]
    fn a_state_file_from_before_backends_reads_as_a_namespace_sandbox() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::new(tmp.path().join("run"));
        let _l = rt.lock_for_start("old-1111").unwrap();
        let me = std::process::id() as i32;
        let old = serde_json::json!({
            "id": "old-1111", "name": null, "project": "/p", "shell": "default",
            "profile": null, "network": "host", "pid": me,
            "pid_start": process_start_time(me).unwrap(), "started_at": 0
        });
        let path = rt.env_dir("old-1111").join("state.json");
        std::fs::write(&path, old.to_string()).unwrap();
        let env = rt.get("old-1111").expect("still running, still found");
        assert_eq!(env.state.backend, "namespaces");
        assert_eq!(
            env.agent(),
            &crate::transport::AgentAddress::Unix {
                path: rt.env_dir("old-1111").join("agent.sock")
            }
        );
    }
}
