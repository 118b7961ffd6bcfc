//! The links a profile asks for, worked out from the profile alone: the `home/` mirror, the
//! skills, the manifest's extra links. Checks every path (nothing may leave `$HOME` or loop
//! back into it); does not look at what is in `$HOME` now (that is the plan's job).

use crate::util::lexical_normal;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::manifest::{Profile, CLAUDE_SKILLS};
use crate::diag::Diagnostic;

/// One link a profile asks for: `$HOME/<dest>` pointing at `target`, a path in the profile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct WantedLink {
    /// Relative to `$HOME`, only normal components.
    pub dest: PathBuf,
    /// Absolute, inside the profile.
    pub target: PathBuf,
}

/// Everything a profile asks for, sorted by destination, with notes on what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantedLinks {
    pub links: Vec<WantedLink>,
    pub warnings: Vec<String>,
}

/// Paths the links must keep clear of, resolved once.
struct Fences {
    home: PathBuf,
    home_real: PathBuf,
    profile: PathBuf,
    profile_real: PathBuf,
    /// agentenv's own state, which holds `state` (see `own_state`).
    state: PathBuf,
}

/// The directory of agentenv's state that no link may touch: the profile state directory, or,
/// in the XDG layout (`~/.local/state/agentenv/profile`), the whole `agentenv` directory that
/// holds it, which is agentenv's alone.
pub fn own_state(state: &Path) -> PathBuf {
    let state = lexical_normal(state);
    match state.parent() {
        Some(parent) if parent.file_name() == Some("agentenv".as_ref()) => parent.to_path_buf(),
        _ => state,
    }
}

/// Lists the links `profile` asks for in `home`. `state` is agentenv's own state directory,
/// which no link may touch.
pub fn wanted_links(profile: &Profile, home: &Path, state: &Path) -> Result<WantedLinks> {
    let fences = Fences {
        home: lexical_normal(home),
        home_real: std::fs::canonicalize(home)
            .with_context(|| format!("cannot resolve the home directory {}", home.display()))?,
        profile: profile.root.clone(),
        profile_real: std::fs::canonicalize(&profile.root)
            .with_context(|| format!("cannot resolve {}", profile.root.display()))?,
        state: own_state(state),
    };
    if fences.home_real.starts_with(&fences.profile_real) {
        return Err(Diagnostic::new(format!(
            "the profile {} holds the home directory {}",
            profile.root.display(),
            home.display()
        ))
        .hint("a profile is a directory inside or beside your home, e.g. ~/config")
        .into());
    }
    let mut out = WantedLinks::default();
    let home_dir = profile.home_dir();
    if home_dir.is_dir() {
        mirror(&home_dir, Path::new(""), &fences, &mut out)?;
    }
    if let Some(skills) = profile.skills_dir().filter(|d| d.is_dir()) {
        let mut targets = vec![CLAUDE_SKILLS.to_string()];
        targets.extend(profile.manifest.skills.targets.iter().cloned());
        let targets = targets
            .iter()
            .map(|t| home_relative(t, "[skills] targets"))
            .collect::<Result<Vec<_>>>()?;
        for (entry, _) in sorted_entries(&skills)? {
            let path = skills.join(&entry);
            if !path.is_dir() {
                continue;
            }
            if !path.join("SKILL.md").is_file() {
                out.warnings.push(format!(
                    "skipped {}: a skill is a directory with a SKILL.md",
                    path.display()
                ));
                continue;
            }
            check_source(&path, &fences)?;
            for t in &targets {
                out.links.push(WantedLink {
                    dest: t.join(&entry),
                    target: path.clone(),
                });
            }
        }
    }
    for (from, to) in &profile.manifest.links {
        let rel = profile_relative(from)?;
        let target = profile.root.join(&rel);
        if std::fs::symlink_metadata(&target).is_err() {
            return Err(Diagnostic::new(format!(
                "the manifest links {from:?}, which is not in the profile ({} is missing)",
                target.display()
            ))
            .hint(
                "fix the path in [links] of agentenv.toml; paths there are relative to the profile",
            )
            .into());
        }
        check_source(&target, &fences)?;
        out.links.push(WantedLink {
            dest: home_relative(to, "[links]")?,
            target,
        });
    }
    out.links.sort();
    for link in &out.links {
        check_dest(link, &fences)?;
    }
    check_overlaps(&out.links)?;
    Ok(out)
}

/// Adds a link for every file (and symlink) below `dir`, keeping the directory structure.
fn mirror(dir: &Path, rel: &Path, fences: &Fences, out: &mut WantedLinks) -> Result<()> {
    for (name, kind) in sorted_entries(dir)? {
        let path = dir.join(&name);
        if kind.is_dir() {
            mirror(&path, &rel.join(&name), fences, out)?;
        } else if kind.is_file() || kind.is_symlink() {
            if kind.is_symlink() {
                check_source(&path, fences)?;
            }
            out.links.push(WantedLink {
                dest: rel.join(&name),
                target: path,
            });
        } else {
            out.warnings.push(format!(
                "skipped {}: not a file or directory",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The entries of `dir` by name, with their types (from the directory listing itself on most
/// file systems: no stat per file).
fn sorted_entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, std::fs::FileType)>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// A profile entry that is a symlink must not loop, nor lead back into `$HOME` (outside the
/// profile): the link made from it would point, through it, at itself or at the user's files.
/// A dangling one is judged by where it points, as a path: once that exists (the activation
/// itself may make it), it would be a cycle all the same.
fn check_source(path: &Path, f: &Fences) -> Result<()> {
    let cycle = || -> anyhow::Error {
        Diagnostic::new(format!("{} is a symlink cycle", path.display()))
            .hint("fix or remove that symlink in the profile")
            .into()
    };
    let (leads_to, verb) = match std::fs::canonicalize(path) {
        Ok(real) => (vec![real], "resolves to"),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(cycle()),
        Err(_) => (dangling_targets(path).ok_or_else(cycle)?, "points to"),
    };
    let inside = |p: &PathBuf, a: &Path, b: &Path| p.starts_with(a) || p.starts_with(b);
    let into_home = leads_to
        .iter()
        .find(|p| inside(p, &f.home, &f.home_real) && !inside(p, &f.profile, &f.profile_real));
    if let Some(target) = into_home {
        return Err(Diagnostic::new(format!(
            "{} {verb} {}, inside the home directory: linking it would make a cycle",
            path.display(),
            target.display()
        ))
        .hint("a profile holds the files themselves: copy the file into the profile instead of linking to it")
        .into());
    }
    Ok(())
}

/// Where the dangling symlink `path` leads, hop by hop: each target taken against its link's
/// directory and normalised, as written and with the part that exists resolved. `None` for a
/// chain too long to follow (as the kernel would refuse it).
fn dangling_targets(path: &Path) -> Option<Vec<PathBuf>> {
    let mut seen = Vec::new();
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&at) else {
            return Some(seen);
        };
        let dir = at.parent().unwrap_or(Path::new("/"));
        let written = lexical_normal(&dir.join(&target));
        at = resolve_existing(&lexical_normal(&resolve_existing(dir).join(&target)));
        seen.push(written);
        seen.push(at.clone());
    }
    None
}

/// `path` with its longest existing prefix resolved and the rest appended as it is.
fn resolve_existing(path: &Path) -> PathBuf {
    for prefix in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(prefix) {
            let rest = path.strip_prefix(prefix).unwrap_or(Path::new(""));
            return if rest.as_os_str().is_empty() {
                real
            } else {
                real.join(rest)
            };
        }
    }
    path.to_path_buf()
}

/// A link may not land in the profile, hold the profile, or touch agentenv's state.
fn check_dest(link: &WantedLink, f: &Fences) -> Result<()> {
    let lexical = f.home.join(&link.dest);
    let real = f.home_real.join(&link.dest);
    let inside_profile = [&lexical, &real]
        .iter()
        .any(|p| p.starts_with(&f.profile) || p.starts_with(&f.profile_real));
    let holds_profile = f.profile.starts_with(&lexical) || f.profile_real.starts_with(&real);
    if inside_profile || holds_profile {
        return Err(Diagnostic::new(format!(
            "the link ~/{} -> {} would {} the profile itself: a cycle",
            link.dest.display(),
            link.target.display(),
            if holds_profile {
                "replace"
            } else {
                "write into"
            }
        ))
        .hint("point the link at a home path outside the profile directory")
        .into());
    }
    if lexical.starts_with(&f.state) || f.state.starts_with(&lexical) {
        return Err(Diagnostic::new(format!(
            "the link ~/{} would touch agentenv's own state in {}",
            link.dest.display(),
            f.state.display()
        ))
        .hint("leave that path out of the profile")
        .into());
    }
    Ok(())
}

/// Two links at one place, or one inside another, cannot both be made.
fn check_overlaps(links: &[WantedLink]) -> Result<()> {
    let mut seen: BTreeSet<&Path> = BTreeSet::new();
    for link in links {
        if let Some(other) = link.dest.ancestors().find(|a| seen.contains(a)) {
            let what = if other == link.dest {
                "two links are"
            } else {
                "a link lies inside another link"
            };
            let first = links.iter().find(|l| l.dest == other).map(|l| &l.target);
            return Err(
                Diagnostic::new(format!("{what} at ~/{}", link.dest.display()))
                    .detail(format!(
                        "~/{} -> {}",
                        other.display(),
                        first.map(|t| t.display().to_string()).unwrap_or_default()
                    ))
                    .detail(format!(
                        "~/{} -> {}",
                        link.dest.display(),
                        link.target.display()
                    ))
                    .hint("keep one of them: remove the file from home/ or the entry from [links]")
                    .into(),
            );
        }
        seen.insert(&link.dest);
    }
    Ok(())
}

/// A manifest path relative to `$HOME`: no `..`, not absolute, not empty.
pub fn home_relative(s: &str, key: &str) -> Result<PathBuf> {
    normal_relative(s).ok_or_else(|| {
        Diagnostic::new(format!(
            "the manifest's {key} has {s:?}, which would leave the home directory"
        ))
        .hint("home paths are relative to $HOME, without `..`: e.g. \".config/nvim\"")
        .into()
    })
}

fn profile_relative(s: &str) -> Result<PathBuf> {
    normal_relative(s).ok_or_else(|| {
        Diagnostic::new(format!(
            "the manifest's [links] has {s:?}, which would leave the profile"
        ))
        .hint("profile paths are relative to the profile, without `..`: e.g. \"nvim/init.lua\"")
        .into()
    })
}

fn normal_relative(s: &str) -> Option<PathBuf> {
    let path = Path::new(s);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// True if `e` says the path is not there.
pub fn is_missing(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(normal_relative("./a/b"), Some(PathBuf::from("a/b")));
        assert_eq!(normal_relative("a/../../b"), None);
        assert_eq!(normal_relative("/etc/passwd"), None);
        assert_eq!(normal_relative("."), None);
        assert_eq!(normal_relative(""), None);
    }

    #[test]
    fn overlapping_links_are_refused() {
        let l = |d: &str| WantedLink {
            dest: d.into(),
            target: "/p/x".into(),
        };
        assert!(check_overlaps(&[l(".a"), l(".b")]).is_ok());
        assert!(check_overlaps(&[l(".a"), l(".a")]).is_err());
        assert!(check_overlaps(&[l(".a"), l(".a/b")]).is_err());
    }
}
