//! Putting the session into the target's cgroups, as `podman exec` does, so the target's limits
//! and accounting cover it and `podman top` shows it. Best effort: a cgroup that refuses (or a
//! frozen one, which would freeze the session) is skipped. Nothing is created or left behind.

use std::path::{Path, PathBuf};

/// The `cgroup.procs` files of the target's cgroups that this process is not already in,
/// from the target's and our `/proc/PID/cgroup` and the host's mount table.
pub fn cgroup_procs_files(theirs: &str, ours: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mounts = cgroup_mounts(mountinfo);
    theirs
        .lines()
        .filter(|line| !ours.lines().any(|o| o == *line))
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            // A frozen v1 freezer cgroup would stop the session as soon as it joined.
            if controllers == "freezer" {
                return None;
            }
            let wanted: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
            let (mount_point, _) = mounts.iter().find(|(_, opts)| {
                if wanted.is_empty() {
                    opts.is_empty()
                } else {
                    wanted.iter().all(|c| opts.contains(c))
                }
            })?;
            Some(
                mount_point
                    .join(path.trim_start_matches('/'))
                    .join("cgroup.procs"),
            )
        })
        .collect()
}

/// (mount point, controllers) of each cgroup hierarchy mounted at its root; a cgroup2 mount
/// has no controllers listed.
fn cgroup_mounts(mountinfo: &str) -> Vec<(PathBuf, Vec<&str>)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.get(3) != Some(&"/") {
                return None;
            }
            let mount_point = PathBuf::from(left.get(4)?);
            match *right.first()? {
                "cgroup2" => Some((mount_point, Vec::new())),
                "cgroup" => {
                    let opts = right
                        .get(2)?
                        .split(',')
                        .filter(|o| *o != "rw" && *o != "ro");
                    Some((mount_point, opts.collect()))
                }
                _ => None,
            }
        })
        .collect()
}

/// The files to write for the target `pid`, read now (on the host).
pub fn target_cgroups(pid: i32) -> Vec<PathBuf> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    cgroup_procs_files(
        &read(&format!("/proc/{pid}/cgroup")),
        &read("/proc/self/cgroup"),
        &read("/proc/self/mountinfo"),
    )
}

/// Moves this process into each cgroup of `files`, skipping any that refuses.
pub fn join_cgroups(files: &[PathBuf]) {
    for file in files {
        let frozen = file
            .parent()
            .map(|d| {
                std::fs::read_to_string(d.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
            })
            .unwrap_or(false);
        if frozen {
            tracing::debug!("{} is frozen; not joining it", file.display());
            continue;
        }
        // "0" is the writing process itself, whatever PID namespace it is in.
        if let Err(e) = std::fs::write(file, "0") {
            tracing::debug!("cannot join {}: {e}", parent(file).display());
        }
    }
}

fn parent(file: &Path) -> &Path {
    file.parent().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
34 31 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
35 31 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn each_hierarchy_maps_to_its_mount_and_shared_ones_are_skipped() {
        let theirs = "4:cpu:/libpod/c1\n3:freezer:/libpod/c1\n2:name=systemd:/libpod/c1\n0::/libpod/c1\n1:cpuset:/\n";
        let ours = "1:cpuset:/\n";
        assert_eq!(
            cgroup_procs_files(theirs, ours, MOUNTINFO),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu/libpod/c1/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/systemd/libpod/c1/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/libpod/c1/cgroup.procs"),
            ]
        );
    }
}
