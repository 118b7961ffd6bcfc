//! The root of a namespace sandbox, as a plan: the store view at `/nix`, the project (at its
//! own path for `agentenv .`), a private home, fresh `/tmp`, `/run`, `/proc`, a minimal `/dev`, a generated `/etc`,
//! `/bin/sh` and `/usr/bin/env`. Nothing else of the host.

use std::path::{Path, PathBuf};

use crate::compute::{Network, SandboxSpec};
use crate::guest::etc::{etc_files, EtcInputs};
use crate::guest::rootfs::{RootOp, RootfsPlan};

/// Facts read from the host before the sandbox starts.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub resolv_conf: Option<Vec<u8>>,
    pub nix_conf: Option<Vec<u8>>,
    /// CA certificates to show read-only at the same path.
    pub ca_bundle: Option<PathBuf>,
    /// `/etc/localtime`, if the host has one.
    pub localtime: bool,
    /// The caller's terminal device, shown at `/dev/console` so that `ttyname` (and `tty`,
    /// `GPG_TTY=$(tty)`, tmux) finds the terminal the shell runs on.
    pub terminal: Option<PathBuf>,
}

/// What of `/proc` is hidden, as Docker and Podman hide it: kernel memory, the keys of every
/// user, timers and scheduler internals that leak other processes' activity, hardware.
pub const PROC_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
];

/// What of `/proc` is read-only: the kernel's global settings and triggers.
pub const PROC_READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub use crate::guest::etc::CA_BUNDLE;

impl HostFacts {
    pub fn read(network: Network) -> Self {
        Self {
            resolv_conf: match network {
                Network::Host => std::fs::read("/etc/resolv.conf").ok(),
                Network::None => None,
            },
            nix_conf: std::fs::read("/etc/nix/nix.conf").ok(),
            ca_bundle: Path::new(CA_BUNDLE)
                .is_file()
                .then(|| PathBuf::from(CA_BUNDLE)),
            localtime: Path::new("/etc/localtime").exists(),
            terminal: caller_terminal(),
        }
    }
}

/// The device of the first of stdin, stdout and stderr that is a terminal.
fn caller_terminal() -> Option<PathBuf> {
    use std::io::IsTerminal;
    use std::os::unix::fs::FileTypeExt;
    let ttys = [
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    ];
    (0..3).filter(|&fd| ttys[fd]).find_map(|fd| {
        let dev = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        let is_char = std::fs::metadata(&dev).is_ok_and(|m| m.file_type().is_char_device());
        (dev.starts_with("/dev/") && is_char).then_some(dev)
    })
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn bind(source: &Path, path: &Path, file: bool, read_only: bool) -> RootOp {
    RootOp::Bind {
        source: source.to_path_buf(),
        path: path.to_path_buf(),
        file,
        read_only,
    }
}

fn link(path: &str, points_to: &str) -> RootOp {
    RootOp::Symlink {
        path: p(path),
        points_to: p(points_to),
    }
}

/// Plans the root of `spec`. `userns` says whether it is built inside a user namespace.
pub fn plan_rootfs(spec: &SandboxSpec, host: &HostFacts, userns: bool) -> RootfsPlan {
    let mut ops = vec![
        spec.store.root_op(userns),
        RootOp::Tmpfs {
            path: p("/tmp"),
            mode: 0o1777,
        },
        RootOp::Tmpfs {
            path: p("/run"),
            mode: 0o755,
        },
        RootOp::Tmpfs {
            path: p("/dev"),
            mode: 0o755,
        },
        RootOp::Devpts {
            path: p("/dev/pts"),
        },
        RootOp::Tmpfs {
            path: p("/dev/shm"),
            mode: 0o1777,
        },
        RootOp::Proc { path: p("/proc") },
        link("/dev/ptmx", "pts/ptmx"),
        link("/dev/fd", "/proc/self/fd"),
        link("/dev/stdin", "/proc/self/fd/0"),
        link("/dev/stdout", "/proc/self/fd/1"),
        link("/dev/stderr", "/proc/self/fd/2"),
    ];
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        let path = Path::new("/dev").join(dev);
        ops.push(RootOp::Device {
            source: path.clone(),
            path,
        });
    }
    if let Some(tty) = &host.terminal {
        ops.push(RootOp::Device {
            source: tty.clone(),
            path: p("/dev/console"),
        });
    }
    ops.extend(PROC_MASKED.iter().map(|m| RootOp::Mask { path: p(m) }));
    ops.extend(
        PROC_READ_ONLY
            .iter()
            .map(|r| RootOp::ReadOnly { path: p(r) }),
    );
    ops.extend(etc_files(
        &spec.user,
        &EtcInputs {
            hostname: spec.hostname.clone(),
            resolv_conf: host.resolv_conf.clone(),
            nix_conf: host.nix_conf.clone(),
        },
    ));
    if let Some(ca) = &host.ca_bundle {
        ops.push(bind(ca, Path::new(CA_BUNDLE), true, true));
    }
    if host.localtime {
        ops.push(bind(
            Path::new("/etc/localtime"),
            Path::new("/etc/localtime"),
            true,
            true,
        ));
    }
    ops.push(bind(&spec.home_source, &spec.home, false, false));
    ops.push(bind(&spec.project_source, &spec.project, false, false));
    if let Some(profile) = &spec.profile {
        ops.push(bind(profile, profile, false, !spec.profile_rw));
    }
    ops.extend(spec.memory.iter().map(|m| RootOp::BindBeneath {
        source: m.source.clone(),
        path: m.path.clone(),
        file: m.file,
    }));
    ops.push(RootOp::Symlink {
        path: p("/bin/sh"),
        points_to: spec.shell.clone(),
    });
    if let Some(env) = &spec.env_tool {
        ops.push(RootOp::Symlink {
            path: p("/usr/bin/env"),
            points_to: env.clone(),
        });
    }
    RootfsPlan {
        staging: spec.staging.clone(),
        ops,
        read_only_root: true,
    }
    .sorted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::etc::UserIdentity;
    use crate::store::StoreView;

    fn spec(project: &str, home: &str) -> SandboxSpec {
        SandboxSpec {
            project: p(project),
            project_source: p(project),
            home: p(home),
            home_source: p("/state/env/home"),
            store: StoreView::over_host(Path::new("/state/env/store")),
            staging: p("/state/env/rootfs"),
            user: UserIdentity {
                uid: 1000,
                gid: 1000,
                name: "ana".into(),
                group: "ana".into(),
                home: p(home),
            },
            network: Network::Host,
            hostname: "agentenv".into(),
            shell: p("/nix/store/x-bash/bin/bash"),
            env_tool: Some(p("/nix/store/y-coreutils/bin/env")),
            profile: None,
            profile_rw: false,
            memory: vec![],
            create_dirs: vec![],
        }
    }

    #[test]
    fn project_inside_home_is_mounted_after_the_home() {
        let plan = plan_rootfs(
            &spec("/home/ana/src/app", "/home/ana"),
            &HostFacts::default(),
            true,
        );
        let pos = |path: &str| {
            plan.ops
                .iter()
                .position(|o| o.path() == Path::new(path))
                .unwrap()
        };
        assert!(pos("/home/ana") < pos("/home/ana/src/app"));
        assert!(pos("/tmp") < pos("/home/ana"));
    }

    #[test]
    fn nothing_of_the_host_is_bound_but_devices_project_home_and_ca_bundle() {
        let host = HostFacts {
            ca_bundle: Some(p(CA_BUNDLE)),
            ..Default::default()
        };
        let plan = plan_rootfs(&spec("/tmp/p", "/home/ana"), &host, true);
        let mut sources: Vec<_> = plan
            .ops
            .iter()
            .flat_map(|o| match o {
                RootOp::Bind { source, .. } | RootOp::Device { source, .. } => {
                    vec![source.display().to_string()]
                }
                RootOp::Overlay { lowers, .. } => {
                    lowers.iter().map(|l| l.display().to_string()).collect()
                }
                _ => vec![],
            })
            .collect();
        sources.sort();
        assert_eq!(
            sources,
            vec![
                "/dev/full",
                "/dev/null",
                "/dev/random",
                "/dev/tty",
                "/dev/urandom",
                "/dev/zero",
                CA_BUNDLE,
                "/nix",
                "/state/env/home",
                "/tmp/p"
            ]
        );
    }

    #[test]
    fn memory_places_are_bound_beneath_the_home_after_it() {
        let mut s = spec("/p", "/home/ana");
        s.memory = vec![crate::compute::PlaceMount {
            source: p("/state/agents/a/sessions/1/tree/.claude/CLAUDE.md"),
            path: p("/home/ana/.claude/CLAUDE.md"),
            file: true,
        }];
        let plan = plan_rootfs(&s, &HostFacts::default(), true);
        let pos = |path: &str| plan.ops.iter().position(|o| o.path() == Path::new(path));
        let at = pos("/home/ana/.claude/CLAUDE.md").unwrap();
        assert!(pos("/home/ana").unwrap() < at);
        assert!(matches!(
            &plan.ops[at],
            RootOp::BindBeneath { file: true, .. }
        ));
    }

    #[test]
    fn store_view_uses_user_xattrs_only_in_a_user_namespace() {
        let plan = plan_rootfs(&spec("/p", "/root"), &HostFacts::default(), false);
        assert!(plan.ops.iter().any(|o| matches!(
            o,
            RootOp::Overlay {
                userxattr: false,
                ..
            }
        )));
    }

    #[test]
    fn the_profile_is_read_only_inside_unless_asked() {
        let profile_bind = |rw: bool| {
            let mut spec = spec("/p", "/home/ana");
            spec.profile = Some(p("/home/ana/config"));
            spec.profile_rw = rw;
            let plan = plan_rootfs(&spec, &HostFacts::default(), true);
            plan.ops.into_iter().find_map(|o| match o {
                RootOp::Bind {
                    source, read_only, ..
                } if source == p("/home/ana/config") => Some(read_only),
                _ => None,
            })
        };
        assert_eq!(profile_bind(false), Some(true));
        assert_eq!(profile_bind(true), Some(false));
    }
}
