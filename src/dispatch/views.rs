//! What a dispatched session sees of the host, from the dispatching side: the host view (the
//! default), the namespace sandbox of `agentenv .` (`--isolated`), a container there
//! (`--container`), or no namespace at all (`--no-namespaces`). For each: the spec `__remote session` is given, and the exec request
//! that starts the command in it. Building the view on the host is `remote`'s.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;

use super::container::{ContainerProfile, ContainerSpec};
use super::host_view::{HostViewSpec, ViewTree};
use super::isolated::{home_inside, IsolatedSpec, WORK_DIR};
use super::layout::{self, join};
use super::remote::{RemoteFacts, SessionView};
use crate::nix::devenv::DevEnv;
use crate::profile::ProfileEnv;
use crate::proto::message::{ExecSpec, WinSize};

/// A profile as a session on the host has it: at `dir` (its copy in the host's cache), with
/// what it adds to the environment, and the lines that run its `activate.sh`.
pub struct HostProfile {
    pub dir: PathBuf,
    pub env: ProfileEnv,
    pub hook: String,
}

/// Which view a dispatch asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    HostView,
    Isolated,
    NoNamespaces,
    /// In this container (or `pid:N`) on the host, as `agentenv attach` there.
    Container(String),
}

impl Isolation {
    /// The container on the host, for `Container`.
    pub fn container(&self) -> Option<&str> {
        match self {
            Isolation::Container(c) => Some(c),
            _ => None,
        }
    }
}

/// Where agentenv is on the host: its directory, its binary there, the session's directory.
#[derive(Debug, Clone, Copy)]
pub struct SessionPaths<'a> {
    pub dir: &'a str,
    pub bin: &'a str,
    pub session: &'a str,
}

/// A session's view as planned for one host.
pub struct PlannedView {
    pub isolation: Isolation,
    pub view: SessionView,
    /// Directories of the session's directory to make before it starts (`home` first: an
    /// agent's memory is unpacked there), relative to it.
    pub dirs: Vec<PathBuf>,
    /// `$HOME` and the working directory of commands, as they see them (in a container: the
    /// runner's, on the host).
    pub home: PathBuf,
    pub cwd: PathBuf,
}

/// The view `isolation` names, for the session at `paths`, showing `profile` (its copy on the
/// host) read-only at its path; `memory`: an agent's memory is unpacked into its home.
pub fn plan_view(
    isolation: &Isolation,
    paths: SessionPaths,
    remote: &RemoteFacts,
    devenv: &DevEnv,
    profile: Option<&HostProfile>,
    memory: bool,
) -> PlannedView {
    let SessionPaths { dir, session, .. } = paths;
    let sub = |name: &str| PathBuf::from(join(session, name));
    let names = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
    let isolation = isolation.clone();
    let profile_dir = profile.map(|p| p.dir.as_path());
    match isolation {
        Isolation::HostView => {
            let home = PathBuf::from(if remote.home.is_empty() {
                "/"
            } else {
                &remote.home
            });
            let tree = |source: PathBuf, at: PathBuf| ViewTree {
                source,
                at,
                read_only: false,
            };
            let mut trees = vec![
                tree(sub("home"), home.clone()),
                tree(sub("run"), PathBuf::from("/run/agentenv")),
            ];
            let mut dirs = names(&["home", "run"]);
            if let Some(p) = profile_dir {
                // After the home: agentenv's directory may be below it, and the private home
                // then needs the profile's mount point.
                match p.strip_prefix(&home) {
                    Ok(rel) if home != std::path::Path::new("/") => {
                        dirs.push(PathBuf::from("home").join(rel))
                    }
                    _ => {}
                }
                trees.push(ViewTree {
                    source: p.to_path_buf(),
                    at: p.to_path_buf(),
                    read_only: true,
                });
            }
            PlannedView {
                isolation,
                view: SessionView::Host(HostViewSpec {
                    nix_dir: PathBuf::from(join(dir, layout::NIX)),
                    trees,
                }),
                dirs,
                cwd: home.clone(),
                home,
            }
        }
        Isolation::Isolated => {
            let home = home_inside(&remote.home);
            PlannedView {
                isolation,
                view: SessionView::Isolated(IsolatedSpec {
                    nix_dir: PathBuf::from(join(dir, layout::NIX)),
                    session_dir: PathBuf::from(session),
                    home: home.clone(),
                    shell: devenv.shell.clone(),
                    env_tool: devenv.env_tool.clone(),
                    profile: profile_dir.map(std::path::Path::to_path_buf),
                }),
                dirs: names(&["home", "work"]),
                home,
                cwd: PathBuf::from(WORK_DIR),
            }
        }
        Isolation::Container(ref target) => PlannedView {
            view: SessionView::Container(Box::new(ContainerSpec {
                target: target.clone(),
                nix_dir: PathBuf::from(join(dir, layout::NIX)),
                home: sub("home"),
                private_home: profile.is_some() || memory,
                scratch: sub("run"),
                devenv: devenv.clone(),
                profile: profile.map(|p| ContainerProfile {
                    dir: p.dir.clone(),
                    env: p.env.clone(),
                    hook: p.hook.clone(),
                }),
            })),
            isolation,
            dirs: names(&["home", "run"]),
            home: sub("home"),
            cwd: PathBuf::from(session),
        },
        Isolation::NoNamespaces => PlannedView {
            isolation,
            view: SessionView::Bare {
                scratch: sub("run"),
            },
            dirs: names(&["home", "run"]),
            home: sub("home"),
            cwd: sub("home"),
        },
    }
}

/// The exec request for `command` (a shell if empty) in `view`: nix's script for the toolbox,
/// the profile's additions, the environment, the caller's terminal. In the host view and with
/// no namespace, the host's PATH entries come first and its environment is kept; in the
/// sandbox, nothing of the host's; in a container, the runner that attaches to it.
pub fn exec_spec(
    view: &PlannedView,
    devenv: &DevEnv,
    command: &[OsString],
    remote: &RemoteFacts,
    paths: SessionPaths,
    host: &str,
    profile: Option<&HostProfile>,
) -> ExecSpec {
    use crate::attach::script::{path_after_target, without_build_dir};
    // A terminal here gets one there, for a shell or a command (`-- htop`), as with
    // `agentenv . -- CMD`.
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tty = interactive
        .then(|| crate::terminal::local_winsize().unwrap_or(WinSize { rows: 24, cols: 80 }));
    let host_var = |key: &str| {
        remote
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let host_path = host_var("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let host_env = || -> Vec<(OsString, OsString)> {
        remote
            .env
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "SSH_CLIENT" | "SSH_CONNECTION"))
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    };
    let mut nix_rc = without_build_dir(&devenv.rc_script_for(&view.cwd));
    nix_rc.push('\n');
    if let Some(p) = profile {
        // As in `agentenv PATH`: its bin/ before the toolbox's entries, its tools after them.
        nix_rc.push_str(&p.env.path_lines());
    }
    let (mut rc, shell, mut env) = match view.isolation {
        Isolation::HostView => (
            format!("{nix_rc}{}", path_after_target(&host_path)),
            devenv.shell.clone(),
            host_env(),
        ),
        Isolation::Isolated => {
            let user = host_var("USER").unwrap_or_else(|| "user".into());
            let env = vec![
                ("HOME".into(), view.home.clone().into()),
                ("USER".into(), user.clone().into()),
                ("LOGNAME".into(), user.into()),
                ("SHELL".into(), devenv.shell.clone().into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ];
            (nix_rc, devenv.shell.clone(), env)
        }
        // The runner plans the rest on the host, where the container is read.
        Isolation::Container(_) => return container_exec(view, paths, command, host, tty),
        Isolation::NoNamespaces => {
            // There is no /nix: the toolbox's paths name its copy in agentenv's directory.
            let store = join(paths.dir, layout::STORE);
            let moved = |s: &str| s.replace("/nix/store/", &format!("{store}/"));
            let mut env = host_env();
            env.retain(|(k, _)| k != "HOME");
            env.push(("HOME".into(), view.home.clone().into()));
            (
                format!("{}{}", moved(&nix_rc), path_after_target(&host_path)),
                PathBuf::from(moved(&devenv.shell.to_string_lossy())),
                env,
            )
        }
    };
    if !rc.ends_with('\n') {
        rc.push('\n');
    }
    rc.push_str("export PATH\nHISTFILE=~/.bash_history\n");
    for key in ["TERM", "COLORTERM", "NO_COLOR", "LANG"] {
        if let Some(v) = std::env::var_os(key) {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), v));
        }
    }
    env.push(("AGENTENV".into(), "1".into()));
    env.push(("AGENTENV_DISPATCH".into(), host.into()));
    if let Some(p) = profile {
        // Before nix's script runs, so the toolbox's variables win; the host's too.
        for (k, v) in &p.env.vars {
            if !env.iter().any(|(e, _)| e == k.as_str()) {
                env.push((k.into(), v.into()));
            }
        }
        rc.push_str(&p.hook);
        if interactive && command.is_empty() {
            rc.push_str(&p.env.init_lines());
        }
    }
    ExecSpec {
        rc_script: rc,
        shell,
        command: (!command.is_empty()).then(|| command.to_vec()),
        cwd: view.cwd.clone(),
        env,
        prompt_name: host.to_string(),
        tty,
        stdin_script: command.is_empty() && !interactive,
        passed_stdio: false,
    }
}

/// The exec request for `command` in a container: the runner attaches and runs it there, with
/// the container's environment and the toolbox's and profile's on top (`__remote attach`
/// plans that on the host, where the container is read); only the caller's terminal is
/// passed from here. The runner is started by the host's `sh`.
fn container_exec(
    view: &PlannedView,
    paths: SessionPaths,
    command: &[OsString],
    host: &str,
    tty: Option<WinSize>,
) -> ExecSpec {
    let mut env: Vec<(OsString, OsString)> = vec![("PATH".into(), "/usr/bin:/bin".into())];
    for key in ["TERM", "COLORTERM", "NO_COLOR"] {
        if let Some(v) = std::env::var_os(key) {
            env.push((key.into(), v));
        }
    }
    env.push(("AGENTENV_DISPATCH".into(), host.into()));
    let spec = join(paths.session, layout::SPEC);
    let mut runner: Vec<OsString> = vec![
        paths.bin.into(),
        "__remote".into(),
        "attach".into(),
        spec.into(),
    ];
    if !command.is_empty() {
        runner.push("--".into());
        runner.extend(command.iter().cloned());
    }
    ExecSpec {
        rc_script: String::new(),
        shell: PathBuf::from("/bin/sh"),
        command: Some(runner),
        cwd: view.cwd.clone(),
        env,
        prompt_name: host.to_string(),
        tty,
        stdin_script: false,
        passed_stdio: false,
    }
}
