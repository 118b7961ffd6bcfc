//! crun's state files, podman's usual runtime (rootless podman's above all): `ID/status` under
//! `/run/crun`, or `$XDG_RUNTIME_DIR/crun` for a rootless engine. The status is JSON with the
//! init process's PID and start time and the bundle; `config.json` beside it is a copy of the
//! container's OCI spec, whose annotations say whether podman made it. Names come from
//! podman's storage, as for runc.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::runtimes::{podman_names, Container, Engine};
use super::target::is_live;

/// crun's state directories: root's, and each rootless user's.
fn state_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/run/crun")];
    if let Ok(users) = std::fs::read_dir("/run/user") {
        roots.extend(users.flatten().map(|d| d.path().join("crun")));
    }
    roots
}

#[derive(Deserialize)]
struct Status {
    pid: i32,
    /// Missing before crun 1.0; 0 when crun could not read it.
    #[serde(rename = "process-start-time", default)]
    process_start_time: u64,
    bundle: String,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// The containers whose crun status names a live init process.
pub fn from_state_files() -> Vec<Container> {
    let mut found = Vec::new();
    for root in state_roots() {
        let Ok(dirs) = std::fs::read_dir(&root) else {
            continue;
        };
        found.extend(dirs.flatten().filter_map(|d| read_status(&d.path())));
    }
    found
}

/// The container of crun's state directory `dir` (named by its id), if its process runs.
fn read_status(dir: &Path) -> Option<Container> {
    let id = dir.file_name()?.to_str()?.to_string();
    let status: Status = serde_json::from_slice(&std::fs::read(dir.join("status")).ok()?).ok()?;
    if !is_live(status.pid, status.process_start_time) {
        return None;
    }
    let spec: Spec = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|data| serde_json::from_slice(&data).ok())
        .unwrap_or_default();
    let podman = spec
        .annotations
        .get("io.container.manager")
        .is_some_and(|m| m == "libpod");
    let names = match podman {
        true => podman_names(Path::new(&status.bundle), &id),
        false => Vec::new(),
    };
    Some(Container {
        id,
        names,
        engine: if podman { Engine::Podman } else { Engine::Crun },
        pid: Some(status.pid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::runtimes::podman_storage;
    use crate::attach::target::process_state;

    /// crun's state directory for `id` in `root`: its status and its copy of the spec.
    fn state_dir(root: &Path, id: &str, status: serde_json::Value, spec: &str) -> PathBuf {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("status"), status.to_string()).unwrap();
        std::fs::write(dir.join("config.json"), spec).unwrap();
        dir
    }

    #[test]
    fn podman_containers_get_their_names_from_storage() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = podman_storage(
            tmp.path(),
            "c0ffee",
            r#"[{"id":"c0ffee","names":["rootless-web"]}]"#,
        );
        let me = std::process::id() as i32;
        let (start, _) = process_state(me).unwrap();
        let status = serde_json::json!({
            "pid": me,
            "process-start-time": start,
            "cgroup-path": "",
            "scope": "",
            "rootfs": "/x/merged",
            "systemd-cgroup": false,
            "bundle": bundle,
            "created": "2024-05-01T10:00:00.000000000Z",
            "owner": "ana",
            "detached": true,
            "external_descriptors": "[\"/dev/null\",\"pipe:[1]\",\"pipe:[2]\"]"
        });
        let spec = r#"{"ociVersion":"1.0.0","annotations":{"io.container.manager":"libpod"}}"#;
        let dir = state_dir(tmp.path(), "c0ffee", status, spec);
        let c = read_status(&dir).unwrap();
        assert_eq!(c.id, "c0ffee");
        assert_eq!(c.engine, Engine::Podman);
        assert_eq!(c.names, vec!["rootless-web"]);
        assert_eq!(c.pid, Some(me));
        assert_eq!(c.describe(), "rootless-web (c0ffee, podman)");
    }

    #[test]
    fn other_containers_are_crun_s_and_stale_states_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let (start, _) = process_state(me).unwrap();
        let plain = serde_json::json!({"pid": me, "bundle": "/srv/bundle", "rootfs": "rootfs"});
        let c = read_status(&state_dir(tmp.path(), "plain", plain, "{}")).unwrap();
        assert_eq!((c.engine, c.names.len()), (Engine::Crun, 0));
        assert_eq!(c.describe(), "plain (crun)");

        let reused =
            serde_json::json!({"pid": me, "process-start-time": start + 1, "bundle": "/b"});
        assert_eq!(
            read_status(&state_dir(tmp.path(), "reused", reused, "{}")),
            None,
            "a reused PID is not the container"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id() as i32;
        child.wait().unwrap();
        let exited = serde_json::json!({"pid": gone, "bundle": "/b"});
        assert_eq!(
            read_status(&state_dir(tmp.path(), "exited", exited, "{}")),
            None
        );
        std::fs::create_dir(tmp.path().join(".empty-directory")).unwrap();
        assert_eq!(read_status(&tmp.path().join(".empty-directory")), None);
    }
}
