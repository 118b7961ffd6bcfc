//! The profile model: what a profile directory holds (its layout) and what its optional manifest
//! `agentenv.toml` says. Reads the profile only; knows nothing of `$HOME`, links or state.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::diag::Diagnostic;

/// The manifest's file name, at the profile's root.
pub const MANIFEST: &str = "agentenv.toml";
/// The script run after activation, at the profile's root.
pub const HOOK: &str = "activate.sh";
/// Where Claude Code looks for skills, relative to `$HOME`; skills always go there.
pub const CLAUDE_SKILLS: &str = ".claude/skills";

/// `agentenv.toml`: everything the directory convention cannot say. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// An output of the profile's own flake (`<profile>#<tools>`) whose `bin` goes on PATH after
    /// the project's dev shell.
    pub tools: Option<String>,
    /// Extra links: a path in the profile -> a path in `$HOME`, both relative.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    #[serde(default)]
    pub skills: SkillsSection,
    /// Environment variables, set literally.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub shell: ShellSection,
    #[serde(default)]
    pub memory: MemorySection,
}

/// `[memory]`: more places, relative to `$HOME`, where an agent with this profile keeps its
/// memory (besides `.claude/CLAUDE.md`, `.claude/skills`, `.codex/AGENTS.md`, `.agent-memory`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub dirs: Vec<String>,
}

/// `[skills]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillsSection {
    /// More directories (relative to `$HOME`) that every skill is linked into, besides
    /// `.claude/skills`, e.g. `.codex/skills`.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// `[shell]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellSection {
    /// Snippets an interactive shell runs after the dev shell's own set-up, in order.
    #[serde(default)]
    pub init: Vec<String>,
}

/// How the profile directory is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// agentenv's convention: `home/`, `skills/`, `bin/`, `agentenv.toml`, `activate.sh`.
    Plain,
    /// A home-manager activation package: `home-files/` is the home, `home-path/bin` the tools.
    HomeManager,
}

/// A profile directory, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Absolute, as the user named it (symlinks kept), so links point where the user expects.
    pub root: PathBuf,
    pub layout: Layout,
    pub manifest: Manifest,
}

impl Profile {
    /// Reads the profile at `dir`: its layout and its manifest, if any.
    pub fn load(dir: &Path) -> Result<Self> {
        let root = absolute_dir(dir)?;
        let layout = if !root.join(MANIFEST).exists()
            && root.join("home-files").is_dir()
            && root.join("activate").is_file()
        {
            Layout::HomeManager
        } else {
            Layout::Plain
        };
        let manifest_path = root.join(MANIFEST);
        let manifest = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => parse_manifest(&text, &manifest_path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", manifest_path.display()))
            }
        };
        Ok(Self {
            root,
            layout,
            manifest,
        })
    }

    /// The directory mirrored into `$HOME`, file by file.
    pub fn home_dir(&self) -> PathBuf {
        match self.layout {
            Layout::Plain => self.root.join("home"),
            Layout::HomeManager => self.root.join("home-files"),
        }
    }

    /// The directory of skills, one sub-directory per skill.
    pub fn skills_dir(&self) -> Option<PathBuf> {
        match self.layout {
            Layout::Plain => Some(self.root.join("skills")),
            Layout::HomeManager => None,
        }
    }

    /// The directory put first on PATH, if the profile has one.
    pub fn bin_dir(&self) -> Option<PathBuf> {
        let bin = match self.layout {
            Layout::Plain => self.root.join("bin"),
            Layout::HomeManager => self.root.join("home-path/bin"),
        };
        bin.is_dir().then_some(bin)
    }

    /// `activate.sh`, if the profile has one (home-manager's own `activate` is not run: it
    /// manages generations agentenv knows nothing of).
    pub fn hook(&self) -> Option<PathBuf> {
        let hook = self.root.join(HOOK);
        (self.layout == Layout::Plain && hook.is_file()).then_some(hook)
    }

    /// The installable of the profile's tools, `<profile>#<attr>`, if the manifest names one.
    pub fn tools_installable(&self) -> Option<String> {
        let attr = self.manifest.tools.as_ref()?;
        Some(format!("{}#{attr}", self.root.display()))
    }
}

/// `dir` made absolute without resolving symlinks (unless it has `..`), checked to be a directory.
fn absolute_dir(dir: &Path) -> Result<PathBuf> {
    let missing = || {
        Diagnostic::new(format!("no profile directory at {}", dir.display()))
            .hint(format!(
                "create it (`mkdir -p {}/home`) or name your profile: `agentenv profile activate ~/config`",
                dir.display()
            ))
    };
    let meta = std::fs::metadata(dir).map_err(|_| missing())?;
    if !meta.is_dir() {
        return Err(Diagnostic::new(format!(
            "the profile {} is not a directory",
            dir.display()
        ))
        .hint("a profile is a directory holding home/, skills/, bin/ and optionally agentenv.toml")
        .into());
    }
    if dir.components().any(|c| c == Component::ParentDir) {
        return std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()));
    }
    let abs =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    // Drop `.` components and a trailing slash, so the same directory always reads the same.
    Ok(abs.components().collect())
}

/// Parses and checks a manifest; errors name the file, line and column.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Manifest> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| {
        toml_diagnostic("invalid profile manifest", path, text, &e)
            .hint("every key is described in docs/profile.md")
    })?;
    check_manifest(&manifest, text, path)?;
    Ok(manifest)
}

fn check_manifest(m: &Manifest, text: &str, path: &Path) -> Result<()> {
    let fail = |needle: &str, what: String, hint: &str| -> anyhow::Error {
        let (line, col) = text
            .find(needle)
            .map(|at| line_col(text, at))
            .unwrap_or((1, 1));
        Diagnostic::new(format!(
            "invalid profile manifest {}:{line}:{col}: {what}",
            path.display()
        ))
        .hint(hint.to_string())
        .into()
    };
    for name in m.env.keys() {
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
            && !name.is_empty();
        if !valid {
            return Err(fail(
                name,
                format!("`{name}` is not a variable name"),
                "names are letters, digits and `_`, not starting with a digit",
            ));
        }
        if name == "PATH" {
            return Err(fail(
                name,
                "[env] cannot set PATH".into(),
                "put programs in the profile's bin/, or name a flake output in `tools`",
            ));
        }
    }
    if let Some(tools) = &m.tools {
        if tools.is_empty() || tools.contains(['#', ' ', '\t']) {
            return Err(fail(
                "tools",
                format!("`tools = \"{tools}\"` is not a flake output name"),
                "name an output of the profile's flake, e.g. `tools = \"tools\"` for packages.<system>.tools",
            ));
        }
    }
    Ok(())
}

/// A TOML error in the file `path` (holding `text`): `<what> path:line:col: message`, with the
/// line shown and the place marked.
pub fn toml_diagnostic(what: &str, path: &Path, text: &str, e: &toml::de::Error) -> Diagnostic {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    let mut d = Diagnostic::new(format!(
        "{what} {}:{line}:{col}: {}",
        path.display(),
        e.message().trim_end()
    ));
    if let Some(src) = text.lines().nth(line - 1) {
        d = d.detail(format!("{line:>4} | {src}"));
        d = d.detail(format!("{:>4} | {}^", "", " ".repeat(col - 1)));
    }
    d
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        parse_manifest(text, Path::new("/p/agentenv.toml"))
    }

    #[test]
    fn every_key_parses() {
        let m = parse(
            "tools = \"tools\"\n[links]\n\"a/b\" = \".b\"\n[skills]\ntargets = [\".codex/skills\"]\n\
             [env]\nEDITOR = \"vi\"\n[shell]\ninit = [\"alias l=ls\"]\n",
        )
        .unwrap();
        assert_eq!(m.tools.as_deref(), Some("tools"));
        assert_eq!(m.links["a/b"], ".b");
        assert_eq!(m.skills.targets, [".codex/skills"]);
        assert_eq!(m.env["EDITOR"], "vi");
        assert_eq!(m.shell.init, ["alias l=ls"]);
    }

    #[test]
    fn empty_manifest_is_the_convention() {
        assert_eq!(parse("").unwrap(), Manifest::default());
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse("[env]\nA = \"1\"\n\n[skils]\ntargets = []\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid profile manifest /p/agentenv.toml:4:"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse("[env]\nA = \"1\"\nB = \n").unwrap_err();
        assert!(err.to_string().contains("/p/agentenv.toml:3:"), "{err}");
    }

    #[test]
    fn path_in_env_is_refused() {
        let err = parse("[env]\nPATH = \"/x\"\n").unwrap_err();
        assert!(
            err.to_string().contains(":2:1: [env] cannot set PATH"),
            "{err}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 6), (2, 3));
        assert_eq!(line_col("ab\ncé d", 5), (2, 2));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
