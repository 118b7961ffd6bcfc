//! Where agentenv keeps its state. Everything lives under three XDG directories (cache, data,
//! config), or under one directory when `AGENTENV_HOME` is set (tests use that). Nothing here
//! creates directories; callers create what they write.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use etcetera::BaseStrategy;

/// The directories agentenv owns.
#[derive(Debug, Clone)]
pub struct StateDirs {
    /// Re-creatable data: evaluated dev environments and their GC roots.
    pub cache: PathBuf,
    /// Data a user would miss: per-environment homes and store layers.
    pub data: PathBuf,
    /// User configuration (`config.toml`).
    pub config: PathBuf,
    /// Sockets and state of running environments; gone after a reboot.
    pub runtime: PathBuf,
}

impl StateDirs {
    /// Reads `AGENTENV_HOME`, else the XDG base directories.
    pub fn from_env() -> Result<Self> {
        if let Some(home) = std::env::var_os("AGENTENV_HOME").filter(|v| !v.is_empty()) {
            return Ok(Self::under(Path::new(&home)));
        }
        let xdg = etcetera::choose_base_strategy().context(
            "cannot find the home directory for agentenv's state; set HOME or AGENTENV_HOME",
        )?;
        let data = xdg.data_dir().join("agentenv");
        let runtime = xdg
            .runtime_dir()
            .map(|d| d.join("agentenv"))
            .unwrap_or_else(|| data.join("run"));
        Ok(Self {
            cache: xdg.cache_dir().join("agentenv"),
            data,
            config: xdg.config_dir().join("agentenv"),
            runtime,
        })
    }

    /// All state below one directory.
    pub fn under(home: &Path) -> Self {
        Self {
            cache: home.join("cache"),
            data: home.join("data"),
            config: home.join("config"),
            runtime: home.join("run"),
        }
    }

    /// Evaluated dev environments, one entry per flake state.
    pub fn devenv_cache(&self) -> PathBuf {
        self.cache.join("devenv")
    }

    /// Per-environment persistent state (home, store layer).
    pub fn envs(&self) -> PathBuf {
        self.data.join("envs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agentenv_home_holds_every_directory() {
        let dirs = StateDirs::under(Path::new("/x"));
        assert_eq!(dirs.cache, Path::new("/x/cache"));
        assert_eq!(dirs.envs(), Path::new("/x/data/envs"));
        assert_eq!(dirs.devenv_cache(), Path::new("/x/cache/devenv"));
    }
}
