//! Per-environment persistent state: a private home and a store layer for each (project, dev
//! shell), kept between runs under agentenv's data directory. Knows nothing of mounts.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::store::StoreView;
use crate::util::hash_parts;

/// The directories of one environment.
#[derive(Debug, Clone)]
pub struct EnvDirs {
    /// `<project>-<hash>`: readable and unique per project and shell.
    pub id: String,
    pub root: PathBuf,
    /// Where the home and its profile state are: `root`, or an agent's own (see
    /// `with_home_in`).
    home_root: Option<PathBuf>,
}

#[derive(Serialize)]
struct EnvMeta<'a> {
    project: &'a std::path::Path,
    shell: &'a str,
}

impl EnvDirs {
    pub fn for_target(state: &StateDirs, target: &FlakeTarget) -> Self {
        let name: String = target
            .display_name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(32)
            .collect();
        let hash = hash_parts(
            [
                target.root.as_os_str().as_encoded_bytes(),
                target.shell_name().as_bytes(),
            ],
            4,
        );
        let id = format!("{name}-{hash}");
        Self {
            root: state.envs().join(&id),
            id,
            home_root: None,
        }
    }

    /// The same environment with its home (and the home's profile state) in `dir`: an
    /// agent's home of its own in the project.
    pub fn with_home_in(mut self, dir: PathBuf) -> Self {
        self.home_root = Some(dir);
        self
    }

    /// The lock of the environment's store layer (see `store::LayerClaim`): beside the
    /// environments, not in one, so that taking it makes no environment directory.
    pub fn store_lock(&self) -> PathBuf {
        let envs = self.root.parent().unwrap_or(&self.root);
        envs.with_file_name("locks")
            .join(format!("{}.store", self.id))
    }

    /// Where runs beside the layer's owner keep their scratch layers.
    pub fn scratch_layers(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// The environment's private `$HOME`.
    pub fn home(&self) -> PathBuf {
        self.home_root.as_ref().unwrap_or(&self.root).join("home")
    }

    /// The environment's view of the store.
    pub fn store_view(&self) -> StoreView {
        StoreView::over_host(&self.root.join("store"))
    }

    /// The profile engine's state for the environment's home (journal, moved-aside files).
    pub fn profile_state(&self) -> PathBuf {
        self.home_root
            .as_ref()
            .unwrap_or(&self.root)
            .join("profile")
    }

    /// An empty directory on which the environment's root is assembled.
    pub fn staging(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    /// The directories a sandbox of this environment needs; the backend creates them once the
    /// kernel has granted its namespaces, so a refused start leaves nothing behind.
    pub fn dirs_to_create(&self, store: &StoreView) -> Vec<PathBuf> {
        vec![
            self.home(),
            self.staging(),
            store.upper.clone(),
            store.work.clone(),
        ]
    }

    /// Records which project and shell this environment belongs to; once recorded, the
    /// file's modification time is the environment's last use (`agentenv ls`, `gc`).
    pub fn record(&self, target: &FlakeTarget) -> Result<()> {
        let meta_path = self.root.join("env.json");
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let touched = utimensat(
            nix::fcntl::AT_FDCWD,
            &meta_path,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::FollowSymlink,
        );
        if touched.is_ok() {
            return Ok(());
        }
        let meta = EnvMeta {
            project: &target.root,
            shell: target.shell_name(),
        };
        crate::util::write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?)
    }
}
