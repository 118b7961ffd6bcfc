//! A profile's tools (the manifest's `tools`, an output of the profile's flake) for
//! environments: built once per state of the profile flake's inputs and kept with a GC root,
//! so a warm start runs no nix. A failed build is remembered as well (with its cause), and
//! the environment starts without the tools, with that cause and a hint each time, until a
//! start with `--refresh` tries again.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::install::build_tools;
use super::{ProfileEnv, StateFiles};
use crate::diag::Diagnostic;
use crate::nix::cache::DevEnvCache;
use crate::nix::cli::NixCli;
use crate::nix::devenv::current_system;
use crate::nix::inputs;

/// Said with every failure, fresh or remembered.
const RETRY_HINT: &str = "fix it, then start with `--refresh` to build them again (a change to the profile's flake does too)";

/// Where profile tool builds are kept (a `DevEnvCache` layout).
pub fn cache_root(state: &crate::paths::StateDirs) -> PathBuf {
    state.cache.join("profile-tools")
}

/// The `bin` of the profile's tools, building them if the profile's flake changed since the
/// last build (or, with `refresh`, if the last build failed); `None` if the profile names none
/// or they cannot be built (with a warning saying why).
pub fn cached_tools(env: &ProfileEnv, cache_root: &Path, refresh: bool) -> Option<PathBuf> {
    let (flake, attr) = env.tools.as_deref()?.rsplit_once('#')?;
    match tools_bin(flake, attr, cache_root, refresh) {
        Ok(bin) => bin,
        Err(e) => {
            let e = e.context(
                "the profile's tools are not available; the environment starts without them",
            );
            eprint!("{}", crate::diag::render_warning(&e));
            None
        }
    }
}

fn tools_bin(flake: &str, attr: &str, cache_root: &Path, refresh: bool) -> Result<Option<PathBuf>> {
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
        if let Some(outcome) = read_outcome(&cache.entry_dir(&ck), refresh) {
            return outcome.map(Some);
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
    let outcome = match read_outcome(&entry, refresh) {
        Some(outcome) => outcome,
        None => {
            std::fs::create_dir_all(&entry)?;
            match build_tools(&nix, flake, attr, &StateFiles::new(&entry)) {
                Ok(bin) => Ok(bin),
                Err(e) => {
                    // Remembered, so that every start does not build again (in vain) until
                    // --refresh; the cause is kept to be told each time.
                    let cause = Diagnostic::from_error(&e);
                    std::fs::write(entry.join("failed"), serde_json::to_vec(&cause)?)?;
                    cache.record(&key, &ck, &files, &dirs)?;
                    return Err(anyhow::Error::from(cause.hint(RETRY_HINT))
                        .context("the profile's tools did not build"));
                }
            }
        }
    };
    cache.record(&key, &ck, &files, &dirs)?;
    outcome.map(Some)
}

/// What an earlier build left: `Some(Ok(bin))` when it built, `Some(Err(cause))` when it
/// failed, `None` when there was none (or, with `refresh`, when it failed: it is tried again).
fn read_outcome(entry: &Path, refresh: bool) -> Option<Result<PathBuf>> {
    let failed = entry.join("failed");
    if let Ok(data) = std::fs::read(&failed) {
        if refresh {
            tracing::debug!(entry = %entry.display(), "building the profile's tools again (--refresh)");
            let _ = std::fs::remove_file(&failed);
            return None;
        }
        let cause = serde_json::from_slice::<Diagnostic>(&data)
            .unwrap_or_else(|_| Diagnostic::new(String::from_utf8_lossy(&data).into_owned()));
        let mut d = Diagnostic::new(format!("they did not build earlier: {}", cause.message));
        d.details = cause.details;
        d.hints = cause.hints;
        return Some(Err(d.hint(RETRY_HINT).into()));
    }
    let built = std::fs::canonicalize(StateFiles::new(entry).tools()).ok()?;
    Some(Ok(built.join("bin")))
}
