//! A profile's tools (the manifest's `tools`, an output of the profile's flake) for
//! environments: built once per state of the profile flake's inputs and kept with a GC root,
//! so a warm start runs no nix. A failed build is remembered as well, and the environment
//! starts without the tools after one warning.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::install::build_tools;
use super::{ProfileEnv, StateFiles};
use crate::diag::Diagnostic;
use crate::nix::cache::DevEnvCache;
use crate::nix::cli::NixCli;
use crate::nix::devenv::current_system;
use crate::nix::inputs;

/// Where profile tool builds are kept (a `DevEnvCache` layout).
pub fn cache_root(state: &crate::paths::StateDirs) -> PathBuf {
    state.cache.join("profile-tools")
}

/// The `bin` of the profile's tools, building them if the profile's flake changed since the
/// last build; `None` if the profile names none or they cannot be built (with a warning).
pub fn cached_tools(env: &ProfileEnv, cache_root: &Path) -> Option<PathBuf> {
    let (flake, attr) = env.tools.as_deref()?.rsplit_once('#')?;
    match tools_bin(flake, attr, cache_root) {
        Ok(bin) => bin,
        Err(e) => {
            tracing::warn!("the profile's tools are not available: {e:#}");
            None
        }
    }
}

fn tools_bin(flake: &str, attr: &str, cache_root: &Path) -> Result<Option<PathBuf>> {
    let nix = NixCli::find()?;
    let cache = DevEnvCache::new(cache_root.to_path_buf());
    let nix_config = std::env::var("NIX_CONFIG").unwrap_or_default();
    let key = DevEnvCache::index_key(&[
        "profile-tools",
        flake,
        attr,
        &current_system(),
        &nix.identity(),
        &nix_config,
    ]);
    if let Some(ck) = cache.lookup_unchanged(&key) {
        if let Some(outcome) = read_outcome(&cache.entry_dir(&ck)) {
            return Ok(outcome);
        }
    }
    let root = Path::new(flake);
    if !root.join("flake.nix").is_file() {
        return Err(Diagnostic::new(format!(
            "the profile names tools = \"{attr}\" but {flake} has no flake.nix"
        ))
        .hint(
            "add a flake.nix with that output to the profile, or remove `tools` from agentenv.toml",
        )
        .into());
    }
    let found = inputs::discover(root)?;
    let files = inputs::stamp_files(&found.files)?;
    let dirs = inputs::stamp_dirs(&found.dirs);
    let ck = DevEnvCache::content_key(&key, &files);
    let entry = cache.entry_dir(&ck);
    let _lock = cache.lock(&ck)?;
    let outcome = match read_outcome(&entry) {
        Some(outcome) => outcome,
        None => {
            std::fs::create_dir_all(&entry)?;
            match build_tools(&nix, flake, attr, &StateFiles::new(&entry)) {
                Ok(bin) => Some(bin),
                Err(e) => {
                    // Remembered, so that every start does not try (and warn) again.
                    std::fs::write(entry.join("failed"), format!("{e:#}"))?;
                    cache.record(&key, &ck, &files, &dirs)?;
                    return Err(e);
                }
            }
        }
    };
    cache.record(&key, &ck, &files, &dirs)?;
    Ok(outcome)
}

/// What an earlier build left: `Some(Some(bin))` when it built, `Some(None)` when it failed,
/// `None` when there was none.
fn read_outcome(entry: &Path) -> Option<Option<PathBuf>> {
    if entry.join("failed").exists() {
        tracing::debug!(entry = %entry.display(), "the profile's tools failed to build earlier");
        return Some(None);
    }
    let built = std::fs::canonicalize(StateFiles::new(entry).tools()).ok()?;
    Some(Some(built.join("bin")))
}
