//! Which profile applies when none is named on the command line: `$AGENTENV_PROFILE` (read by
//! clap into the argument), else `profile = "..."` in agentenv's `config.toml`, which this
//! module reads for every key; and whether an environment may write it (`profile_rw = true`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::manifest::toml_diagnostic;

/// The profile directory: `arg` if given, else the one configured in `config` (relative to
/// `home`, `~/` allowed), else none.
pub fn chosen_profile(arg: Option<&Path>, home: &Path, config: &Path) -> Result<Option<PathBuf>> {
    if let Some(dir) = arg {
        return Ok(Some(absolute(dir)?));
    }
    let Some(dir) = read_config(config)?.profile.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(match dir.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if dir == "~" => home.to_path_buf(),
        None => home.join(dir),
    }))
}

/// `chosen_profile` for the user running agentenv, unless `no_profile`.
pub fn chosen_unless(
    arg: Option<&Path>,
    no_profile: bool,
    state: &crate::paths::StateDirs,
) -> Result<Option<PathBuf>> {
    if no_profile {
        return Ok(None);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"));
    chosen_profile(arg, &home, &state.config.join("config.toml"))
}

/// `dir` made absolute against the current directory, not resolved: links point at it as
/// named.
fn absolute(dir: &Path) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(dir))
}

/// `profile_rw = true` in `config`: environments may write the profile.
pub fn configured_profile_rw(config: &Path) -> Result<bool> {
    Ok(read_config(config)?.profile_rw.unwrap_or(false))
}

/// agentenv's `config.toml`: what applies when the command line does not say.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The profile to use (`~/` allowed).
    pub profile: Option<String>,
    /// Whether environments may write the profile.
    pub profile_rw: Option<bool>,
    /// The backend to run environments with (see `compute::choice`).
    pub backend: Option<String>,
}

/// Reads `config`; a missing file is an empty configuration.
pub fn read_config(config: &Path) -> Result<Config> {
    // Unknown keys are refused, as in the manifest: a misspelt key must not pass silently.
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", config.display())),
    };
    let parsed: Config = toml::from_str(&text).map_err(|e| {
        toml_diagnostic("invalid configuration", config, &text, &e).hint(
            "the keys there are `profile = \"~/config\"`, the profile to use, `profile_rw = true` (docs/profile.md), and `backend = \"namespaces\"`",
        )
    })?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config.toml");
        std::fs::write(&config, "# mine\nprofil = \"~/config\"\n").unwrap();
        let err = chosen_profile(None, tmp.path(), &config).unwrap_err();
        let text = crate::diag::render(&err);
        let place = format!(
            "invalid configuration {}:2:1: unknown field `profil`",
            config.display()
        );
        assert!(text.contains(&place), "{text}");
        assert!(text.contains("   2 | profil = "), "{text}");
        assert!(text.contains("hint: "), "{text}");
        std::fs::write(&config, "profile = \"~/config\"\n").unwrap();
        let dir = chosen_profile(None, tmp.path(), &config).unwrap();
        assert_eq!(dir, Some(tmp.path().join("config")));
        assert!(!configured_profile_rw(&config).unwrap());
        std::fs::write(&config, "profile = \"~/config\"\nprofile_rw = true\n").unwrap();
        assert!(configured_profile_rw(&config).unwrap());
    }
}
