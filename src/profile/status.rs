//! What is active in a home, read from the journal and checked against the disk: for
//! `agentenv profile status`. Changes nothing.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::env::ProfileEnv;
use super::journal::{StateFiles, Step, TxState};

/// The state of a home's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileStatus {
    /// `active`; `applying` or `removing` if a transaction was interrupted (the next activate
    /// or deactivate repairs it).
    pub state: TxState,
    pub profile: PathBuf,
    pub home: PathBuf,
    /// The flake it was installed from, if `profile install` made it.
    pub origin: Option<String>,
    pub links: usize,
    /// Links that no longer point where agentenv pointed them.
    pub changed_links: Vec<PathBuf>,
    pub dirs_created: usize,
    pub moved_aside: Vec<MovedAside>,
    pub env: ProfileEnv,
    /// The script a shell on this host sources to get `env`.
    pub env_script: PathBuf,
    pub hook: Option<PathBuf>,
    pub hook_failed: bool,
}

/// An entry that was in a link's place, kept until deactivation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovedAside {
    pub path: PathBuf,
    pub backup: PathBuf,
}

/// The status of the profile recorded in `state_dir`; `None` if no profile is active.
pub fn status_of(state_dir: &Path) -> Result<Option<ProfileStatus>> {
    let files = StateFiles::new(state_dir);
    let Some(j) = files.read()? else {
        return Ok(None);
    };
    let mut status = ProfileStatus {
        state: j.state,
        profile: j.profile.clone(),
        home: j.home.clone(),
        origin: j.origin.clone(),
        links: 0,
        changed_links: Vec::new(),
        dirs_created: 0,
        moved_aside: Vec::new(),
        env: j.env.clone(),
        env_script: files.env_script(),
        hook: j.hook.clone(),
        hook_failed: j.hook_failed,
    };
    for step in &j.steps {
        match step {
            Step::Link { path, target } => {
                status.links += 1;
                if std::fs::read_link(path).map_or(true, |t| t != *target) {
                    status.changed_links.push(path.clone());
                }
            }
            Step::CreateDir { .. } => status.dirs_created += 1,
            Step::MoveAside { path, backup } => status.moved_aside.push(MovedAside {
                path: path.clone(),
                backup: backup.clone(),
            }),
        }
    }
    Ok(Some(status))
}

impl ProfileStatus {
    /// The status for a person, one fact per line.
    pub fn describe(&self) -> String {
        let state = match self.state {
            TxState::Applied => "active".to_string(),
            TxState::Applying => {
                "interrupted while activating: the next activate or deactivate undoes it".into()
            }
            TxState::Removing => {
                "interrupted while deactivating: the next activate or deactivate finishes".into()
            }
        };
        let mut out = format!("profile   {}\n", self.profile.display());
        if let Some(origin) = &self.origin {
            out.push_str(&format!("from      {origin}\n"));
        }
        out.push_str(&format!("home      {}\n", self.home.display()));
        out.push_str(&format!("state     {state}\n"));
        out.push_str(&format!(
            "links     {} ({} changed since activation)\n",
            self.links,
            self.changed_links.len()
        ));
        for p in &self.changed_links {
            out.push_str(&format!("  changed {}\n", p.display()));
        }
        out.push_str(&format!(
            "moved     {} entries aside, put back on deactivate\n",
            self.moved_aside.len()
        ));
        for p in &self.env.path_prepend {
            out.push_str(&format!("path      {} (first)\n", p.display()));
        }
        for p in &self.env.path_append {
            out.push_str(&format!("path      {} (last)\n", p.display()));
        }
        if let (Some(t), true) = (&self.env.tools, self.env.path_append.is_empty()) {
            out.push_str(&format!("tools     {t} (not built)\n"));
        }
        let names: Vec<&str> = self.env.vars.iter().map(|(k, _)| k.as_str()).collect();
        out.push_str(&format!("variables {}\n", names.join(" ")));
        if let Some(h) = &self.hook {
            let how = if self.hook_failed {
                "failed or not run yet"
            } else {
                "ran"
            };
            out.push_str(&format!("hook      {} ({how})\n", h.display()));
        }
        out.push_str(&format!(
            "shell     . {}   (PATH, variables and init snippets)\n",
            self.env_script.display()
        ));
        out
    }
}
