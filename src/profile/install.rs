//! Building a profile with nix, for `agentenv profile install` (the offline fallback): the
//! flake's `agentenvProfile` output (a profile directory) or a home-manager activation package,
//! and the profile's `tools`. Builds only; activation is the caller's next step.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::journal::StateFiles;
use crate::diag::Diagnostic;
use crate::nix::cli::{stderr_details, NixCli};

/// The output `profile install FLAKE` builds when FLAKE names none.
pub const PROFILE_OUTPUT: &str = "agentenvProfile";
/// Tried next: what home-manager users already have.
pub const HOME_MANAGER_OUTPUT: &str = "homeConfigurations.portable.activationPackage";

/// A profile built into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltProfile {
    /// What was built, e.g. `github:you/config#agentenvProfile`.
    pub installable: String,
    /// The store path, a profile directory (or a home-manager activation package).
    pub dir: PathBuf,
}

/// The flake part of a flake reference (without `#output`).
pub fn flake_of(flake_ref: &str) -> &str {
    flake_ref.split_once('#').map_or(flake_ref, |(f, _)| f)
}

/// The installables `profile install FLAKE_REF` tries, in order.
pub fn profile_installables(flake_ref: &str) -> Vec<String> {
    if flake_ref.contains('#') {
        vec![flake_ref.to_string()]
    } else {
        [PROFILE_OUTPUT, HOME_MANAGER_OUTPUT]
            .iter()
            .map(|o| format!("{flake_ref}#{o}"))
            .collect()
    }
}

/// Builds the profile of `flake_ref`, with a GC root in the state directory.
pub fn build_profile(nix: &NixCli, flake_ref: &str, files: &StateFiles) -> Result<BuiltProfile> {
    let candidates = profile_installables(flake_ref);
    let mut missing = Vec::new();
    for installable in &candidates {
        match build(nix, installable, &files.installed()) {
            Ok(dir) => {
                return Ok(BuiltProfile {
                    installable: installable.clone(),
                    dir,
                })
            }
            Err(BuildError::NoSuchOutput) => missing.push(installable.clone()),
            Err(BuildError::Failed(e)) => return Err(e),
        }
    }
    Err(Diagnostic::new(format!(
        "the flake {flake_ref} has no profile output"
    ))
    .detail(format!("tried: {}", missing.join(", ")))
    .hint(format!(
        "add `{PROFILE_OUTPUT}` (a derivation whose output is a profile directory) to the flake's outputs, see docs/profile.md"
    ))
    .hint(format!("or name the output: `agentenv profile install {flake_ref}#OUTPUT`"))
    .into())
}

/// Builds `<flake>#<attr>` (the profile's `tools`) and returns its `bin` directory.
pub fn build_tools(nix: &NixCli, flake: &str, attr: &str, files: &StateFiles) -> Result<PathBuf> {
    let installable = format!("{flake}#{attr}");
    match build(nix, &installable, &files.tools()) {
        Ok(dir) => Ok(dir.join("bin")),
        Err(BuildError::NoSuchOutput) => Err(Diagnostic::new(format!(
            "the profile's manifest names tools = \"{attr}\", but {flake} has no such output"
        ))
        .hint("fix `tools` in agentenv.toml, or add that output to the flake")
        .into()),
        Err(BuildError::Failed(e)) => Err(e),
    }
}

/// Builds the tools an activated profile names (`ProfileEnv::tools`, `<flake>#<attr>`), for a
/// caller that wants them on PATH: returns their `bin`, for `ProfileEnv::path_append`.
pub fn build_profile_tools(
    nix: &NixCli,
    env: &super::ProfileEnv,
    state_dir: &Path,
) -> Result<Option<PathBuf>> {
    let Some((flake, attr)) = env.tools.as_deref().and_then(|t| t.rsplit_once('#')) else {
        return Ok(None);
    };
    build_tools(nix, flake, attr, &StateFiles::new(state_dir)).map(Some)
}

enum BuildError {
    NoSuchOutput,
    Failed(anyhow::Error),
}

/// `nix build INSTALLABLE --out-link LINK`, returning the store path.
fn build(nix: &NixCli, installable: &str, link: &Path) -> Result<PathBuf, BuildError> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .map_err(BuildError::Failed)?;
    }
    let mut cmd = nix.command();
    cmd.arg("build")
        .arg("--out-link")
        .arg(link)
        .arg(installable);
    let out = nix
        .run(cmd, &format!("building {installable}"))
        .map_err(BuildError::Failed)?;
    if !out.success {
        if out.stderr.contains("does not provide attribute") {
            return Err(BuildError::NoSuchOutput);
        }
        let mut d = Diagnostic::new(format!("nix could not build {installable}"));
        for line in stderr_details(&out.stderr) {
            d = d.detail(line);
        }
        return Err(BuildError::Failed(
            d.hint(
                "run the same build by hand to see more: `nix build ".to_string()
                    + installable
                    + "`",
            )
            .into(),
        ));
    }
    std::fs::canonicalize(link)
        .with_context(|| format!("nix built {installable} but left no {}", link.display()))
        .map_err(BuildError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_flake_tries_the_profile_then_home_manager() {
        assert_eq!(
            profile_installables("github:a/b"),
            [
                "github:a/b#agentenvProfile",
                "github:a/b#homeConfigurations.portable.activationPackage"
            ]
        );
        assert_eq!(profile_installables("/x#p"), ["/x#p"]);
        assert_eq!(flake_of("/x#p"), "/x");
        assert_eq!(flake_of("/x"), "/x");
    }
}
