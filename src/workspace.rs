//! A project opened as an environment: its flake, the evaluated dev environment, its state
//! directories and the user it runs as, and what follows from them for every verb: the
//! sandbox to build, the variables inside, the exec request for a running environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::compute::{Backend, Network, SandboxSpec};
use crate::diag::Diagnostic;
use crate::envs::EnvDirs;
use crate::guest::etc::UserIdentity;
use crate::guest::launch::{plan_launch, Launch, LaunchMode};
use crate::nix::devenv::{load_or_evaluate, DevEnv};
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::profile::env::quote;
use crate::profile::ProfileEnv;
use crate::proto::message::{ExecSpec, WinSize};
use crate::runtime::{RunningEnv, Runtime};
use crate::store::LayerClaim;
use crate::transport::AgentAddress;

/// Host variables that describe the terminal and locale, not the host; they pass through.
const PASSED_THROUGH: &[&str] = &[
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "NO_COLOR",
    "NIX_CONFIG",
];

pub struct Workspace {
    pub target: FlakeTarget,
    pub state: StateDirs,
    pub devenv: DevEnv,
    pub env_dirs: EnvDirs,
    /// Shown read-write at its own path.
    pub project: PathBuf,
    pub user: UserIdentity,
    /// The profile activated into the environment's home, if any.
    pub profile: Option<ActiveProfile>,
    /// Whether the profile is writable inside (`--profile-rw`, `profile_rw` in config.toml).
    pub profile_rw: bool,
    /// `--refresh`: evaluate again, and build again what failed to build.
    pub refresh: bool,
    /// Paths of the home (relative) the profile makes no links at: an agent's memory is there.
    pub profile_except: Vec<PathBuf>,
    /// An agent's memory places, shown read-write in the home.
    pub memory: Vec<crate::compute::PlaceMount>,
}

/// A profile in an environment: its directory (shown at the same path inside) and what it adds
/// to the shell.
pub struct ActiveProfile {
    pub dir: PathBuf,
    pub env: ProfileEnv,
    /// Its `activate.sh`, when the activation left it to be run inside (see `run_profile_hook`).
    pub pending_hook: Option<PathBuf>,
}

impl Workspace {
    /// `open`, with the dev environment evaluated where `backend` evaluates it.
    pub fn open_with(backend: &dyn Backend, arg: &str, cwd: &Path, refresh: bool) -> Result<Self> {
        let target = FlakeTarget::resolve(arg, cwd)?;
        let state = StateDirs::from_env()?;
        let devenv = backend.dev_env(&target, &state, refresh)?;
        let mut ws = Self::with_devenv(target, state, devenv);
        ws.refresh = refresh;
        Ok(ws)
    }

    pub fn open_target(target: FlakeTarget, refresh: bool) -> Result<Self> {
        let state = StateDirs::from_env()?;
        let (devenv, outcome) = load_or_evaluate(&target, &state, refresh)?;
        tracing::debug!(?outcome, shell = %devenv.shell.display(), "dev environment ready");
        let mut ws = Self::with_devenv(target, state, devenv);
        ws.refresh = refresh;
        Ok(ws)
    }

    /// The workspace of a running environment, with the dev environment it was started with:
    /// no nix runs, and an edit of the flake since does not change what its execs get.
    pub fn of_running(running: &RunningEnv) -> Result<Self> {
        let target = FlakeTarget {
            root: running.state.project.clone(),
            attr: (running.state.shell != "default").then(|| running.state.shell.clone()),
        };
        match &running.state.devenv {
            Some(devenv) => Ok(Self::with_devenv(
                target,
                StateDirs::from_env()?,
                devenv.clone(),
            )),
            // Started by an agentenv that did not record it.
            None => Self::open_target(target, false),
        }
    }

    /// A workspace whose dev environment was evaluated elsewhere (a running one, a VM's guest).
    pub fn with_devenv(target: FlakeTarget, state: StateDirs, devenv: DevEnv) -> Self {
        let env_dirs = EnvDirs::for_target(&state, &target);
        let project = project_dir(&target.root);
        let user = current_user(&project);
        Self {
            target,
            state,
            devenv,
            env_dirs,
            project,
            user,
            profile: None,
            profile_rw: false,
            refresh: false,
            profile_except: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// The profile chosen by `--profile`, `$AGENTENV_PROFILE` or config.toml, unless
    /// `no_profile`.
    pub fn chosen_profile(&self, arg: Option<&Path>, no_profile: bool) -> Result<Option<PathBuf>> {
        if no_profile {
            return Ok(None);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.user.home.clone());
        crate::profile::config::chosen_profile(arg, &home, &self.state.config.join("config.toml"))
    }

    /// Whether the profile is to be writable inside: `flag` (`--profile-rw`), else
    /// `profile_rw` in config.toml.
    pub fn chosen_profile_rw(&self, flag: bool) -> Result<bool> {
        Ok(flag
            || crate::profile::config::configured_profile_rw(
                &self.state.config.join("config.toml"),
            )?)
    }

    /// Activates `dir` into the environment's private home (undoing any other profile), or,
    /// with `None`, undoes whatever profile the home has: the bare dev shell.
    pub fn use_profile(&mut self, dir: Option<PathBuf>) -> Result<()> {
        let state = self.env_dirs.profile_state();
        match dir {
            None => {
                crate::profile::deactivate_from(&state)?;
                self.profile = None;
            }
            Some(dir) => {
                let home = self.env_dirs.home();
                std::fs::create_dir_all(&home)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", home.display()))?;
                let done = crate::profile::activate_except(
                    &dir,
                    &home,
                    &state,
                    crate::profile::HookRun::ByCaller,
                    &self.profile_except,
                )?;
                for w in &done.warnings {
                    tracing::warn!("{w}");
                }
                let (mut env, pending_hook) = (done.env, done.pending_hook);
                let tools_cache = crate::profile::tools::cache_root(&self.state);
                if let Some(bin) =
                    crate::profile::tools::cached_tools(&env, &tools_cache, self.refresh)
                {
                    if !env.path_append.contains(&bin) {
                        env.path_append.push(bin);
                    }
                }
                self.profile = Some(ActiveProfile {
                    dir,
                    env,
                    pending_hook,
                });
            }
        }
        Ok(())
    }

    /// Runs the profile's `activate.sh` if the activation left it to run: inside, where `$HOME`
    /// is the environment's home, with the dev shell's and the profile's PATH, in the profile's
    /// directory; its output goes to stderr. It runs in the environment whose agent answers at
    /// `agent`, or else in a sandbox of its own made by `backend`. The outcome is recorded (a
    /// failed script runs again next time) and a failure is an error.
    pub fn run_profile_hook(
        &mut self,
        backend: &dyn Backend,
        network: Network,
        agent: Option<&AgentAddress>,
    ) -> Result<()> {
        let Some(p) = &self.profile else {
            return Ok(());
        };
        let Some(hook) = p.pending_hook.clone() else {
            return Ok(());
        };
        let dir = p.dir.clone();
        let mode = LaunchMode::Command(crate::profile::hook::hook_command(&hook));
        // The shellHook's output too goes to stderr.
        let mut rc_script = String::from(crate::profile::hook::OUTPUT_TO_STDERR);
        rc_script.push_str(&self.rc_script_for(&dir, false));
        let code = match agent {
            Some(agent) => {
                let mut spec = self.exec_spec(&dir, &mode, None, &[]);
                spec.rc_script = rc_script;
                crate::proto::client::exec(agent, spec, false)?
            }
            None => {
                let launch = plan_launch(
                    &rc_script,
                    &self.devenv.shell,
                    &mode,
                    &dir,
                    self.base_env(),
                    &self.target.display_name(),
                );
                let layer = self.claim_layer()?;
                // The environment itself starts after this one: keep this process clean.
                backend.run_aside(&self.sandbox_spec(network, &layer), &launch)?
            }
        };
        crate::profile::record_hook_outcome(&self.env_dirs.profile_state(), code == 0)?;
        if let Some(p) = self.profile.as_mut() {
            p.pending_hook = None;
        }
        if code == 0 {
            return Ok(());
        }
        Err(crate::profile::hook::hook_failed(
            &hook,
            Some(code),
            "the profile's links are in place; fix the script and start the environment again (that runs it again), or start it with --no-profile",
        ))
    }

    /// nix's script for `cwd`, followed by the profile's PATH entries (its `bin/` before the
    /// dev shell's, its tools after) and, for an interactive shell, its init snippets.
    pub fn rc_script_for(&self, cwd: &Path, interactive: bool) -> String {
        let mut script = self.devenv.rc_script_for(cwd);
        // nix's script may carry the builder's SHELL (a nologin that does not exist inside);
        // programs that start $SHELL (tmux, editors, agents) need the environment's bash.
        let shell = quote(&self.devenv.shell.to_string_lossy());
        script.push_str(&format!("\nexport SHELL={shell}\n"));
        // It also sets the builder's BASH; nix develop's shell keeps its own, as bash sets it.
        script.push_str(&format!("BASH={shell}\n"));
        if let Some(p) = &self.profile {
            script.push_str(&p.env.path_lines());
            script.push_str("export PATH\n");
            if interactive {
                script.push_str(&p.env.init_lines());
            }
        }
        script
    }

    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.state.runtime.clone())
    }

    /// The caller's directory if it is visible inside (in the project or the home), else the
    /// project.
    pub fn cwd_inside(&self, cwd: &Path) -> PathBuf {
        if cwd.starts_with(&self.project) || cwd.starts_with(&self.user.home) {
            cwd.to_path_buf()
        } else {
            self.project.clone()
        }
    }

    /// The variables a process starts with, before nix's script adds the dev environment's.
    pub fn base_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("HOME".into(), self.user.home.clone().into()),
            ("USER".into(), self.user.name.clone().into()),
            ("LOGNAME".into(), self.user.name.clone().into()),
            ("SHELL".into(), self.devenv.shell.clone().into()),
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("AGENTENV".into(), "1".into()),
            ("AGENTENV_ENV".into(), self.env_dirs.id.clone().into()),
            ("AGENTENV_PROJECT".into(), self.project.clone().into()),
        ];
        for (k, v) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if PASSED_THROUGH.contains(&name.as_ref()) || name.starts_with("LC_") {
                env.push((k, v));
            }
        }
        // The profile's variables come before nix's script, so the project's own win.
        if let Some(p) = &self.profile {
            env.extend(p.env.vars.iter().map(|(k, v)| (k.into(), v.into())));
        }
        let ca = crate::guest::etc::CA_BUNDLE;
        if Path::new(ca).is_file() {
            for var in ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"] {
                env.push((var.into(), ca.into()));
            }
        }
        env
    }

    /// How to start `mode` in a fresh sandbox, from `cwd` (inside).
    pub fn launch(&self, cwd: &Path, mode: &LaunchMode) -> Launch {
        plan_launch(
            &self.rc_script_for(cwd, *mode == LaunchMode::Interactive),
            &self.devenv.shell,
            mode,
            cwd,
            self.base_env(),
            &self.target.display_name(),
        )
    }

    /// How to ask a running environment to start `mode` in `cwd` (inside).
    pub fn exec_spec(
        &self,
        cwd: &Path,
        mode: &LaunchMode,
        tty: Option<WinSize>,
        extra_env: &[(OsString, OsString)],
    ) -> ExecSpec {
        let mut env = self.base_env();
        env.extend(extra_env.iter().cloned());
        ExecSpec {
            rc_script: self.rc_script_for(cwd, *mode == LaunchMode::Interactive),
            shell: self.devenv.shell.clone(),
            command: match mode {
                LaunchMode::Command(c) => Some(c.clone()),
                _ => None,
            },
            cwd: cwd.to_path_buf(),
            env,
            prompt_name: self.target.display_name(),
            tty,
            stdin_script: *mode == LaunchMode::Stdin,
            passed_stdio: false,
        }
    }

    /// The right to mount the environment's store layer, or a scratch layer above it while
    /// another sandbox of the environment holds it. Hold it as long as the sandbox runs.
    pub fn claim_layer(&self) -> Result<LayerClaim> {
        let layer = LayerClaim::acquire(
            self.env_dirs.store_view(),
            &self.env_dirs.store_lock(),
            &self.env_dirs.scratch_layers(),
        )?;
        if layer.is_scratch() {
            tracing::debug!(id = %self.env_dirs.id, "the /nix layer is held: a scratch layer above it");
        }
        Ok(layer)
    }

    /// The sandbox this environment runs in, with the store view `layer` gives.
    pub fn sandbox_spec(&self, network: Network, layer: &LayerClaim) -> SandboxSpec {
        SandboxSpec {
            project: self.project.clone(),
            project_source: self.project.clone(),
            home: self.user.home.clone(),
            home_source: self.env_dirs.home(),
            store: layer.view().clone(),
            staging: self.env_dirs.staging(),
            user: self.user.clone(),
            network,
            hostname: "agentenv".into(),
            shell: self.devenv.shell.clone(),
            env_tool: self.devenv.env_tool.clone(),
            profile: self.profile.as_ref().map(|p| p.dir.clone()),
            profile_rw: self.profile_rw,
            memory: self.memory.clone(),
            create_dirs: self.env_dirs.dirs_to_create(layer.view()),
        }
    }
}

/// Finds a running environment by id, id prefix, name, or project path.
pub fn find_running(query: &str, cwd: &Path) -> Result<RunningEnv> {
    let state = StateDirs::from_env()?;
    let runtime = Runtime::new(state.runtime.clone());
    if let Some(env) = runtime.find(query)? {
        return Ok(env);
    }
    let (path, _) = query.split_once('#').unwrap_or((query, ""));
    if cwd.join(path).is_dir() {
        let target = FlakeTarget::resolve(query, cwd)?;
        let id = EnvDirs::for_target(&state, &target).id;
        return runtime.get(&id).ok_or_else(|| {
            Diagnostic::new(format!(
                "no environment is running for {}",
                target.root.display()
            ))
            .hint(format!("start one with `agentenv up {query}`"))
            .into()
        });
    }
    let running: Vec<String> = runtime.list().into_iter().map(|e| e.state.id).collect();
    let mut d = Diagnostic::new(format!("no running environment is called '{query}'"));
    d = if running.is_empty() {
        d.detail("no environment is running")
    } else {
        d.detail(format!("running: {}", running.join(", ")))
    };
    Err(d
        .hint("give an id or name from `agentenv ps`, or a project path")
        .into())
}

/// The directory shown read-write: the git repository around the flake (so the whole project
/// can be worked on), or the flake's own directory; never a directory holding the user's home.
pub(crate) fn project_dir(flake_root: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    flake_root
        .ancestors()
        .find(|d| d.join(".git").exists())
        .filter(|repo| !home.as_ref().is_some_and(|h| h.starts_with(repo)))
        .unwrap_or(flake_root)
        .to_path_buf()
}

pub(crate) fn current_user(project: &Path) -> UserIdentity {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let pw = nix::unistd::User::from_uid(uid).ok().flatten();
    let name = pw
        .as_ref()
        .map(|u| u.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "user".into());
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| name.clone());
    let mut home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != Path::new("/"))
        .or_else(|| pw.map(|u| u.dir))
        .unwrap_or_else(|| PathBuf::from("/home").join(&name));
    // A home holding the project would hide the project behind the private home.
    if home.starts_with(project) {
        home = PathBuf::from("/home/agentenv");
    }
    UserIdentity {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        name,
        group,
        home,
    }
}
