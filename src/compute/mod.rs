//! Layer 0: where an environment's processes run. One place (`choice`) picks the backend: the
//! verbs, the workspace and doctor see only the `Backend` trait. A backend takes a
//! `SandboxSpec` (plain data, the same for every backend), runs it to completion or starts it
//! and hands back an `Instance`: plain data the registry keeps to reach its guest agent later,
//! whatever the backend. Adding one: a folder of its own and a line in `choice::BACKENDS`.

pub mod choice;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod vm;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::guest::etc::UserIdentity;
use crate::guest::launch::Launch;
use crate::store::StoreView;
use crate::transport::AgentAddress;

pub use choice::{backend_named, choose_backend};

/// Whether the environment shares the host's network.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network, as outside.
    Host,
    /// Only a private loopback interface.
    None,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Host => "host",
            Network::None => "none",
        })
    }
}

/// Everything a backend needs to run one environment, the same for every backend.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The work directory: visible read-write at `project` inside, backed by the host
    /// directory `project_source` (the same path for `agentenv .`).
    pub project: PathBuf,
    pub project_source: PathBuf,
    /// `$HOME` inside, and the host directory that backs it.
    pub home: PathBuf,
    pub home_source: PathBuf,
    pub store: StoreView,
    /// An empty host directory to assemble the root on.
    pub staging: PathBuf,
    pub user: UserIdentity,
    pub network: Network,
    pub hostname: String,
    /// The environment's bash, linked at `/bin/sh`.
    pub shell: PathBuf,
    /// An `env` program, linked at `/usr/bin/env`.
    pub env_tool: Option<PathBuf>,
    /// A profile directory, visible at its own path: read-only unless `profile_rw` (a process
    /// inside could otherwise rewrite what the host runs: activate.sh, a dotfile).
    pub profile: Option<PathBuf>,
    pub profile_rw: bool,
    /// An agent's memory places: host files and directories shown read-write in the home.
    pub memory: Vec<PlaceMount>,
    /// Host directories (home, store layer, staging) to create once the backend knows it can
    /// start (for namespaces: once the kernel has granted them).
    pub create_dirs: Vec<PathBuf>,
}

/// A host file or directory shown read-write at `path` inside, in a directory the sandbox
/// itself writes (the home): its mount point is reached without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceMount {
    pub source: PathBuf,
    pub path: PathBuf,
    pub file: bool,
}

/// Where a persistent environment's host side keeps what it makes: `dir` is the environment's
/// runtime directory (mode 0700, the backend's sockets go there), `log` the agent's log.
pub struct AgentSetup {
    pub dir: PathBuf,
    pub log: std::fs::File,
}

/// A started environment, as the registry records it: enough to reach its agent and to tell
/// whether it still lives, for any verb and without the backend that started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The host process whose life is the environment's (a namespace sandbox's PID 1, a VM's
    /// supervisor), and its start time, to tell a reused pid.
    pub pid: i32,
    pub pid_start: u64,
    /// Where its guest agent answers.
    pub agent: AgentAddress,
}

impl Instance {
    /// The instance of host process `pid`, whose agent answers at `agent`.
    pub fn of_process(pid: i32, agent: AgentAddress) -> Self {
        Self {
            pid,
            pid_start: crate::runtime::process_start_time(pid).unwrap_or(0),
            agent,
        }
    }

    /// Whether its host process is the one that was started and is alive.
    pub fn is_alive(&self) -> bool {
        crate::runtime::process_start_time(self.pid) == Some(self.pid_start)
    }
}

/// One thing `doctor` checks for a backend: found (what), or not (what is wrong, and the fix).
pub struct Check {
    pub name: &'static str,
    pub found: Result<String, (String, String)>,
}

/// A place to run environments.
pub trait Backend: Sync {
    /// Its name: for `--backend`, `backend = "..."` in config.toml, and the registry.
    fn name(&self) -> &'static str;

    /// Whether it can run environments on this machine; if not, why, and what to do.
    fn available(&self) -> Result<(), Diagnostic>;

    /// What `doctor` checks for it, each with the fix for what is missing.
    fn checks(&self) -> Vec<Check>;

    /// Runs `launch` in a fresh environment built from `spec`, and returns its exit code
    /// (128+N if it was killed by signal N). The environment ends with it.
    fn run(&self, spec: &SandboxSpec, launch: &Launch) -> anyhow::Result<i32>;

    /// `run`, leaving the calling process as it was, so that it can start more environments
    /// afterwards (`run` may change the caller in ways that can be done only once).
    fn run_aside(&self, spec: &SandboxSpec, launch: &Launch) -> anyhow::Result<i32>;

    /// Starts an environment built from `spec` in the background, its guest agent serving,
    /// and returns it once the agent is ready.
    fn start(&self, spec: &SandboxSpec, agent: AgentSetup) -> anyhow::Result<Instance>;

    /// The dev environment of `target`, evaluated where this backend's nix is: by default the
    /// host's (cached, so a warm start runs no nix); a backend whose nix runs inside (a VM's
    /// guest) evaluates there.
    fn dev_env(
        &self,
        target: &crate::nix::flake::FlakeTarget,
        state: &crate::paths::StateDirs,
        refresh: bool,
    ) -> anyhow::Result<crate::nix::devenv::DevEnv> {
        let (devenv, outcome) = crate::nix::devenv::load_or_evaluate(target, state, refresh)?;
        tracing::debug!(?outcome, shell = %devenv.shell.display(), "dev environment ready");
        Ok(devenv)
    }
}
