//! Layer 0: where an environment's processes run. A backend takes a `SandboxSpec` (plain data,
//! the same for every backend) and runs it to completion. Linux namespaces are the only
//! backend so far; the macOS VM and remote hosts will take the same spec.

use std::path::PathBuf;

use crate::guest::etc::UserIdentity;
use crate::guest::launch::Launch;
use crate::store::StoreView;

#[cfg(target_os = "linux")]
pub mod linux;
pub mod vm;

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

/// Everything a backend needs to run one environment.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Visible read-write at its own absolute path.
    pub project: PathBuf,
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
    /// A profile directory, visible read-write at its own path.
    pub profile: Option<PathBuf>,
    /// Host directories (home, store layer, staging) to create once the kernel has granted
    /// the namespaces.
    pub create_dirs: Vec<PathBuf>,
}

/// What a persistent environment's agent serves on, and where it logs.
pub struct AgentSetup {
    pub listener: std::os::unix::net::UnixListener,
    pub log: std::fs::File,
}

/// A place to run environments.
pub trait Compute {
    /// Runs `launch` in a fresh environment built from `spec`, and returns its exit code
    /// (128+N if it was killed by signal N). The environment ends with it.
    fn run(&self, spec: &SandboxSpec, launch: &Launch) -> anyhow::Result<i32>;

    /// `run`, leaving the calling process as it was, so that it can start more environments
    /// afterwards (`run` may change the caller in ways that can be done only once).
    fn run_aside(&self, spec: &SandboxSpec, launch: &Launch) -> anyhow::Result<i32>;

    /// Starts an environment built from `spec` in the background, its guest agent serving
    /// `agent`, and returns the agent's pid once it is ready.
    fn start(&self, spec: &SandboxSpec, agent: AgentSetup) -> anyhow::Result<i32>;
}
