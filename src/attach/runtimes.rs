//! Which containers are running, from two kinds of sources: runc's and crun's state files (read
//! in microseconds, no daemon asked; podman's names from its storage file) and the podman and
//! docker CLIs when they are installed (the cgroup tree, for runtimes neither knows, is
//! `cgroup_tree`'s). Only lists and looks up PIDs; choosing is `target`'s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::target::is_live;
use crate::util::find_executable;

/// The engine that runs a container, as named to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Podman,
    Docker,
    Containerd,
    CriO,
    Runc,
    Crun,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
            Engine::Containerd => "containerd",
            Engine::CriO => "cri-o",
            Engine::Runc => "runc",
            Engine::Crun => "crun",
        })
    }
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full id.
    pub id: String,
    pub names: Vec<String>,
    pub engine: Engine,
    /// Its main process on the host, when the source knew it.
    pub pid: Option<i32>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// `name (short id, engine)`, or `short id (engine)` for a container with no name.
    pub fn describe(&self) -> String {
        match self.names.first() {
            Some(name) => format!("{name} ({}, {})", self.short_id(), self.engine),
            None => format!("{} ({})", self.short_id(), self.engine),
        }
    }
}

/// runc's state directories, each with the engine its containers belong to unless their
/// labels say otherwise. Rootless podman keeps its state under `$XDG_RUNTIME_DIR/runc`.
fn state_roots() -> Vec<(PathBuf, Engine)> {
    let mut roots = vec![(PathBuf::from("/run/runc"), Engine::Runc)];
    for (parent, engine, below) in [
        ("/run/user", Engine::Runc, Some("runc")),
        ("/run/docker/runtime-runc", Engine::Docker, None),
        ("/run/containerd/runc", Engine::Containerd, None),
    ] {
        let Ok(dirs) = std::fs::read_dir(parent) else {
            continue;
        };
        for d in dirs.flatten() {
            let engine = if d.file_name() == "moby" {
                Engine::Docker
            } else {
                engine
            };
            let path = match below {
                Some(sub) => d.path().join(sub),
                None => d.path(),
            };
            roots.push((path, engine));
        }
    }
    roots
}

#[derive(Deserialize)]
struct RuncState {
    id: String,
    init_process_pid: i32,
    init_process_start: u64,
    #[serde(default)]
    config: RuncConfig,
}

#[derive(Deserialize, Default)]
struct RuncConfig {
    #[serde(default)]
    labels: Vec<String>,
}

/// The containers whose runc or crun state file names a live init process.
pub fn from_state_files() -> Vec<Container> {
    let mut found = Vec::new();
    for (root, engine) in state_roots() {
        let Ok(dirs) = std::fs::read_dir(&root) else {
            continue;
        };
        for d in dirs.flatten() {
            if let Some(c) = read_state(&d.path().join("state.json"), engine) {
                found.push(c);
            }
        }
    }
    found.extend(super::crun::from_state_files());
    found
}

fn read_state(path: &Path, engine: Engine) -> Option<Container> {
    let state: RuncState = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if !is_live(state.init_process_pid, state.init_process_start) {
        return None;
    }
    let label = |key: &str| {
        state
            .config
            .labels
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    };
    let podman = label("io.container.manager") == Some("libpod");
    let names = match label("bundle") {
        Some(bundle) if podman => podman_names(Path::new(bundle), &state.id),
        _ if engine == Engine::Docker => docker_names(&state.id),
        _ => Vec::new(),
    };
    Some(Container {
        id: state.id,
        names,
        engine: if podman { Engine::Podman } else { engine },
        pid: Some(state.init_process_pid),
    })
}

/// A podman container's names, from the `containers.json` of the storage its bundle
/// (`.../overlay-containers/ID/userdata`) lives in.
pub(super) fn podman_names(bundle: &Path, id: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        names: Vec<String>,
    }
    let Some(file) = bundle.ancestors().nth(2).map(|d| d.join("containers.json")) else {
        return Vec::new();
    };
    std::fs::read(file)
        .ok()
        .and_then(|data| serde_json::from_slice::<Vec<Entry>>(&data).ok())
        .and_then(|entries| entries.into_iter().find(|e| e.id == id))
        .map(|e| e.names)
        .unwrap_or_default()
}

/// A docker container's name, from its `config.v2.json` in docker's default data root.
fn docker_names(id: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(rename = "Name")]
        name: String,
    }
    let file = Path::new("/var/lib/docker/containers")
        .join(id)
        .join("config.v2.json");
    std::fs::read(file)
        .ok()
        .and_then(|data| serde_json::from_slice::<Config>(&data).ok())
        .map(|c| vec![c.name.trim_start_matches('/').to_string()])
        .unwrap_or_default()
}

/// The running containers the podman and docker CLIs list (those that are installed and
/// answer).
pub fn from_clis() -> Vec<Container> {
    let mut found = Vec::new();
    if find_executable("podman").is_some() {
        let format = "{{.ID}}\t{{.Names}}\t{{.Pid}}";
        if let Some(out) = run_cli("podman", &["ps", "--no-trunc", "--format", format]) {
            found.extend(parse_ps(&out, Engine::Podman));
        }
    }
    if docker_reachable() {
        let format = "{{.ID}}\t{{.Names}}";
        if let Some(out) = run_cli("docker", &["ps", "--no-trunc", "--format", format]) {
            found.extend(parse_ps(&out, Engine::Docker));
        }
    }
    found
}

/// Every container the podman and docker CLIs know, running or not, with its status as they
/// word it (`Exited (0) 2 minutes ago`, `Created`). Slow: only for explaining an error.
pub fn all_from_clis() -> Vec<(Container, String)> {
    let format = "{{.ID}}\t{{.Names}}\t{{.Status}}";
    let mut found = Vec::new();
    let clis = [
        (
            "podman",
            Engine::Podman,
            find_executable("podman").is_some(),
        ),
        ("docker", Engine::Docker, docker_reachable()),
    ];
    for (program, engine, _) in clis.into_iter().filter(|c| c.2) {
        if let Some(out) = run_cli(program, &["ps", "-a", "--no-trunc", "--format", format]) {
            found.extend(parse_ps_all(&out, engine));
        }
    }
    found
}

/// Lines of `ID<TAB>NAME[,NAME...]<TAB>STATUS`.
fn parse_ps_all(out: &str, engine: Engine) -> Vec<(Container, String)> {
    out.lines()
        .filter_map(|line| {
            let (head, status) = line.rsplit_once('\t')?;
            let c = parse_ps(head, engine).pop()?;
            Some((c, status.trim().to_string()))
        })
        .collect()
}

/// Whether a docker daemon may answer: asking the CLI when none does takes a while.
fn docker_reachable() -> bool {
    let socket = Path::new("/var/run/docker.sock").exists()
        || std::env::var_os("DOCKER_HOST").is_some_and(|h| !h.is_empty());
    socket && find_executable("docker").is_some()
}

fn run_cli(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    if !out.status.success() {
        tracing::debug!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// Lines of `ID<TAB>NAME[,NAME...][<TAB>PID]`.
pub fn parse_ps(out: &str, engine: Engine) -> Vec<Container> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let id = fields.next()?.trim();
            if id.is_empty() {
                return None;
            }
            let names = fields
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
            let pid = fields
                .next()
                .and_then(|p| p.trim().parse().ok())
                .filter(|&p| p > 0);
            Some(Container {
                id: id.to_string(),
                names,
                engine,
                pid,
            })
        })
        .collect()
}

/// `from` merged into `into`: one entry per id, names joined, a known PID kept, and the
/// engine a CLI named preferred over a bare `runc` or `crun`.
pub fn merge(into: &mut Vec<Container>, from: Vec<Container>) {
    for c in from {
        match into.iter_mut().find(|e| e.id == c.id) {
            Some(e) => {
                for n in c.names {
                    if !e.names.contains(&n) {
                        e.names.push(n);
                    }
                }
                e.pid = e.pid.or(c.pid);
                if matches!(e.engine, Engine::Runc | Engine::Crun) {
                    e.engine = c.engine;
                }
            }
            None => into.push(c),
        }
    }
}

/// The main PID of `c` as its engine reports it (`inspect -f '{{.State.Pid}}'`).
pub fn pid_from_cli(c: &Container) -> Option<i32> {
    let program = match c.engine {
        Engine::Podman => "podman",
        Engine::Docker => "docker",
        Engine::Containerd | Engine::CriO | Engine::Runc | Engine::Crun => return None,
    };
    run_cli(program, &["inspect", "-f", "{{.State.Pid}}", &c.id])?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 0)
}

/// A podman storage under `root` whose `containers.json` is `json`, and the bundle of
/// container `id` in it, as podman lays them out (for the state-file readers' tests).
#[cfg(test)]
pub(super) fn podman_storage(root: &Path, id: &str, json: &str) -> PathBuf {
    let storage = root.join("storage/overlay-containers");
    let bundle = storage.join(id).join("userdata");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(storage.join("containers.json"), json).unwrap();
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::target::process_state;

    #[test]
    fn ps_lines_give_ids_names_and_pids() {
        let list = parse_ps("abc123\tweb,alias\t4242\ndef456\tdb\t0\n\n", Engine::Podman);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].names, vec!["web", "alias"]);
        assert_eq!(list[0].pid, Some(4242));
        assert_eq!(list[1].pid, None, "a PID of 0 means not running");
        assert_eq!(list[1].describe(), "db (def456, podman)");
    }

    #[test]
    fn podman_state_files_give_the_pid_and_names_from_storage() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = podman_storage(
            tmp.path(),
            "c0ffee",
            r#"[{"id":"other","names":["x"]},{"id":"c0ffee","names":["rootless-web"]}]"#,
        );
        let me = std::process::id() as i32;
        let (start, _) = process_state(me).unwrap();
        let state = serde_json::json!({
            "id": "c0ffee",
            "init_process_pid": me,
            "init_process_start": start,
            "config": {"labels": ["io.container.manager=libpod", format!("bundle={}", bundle.display())]}
        });
        let file = tmp.path().join("state.json");
        std::fs::write(&file, state.to_string()).unwrap();
        let c = read_state(&file, Engine::Runc).unwrap();
        assert_eq!(c.engine, Engine::Podman);
        assert_eq!(c.names, vec!["rootless-web"]);
        assert_eq!(c.pid, Some(me));

        let stale = serde_json::json!({"id": "c0ffee", "init_process_pid": me, "init_process_start": start + 1});
        std::fs::write(&file, stale.to_string()).unwrap();
        assert_eq!(
            read_state(&file, Engine::Runc),
            None,
            "a reused PID is not the container"
        );
    }

    #[test]
    fn ps_a_lines_give_the_status_as_worded() {
        let out = "abc\tweb\tExited (137) 2 seconds ago\ndef\tdb,alias\tCreated\n";
        let list = parse_ps_all(out, Engine::Docker);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].0.names, vec!["web"]);
        assert_eq!(list[0].0.pid, None);
        assert_eq!(list[0].1, "Exited (137) 2 seconds ago");
        assert_eq!(list[1].0.names, vec!["db", "alias"]);
        assert_eq!(list[1].1, "Created");
    }

    #[test]
    fn merging_keeps_one_entry_per_id() {
        let mut list = vec![Container {
            id: "abc".into(),
            names: vec![],
            engine: Engine::Runc,
            pid: Some(7),
        }];
        merge(
            &mut list,
            parse_ps("abc\tweb\nfff\tother\n", Engine::Docker),
        );
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].names, vec!["web"]);
        assert_eq!(list[0].engine, Engine::Docker);
        assert_eq!(list[0].pid, Some(7));
    }
}
