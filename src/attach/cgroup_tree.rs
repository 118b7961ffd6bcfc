//! Containers of runtimes that neither runc's state files nor a CLI tell of: found in the
//! cgroup tree, where every runtime names a container's cgroup after its id.

use super::runtimes::{Container, Engine};
use super::target::process_state;

/// The containers found in the cgroup tree: each process whose cgroup path names a container
/// id, grouped by id; the container's main process is the one of its group that started first.
pub fn from_cgroups() -> Vec<Container> {
    let mut found: Vec<(Container, u64)> = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let Some((id, engine)) = container_of_cgroup(&cgroup) else {
            continue;
        };
        let Some((start, _)) = process_state(pid) else {
            continue;
        };
        match found.iter_mut().find(|(c, _)| c.id == id) {
            Some((c, first)) if start < *first => {
                c.pid = Some(pid);
                *first = start;
            }
            Some(_) => {}
            None => found.push((
                Container {
                    id,
                    names: Vec::new(),
                    engine,
                    pid: Some(pid),
                },
                start,
            )),
        }
    }
    found.into_iter().map(|(c, _)| c).collect()
}

/// The container id (64 hex digits) in a `/proc/PID/cgroup`, and the engine its cgroup's name
/// points to: `/docker/ID`, `docker-ID.scope`, `libpod-ID[.scope][/container]`,
/// `cri-containerd-ID.scope`, `crio-ID.scope`, `/kubepods/.../ID`. The unified hierarchy's
/// line is read if there is one, else the first.
pub fn container_of_cgroup(cgroup: &str) -> Option<(String, Engine)> {
    let line = cgroup
        .lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| cgroup.lines().next())?;
    let path = line.splitn(3, ':').nth(2)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        let (engine, id) = if let Some(id) = name.strip_prefix("docker-") {
            (Some(Engine::Docker), id)
        } else if let Some(id) = name.strip_prefix("libpod-") {
            (Some(Engine::Podman), id)
        } else if let Some(id) = name.strip_prefix("cri-containerd-") {
            (Some(Engine::Containerd), id)
        } else if let Some(id) = name.strip_prefix("crio-") {
            (Some(Engine::CriO), id)
        } else {
            (None, name)
        };
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let engine = engine.unwrap_or_else(|| match parts[..i].first().copied() {
            Some("docker") => Engine::Docker,
            Some("libpod_parent") => Engine::Podman,
            Some(p) if p.starts_with("kubepods") => Engine::Containerd,
            _ => Engine::Runc,
        });
        return Some((id.to_string(), engine));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_name_the_container_and_its_engine() {
        let id = "e80527aae7e45d8631caabe710745b30c2d5ed3326d21595e39d9ed420c10dee";
        for (cgroup, engine) in [
            (format!("9:name=systemd:/docker/{id}\n0::/docker/{id}\n"), Engine::Docker),
            (format!("0::/system.slice/docker-{id}.scope\n"), Engine::Docker),
            (format!("4:memory:/libpod_parent/libpod-{id}\n"), Engine::Podman),
            (
                format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope/container\n"),
                Engine::Podman,
            ),
            (format!("0::/system.slice/cri-containerd-{id}.scope\n"), Engine::Containerd),
            (format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{id}.scope\n"), Engine::CriO),
            (format!("0::/kubepods/besteffort/pod1234/{id}\n"), Engine::Containerd),
            (format!("0::/some/runtime/{id}\n"), Engine::Runc),
        ] {
            assert_eq!(
                container_of_cgroup(&cgroup),
                Some((id.to_string(), engine)),
                "{cgroup}"
            );
        }
        for cgroup in [
            "0::/user.slice/user-1000.slice/session-1.scope\n".to_string(),
            format!("0::/machine.slice/libpod-conmon-{id}.scope\n"),
            "0::/\n".to_string(),
            String::new(),
        ] {
            assert_eq!(container_of_cgroup(&cgroup), None, "{cgroup}");
        }
    }
}
