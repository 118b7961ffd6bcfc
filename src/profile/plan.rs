//! Activation as plain data: from the links a profile asks for and what is in `$HOME` now,
//! every directory to create, every entry to move aside and every link to make. Reads the home;
//! changes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::beneath::HomeLinks;
use super::env::ProfileEnv;
use super::links::{is_missing, wanted_links, WantedLinks};
use super::manifest::{Layout, Profile};
use crate::diag::Diagnostic;
use crate::util::lexical_normal;

/// What activating a profile into a home will do, in the order it is done: move the
/// conflicts aside, create the directories, make the links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivationPlan {
    pub profile: PathBuf,
    pub layout: Layout,
    pub home: PathBuf,
    /// Which symlinks below the home the plan goes through (and apply and undo after it).
    #[serde(skip)]
    pub home_links: HomeLinks,
    /// Existing entries where a link or a directory must go; moved aside, restored on undo.
    pub conflicts: Vec<Conflict>,
    /// Directories to create, parents first.
    pub dirs: Vec<PathBuf>,
    pub links: Vec<Link>,
    pub env: ProfileEnv,
    /// `activate.sh`, run after the links are made.
    pub hook: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// An existing entry in the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl EntryKind {
    fn of(ft: std::fs::FileType) -> Self {
        if ft.is_symlink() {
            Self::Symlink
        } else if ft.is_dir() {
            Self::Dir
        } else if ft.is_file() {
            Self::File
        } else {
            Self::Other
        }
    }
}

/// A symlink to make: `path` (in the home) pointing at `target` (in the profile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub path: PathBuf,
    pub target: PathBuf,
}

/// What the plan knows of a path in the home once the steps before it are done.
#[derive(Debug, Clone, Copy)]
enum Known {
    /// A directory that was there.
    Dir,
    /// A directory the plan creates: everything below it is free.
    Created,
}

/// Plans the activation of the profile at `profile_dir` into the user's own `home`; `state`
/// is agentenv's state directory (no link may touch it).
pub fn plan_activation(profile_dir: &Path, home: &Path, state: &Path) -> Result<ActivationPlan> {
    let profile = Profile::load(profile_dir)?;
    let wanted = wanted_links(&profile, home, state)?;
    plan_links(&profile, &wanted, home, state, HomeLinks::InHome)
}

/// Plans making `wanted` in `home` as it is now. `state` is agentenv's state directory: taking
/// its lock creates it before anything is applied, so a missing directory on its way is not
/// the plan's to create (nor to remove on undo). With `HomeLinks::Refused`, a symlink where a
/// directory of a link's path must be is in the way: it is moved aside like a file, and a real
/// directory made in its place.
pub fn plan_links(
    profile: &Profile,
    wanted: &WantedLinks,
    home: &Path,
    state: &Path,
    home_links: HomeLinks,
) -> Result<ActivationPlan> {
    let state = lexical_normal(state);
    let home_real = std::fs::canonicalize(home)
        .with_context(|| format!("cannot resolve the home directory {}", home.display()))?;
    let profile_real = std::fs::canonicalize(&profile.root)
        .with_context(|| format!("cannot resolve {}", profile.root.display()))?;
    let mut plan = ActivationPlan {
        profile: profile.root.clone(),
        layout: profile.layout,
        home: home.to_path_buf(),
        home_links,
        conflicts: Vec::new(),
        dirs: Vec::new(),
        links: Vec::new(),
        env: profile_env(profile),
        hook: profile.hook(),
        warnings: wanted.warnings.clone(),
    };
    let mut known: HashMap<PathBuf, Known> = HashMap::new();
    for want in &wanted.links {
        let mut at = home.to_path_buf();
        let mut free = false;
        let parent = want.dest.parent().unwrap_or(Path::new(""));
        for comp in parent.components() {
            at.push(comp);
            if let Some(k) = known.get(&at) {
                free = matches!(k, Known::Created);
                continue;
            }
            let k = if free {
                Known::Created
            } else {
                inspect_parent(&at, &home_real, &profile_real, &state, &mut plan)?
            };
            if matches!(k, Known::Created) {
                plan.dirs.push(at.clone());
                free = true;
            }
            known.insert(at.clone(), k);
        }
        let path = home.join(&want.dest);
        if !free {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) => plan.conflicts.push(Conflict {
                    path: path.clone(),
                    kind: EntryKind::of(meta.file_type()),
                }),
                Err(e) if is_missing(&e) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot inspect {}", path.display()))
                }
            }
        }
        plan.links.push(Link {
            path,
            target: want.target.clone(),
        });
    }
    Ok(plan)
}

/// Decides what happens to an existing directory level `at` of a link's path.
fn inspect_parent(
    at: &Path,
    home_real: &Path,
    profile_real: &Path,
    state: &Path,
    plan: &mut ActivationPlan,
) -> Result<Known> {
    let meta = match std::fs::symlink_metadata(at) {
        Ok(m) => m,
        Err(e) if is_missing(&e) && state.starts_with(at) => return Ok(Known::Dir),
        Err(e) if is_missing(&e) => return Ok(Known::Created),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", at.display())),
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(Known::Dir);
    }
    if ft.is_symlink() && at.is_dir() && plan.home_links == HomeLinks::InHome {
        let real = std::fs::canonicalize(at)
            .with_context(|| format!("cannot resolve {}", at.display()))?;
        if real.starts_with(profile_real) {
            return Err(Diagnostic::new(format!(
                "{} is a symlink into the profile ({}): linking through it would make a cycle",
                at.display(),
                real.display()
            ))
            .hint(format!(
                "an earlier set-up made it; remove it (`rm {}`) and activate again",
                at.display()
            ))
            .into());
        }
        if !real.starts_with(home_real) {
            return Err(Diagnostic::new(format!(
                "{} is a symlink to {}, outside the home directory: links through it would leave $HOME",
                at.display(),
                real.display()
            ))
            .hint("make it a real directory, or leave the files below it out of the profile")
            .into());
        }
        return Ok(Known::Dir);
    }
    // A file, a dangling symlink, a symlink to a file (or, in a home whose symlinks are not
    // gone through, any symlink) where a directory must go.
    plan.conflicts.push(Conflict {
        path: at.to_path_buf(),
        kind: EntryKind::of(ft),
    });
    Ok(Known::Created)
}

/// The environment the profile contributes.
pub fn profile_env(profile: &Profile) -> ProfileEnv {
    let mut vars = vec![(
        "AGENTENV_PROFILE".to_string(),
        profile.root.to_string_lossy().into_owned(),
    )];
    vars.extend(
        profile
            .manifest
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    ProfileEnv {
        path_prepend: profile.bin_dir().into_iter().collect(),
        path_append: Vec::new(),
        vars,
        shell_init: profile.manifest.shell.init.clone(),
        tools: profile.tools_installable(),
    }
}

impl ActivationPlan {
    /// The plan as lines for a person: one action per line.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "activate {} into {}\n",
            self.profile.display(),
            self.home.display()
        );
        for c in &self.conflicts {
            out.push_str(&format!(
                "move aside  {} ({})\n",
                c.path.display(),
                format!("{:?}", c.kind).to_lowercase()
            ));
        }
        for d in &self.dirs {
            out.push_str(&format!("create dir  {}\n", d.display()));
        }
        for l in &self.links {
            out.push_str(&format!(
                "link        {} -> {}\n",
                l.path.display(),
                l.target.display()
            ));
        }
        for p in &self.env.path_prepend {
            out.push_str(&format!("path first  {}\n", p.display()));
        }
        if let Some(t) = &self.env.tools {
            out.push_str(&format!("path last   bin of {t} (once built)\n"));
        }
        for (k, v) in &self.env.vars {
            out.push_str(&format!("set         {k}={v}\n"));
        }
        for s in &self.env.shell_init {
            out.push_str(&format!("shell init  {s}\n"));
        }
        if let Some(h) = &self.hook {
            out.push_str(&format!("run         {}\n", h.display()));
        }
        out
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
