//! `dispatch --isolated`, on the host: the session in the namespace sandbox of `agentenv .`
//! instead of the host view (a generated `/etc`, the toolbox's store at `/nix`, the session's
//! private home and work directory, nothing else of the host), its guest agent serving the
//! protocol on ssh stdio. The sandbox is the Linux backend's own; this only says what it holds.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::compute::linux::LinuxNamespaces;
use crate::compute::{Network, SandboxSpec};
use crate::store::StoreView;

/// Where the session's work directory is inside, and where commands start.
pub const WORK_DIR: &str = "/work";

/// The sandbox of an isolated session, all paths on the host but `home`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsolatedSpec {
    /// agentenv's content cache on the host: a directory holding `store/`, below the
    /// session's own layer at `/nix`.
    pub nix_dir: PathBuf,
    /// The session's directory: its `home/` and `work/`, and the sandbox's store layer and
    /// staging root go there, and with it when the session ends.
    pub session_dir: PathBuf,
    /// `$HOME` inside.
    pub home: PathBuf,
    /// The toolbox's bash (at `/bin/sh` inside) and `env` (at `/usr/bin/env`).
    pub shell: PathBuf,
    pub env_tool: Option<PathBuf>,
    /// The profile's copy on the host, shown read-only at its path.
    #[serde(default)]
    pub profile: Option<PathBuf>,
}

impl IsolatedSpec {
    /// The Linux backend's spec for this session, for the user running it.
    pub fn sandbox_spec(&self) -> SandboxSpec {
        let dir = |sub: &str| self.session_dir.join(sub);
        let project = PathBuf::from(WORK_DIR);
        let mut user = crate::workspace::current_user(&project);
        user.home = self.home.clone();
        // The session's layer of /nix goes with it, and agentenv's directory on the host may
        // be on a filesystem overlayfs cannot write: the layer is kept in memory.
        let store = StoreView::new(&self.nix_dir, &dir("store")).with_layer_in_memory();
        let create_dirs = vec![dir("home"), dir("work"), dir("root"), dir("store")];
        SandboxSpec {
            project,
            project_source: dir("work"),
            home: self.home.clone(),
            home_source: dir("home"),
            store,
            staging: dir("root"),
            user,
            network: Network::Host,
            hostname: "agentenv".into(),
            shell: self.shell.clone(),
            env_tool: self.env_tool.clone(),
            profile: self.profile.clone(),
            profile_rw: false,
            memory: Vec::new(),
            create_dirs,
        }
    }
}

/// `__remote session` of an isolated session: the sandbox, its agent on stdio; returns when
/// the agent ends (the sandbox with it).
pub fn serve(spec: &IsolatedSpec) -> Result<i32> {
    LinuxNamespaces.serve_stdio(&spec.sandbox_spec())
}

/// `$HOME` inside for a host user whose home is `host_home`: the same path, unless the host
/// gives none (or `/`, which the sandbox's root cannot be).
pub fn home_inside(host_home: &str) -> PathBuf {
    match Path::new(host_home) {
        h if h.is_absolute() && h != Path::new("/") => h.to_path_buf(),
        _ => PathBuf::from("/home/agentenv"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> IsolatedSpec {
        IsolatedSpec {
            nix_dir: PathBuf::from("/home/dev/.agentenv/nix"),
            session_dir: PathBuf::from("/home/dev/.agentenv/sessions/1"),
            home: PathBuf::from("/home/dev"),
            shell: PathBuf::from("/nix/store/x-bash/bin/bash"),
            env_tool: None,
            profile: None,
        }
    }

    #[test]
    fn the_sandbox_shows_only_the_sessions_directories_and_the_cache() {
        let s = spec().sandbox_spec();
        let session = Path::new("/home/dev/.agentenv/sessions/1");
        assert_eq!(s.project, Path::new(WORK_DIR));
        assert_eq!(s.project_source, session.join("work"));
        assert_eq!(s.home_source, session.join("home"));
        assert_eq!(s.home, Path::new("/home/dev"));
        assert_eq!(s.user.home, Path::new("/home/dev"));
        assert_eq!(s.store.lowers, [PathBuf::from("/home/dev/.agentenv/nix")]);
        assert!(s.store.upper.starts_with(session) && s.store.layer_in_memory);
        assert!(s.staging.starts_with(session));
        assert!(s.create_dirs.iter().all(|d| d.starts_with(session)));
        assert!(s.profile.is_none() && s.memory.is_empty());
    }

    #[test]
    fn a_home_of_slash_is_replaced() {
        assert_eq!(home_inside("/home/dev"), Path::new("/home/dev"));
        assert_eq!(home_inside("/"), Path::new("/home/agentenv"));
        assert_eq!(home_inside(""), Path::new("/home/agentenv"));
    }
}
