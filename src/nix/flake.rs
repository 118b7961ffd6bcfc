//! Which flake and dev shell a user means: `PATH[#NAME]` resolved to the directory holding
//! `flake.nix`, found the way `nix develop` finds it. Evaluation lives in `devenv`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::diag::Diagnostic;

/// A local flake and the dev shell selected in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeTarget {
    /// Canonical directory holding `flake.nix`.
    pub root: PathBuf,
    /// The fragment after `#`, if any (nix picks `devShells.<system>.NAME`, then packages).
    pub attr: Option<String>,
}

impl FlakeTarget {
    /// Resolves `PATH[#NAME]` relative to `cwd`, searching parents for `flake.nix` up to the
    /// git repository root or a filesystem boundary, as nix does.
    pub fn resolve(arg: &str, cwd: &Path) -> Result<Self> {
        let (path, attr) = match arg.split_once('#') {
            Some((p, a)) => (p, Some(a.to_string()).filter(|a| !a.is_empty())),
            None => (arg, None),
        };
        let path = if path.is_empty() { "." } else { path };
        let given = cwd.join(path);
        let meta = std::fs::metadata(&given).map_err(|_| {
            let mut d = Diagnostic::new(format!("no such directory: {}", given.display()));
            if path.contains(':') {
                d = d.hint("agentenv takes a local directory; remote flake references are not supported yet");
            }
            d.hint("pass the directory of a project with a flake.nix, e.g. `agentenv ~/src/app`")
        })?;
        if !meta.is_dir() {
            return Err(
                Diagnostic::new(format!("not a directory: {}", given.display()))
                    .hint("pass the directory of a project with a flake.nix")
                    .into(),
            );
        }
        let start = std::fs::canonicalize(&given).unwrap_or(given);
        let root = find_flake_root(&start)?;
        Ok(Self { root, attr })
    }

    /// The installable to hand to nix: `/abs/root#attr`.
    pub fn installable(&self) -> String {
        match &self.attr {
            Some(a) => format!("{}#{}", self.root.display(), a),
            None => self.root.display().to_string(),
        }
    }

    /// The dev shell's name as users write it: `default` when none was given.
    pub fn shell_name(&self) -> &str {
        self.attr.as_deref().unwrap_or("default")
    }

    /// A short human name: the project directory's name, with `#attr` when one was given.
    pub fn display_name(&self) -> String {
        let base = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        match &self.attr {
            Some(a) => format!("{base}#{a}"),
            None => base,
        }
    }
}

fn find_flake_root(start: &Path) -> Result<PathBuf> {
    let device = std::fs::metadata(start).map(|m| m.dev()).ok();
    let mut dir = start;
    loop {
        if dir.join("flake.nix").is_file() {
            return Ok(dir.to_path_buf());
        }
        if dir.join(".git").exists() {
            return Err(Diagnostic::new(format!(
                "no flake.nix in {} or any parent directory up to its git root {}",
                start.display(),
                dir.display()
            ))
            .hint(format!(
                "run `nix flake init` in {}, or pass the path of a flake: `agentenv ~/src/other`",
                dir.display()
            ))
            .into());
        }
        let parent = match dir.parent() {
            Some(p) => p,
            None => break,
        };
        if std::fs::metadata(parent).map(|m| m.dev()).ok() != device {
            return Err(Diagnostic::new(format!(
                "no flake.nix in {} or any parent directory on the same filesystem",
                start.display()
            ))
            .hint("run `nix flake init` there, or pass the path of a flake: `agentenv ~/src/other`")
            .into());
        }
        dir = parent;
    }
    Err(Diagnostic::new(format!(
        "no flake.nix in {} or any parent directory",
        start.display()
    ))
    .hint("run `nix flake init` there, or pass the path of a flake: `agentenv ~/src/other`")
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flake_is_found_in_a_parent_directory_with_its_attr() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::write(root.join("flake.nix"), "{}").unwrap();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        let t = FlakeTarget::resolve("src/deep#tools", &root).unwrap();
        assert_eq!(t.root, root);
        assert_eq!(t.attr.as_deref(), Some("tools"));
        assert_eq!(t.installable(), format!("{}#tools", root.display()));
    }

    #[test]
    fn search_stops_at_the_git_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("flake.nix"), "{}").unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        let err = FlakeTarget::resolve(".", &repo).unwrap_err();
        assert!(err.to_string().contains("no flake.nix"), "{err}");
    }

    #[test]
    fn missing_directory_is_reported_with_its_path() {
        let err = FlakeTarget::resolve("/nonexistent/agentenv-x", Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no such directory: /nonexistent/agentenv-x"
        );
    }
}
