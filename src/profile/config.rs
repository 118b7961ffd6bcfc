//! Which profile applies when none is named on the command line: `$AGENTENV_PROFILE` (read by
//! clap into the argument), else `profile = "..."` in agentenv's `config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::diag::Diagnostic;

/// The profile directory: `arg` if given, else the one configured in `config` (relative to
/// `home`, `~/` allowed), else none.
pub fn chosen_profile(arg: Option<&Path>, home: &Path, config: &Path) -> Result<Option<PathBuf>> {
    if let Some(dir) = arg {
        return Ok(Some(absolute(dir)?));
    }
    let Some(dir) = read_configured_profile(config)? else {
        return Ok(None);
    };
    Ok(Some(match dir.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if dir == "~" => home.to_path_buf(),
        None => home.join(dir),
    }))
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

fn read_configured_profile(config: &Path) -> Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Config {
        profile: Option<String>,
    }
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", config.display())),
    };
    let parsed: Config = toml::from_str(&text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| super::manifest::line_col(&text, s.start))
            .unwrap_or((1, 1));
        Diagnostic::new(format!(
            "invalid configuration {}:{line}:{col}: {}",
            config.display(),
            e.message().trim_end()
        ))
    })?;
    Ok(parsed.profile.filter(|p| !p.is_empty()))
}
