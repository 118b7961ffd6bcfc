//! Changes made to a memory from outside a session: undoing what a commit did (`revert`, a
//! three-way merge like any landing, so later changes stay) and settling a kept conflict
//! (`resolve`). Each is a commit with its provenance.

use anyhow::Result;

use super::merge::{merge_into_head, Kept};
use super::provenance::{host_name, now, Provenance};
use super::repo::{shown, Change, Oid};
use super::status::open_conflicts;
use super::Agent;
use crate::diag::Diagnostic;

fn provenance(agent: &Agent, command: String) -> Provenance {
    let started = now();
    Provenance {
        agent: agent.name().to_string(),
        host: host_name(),
        project: None,
        backend: "agentenv".into(),
        command,
        started,
        session: format!("{started:x}"),
    }
}

/// What `revert` made: its commit and the conflicts it kept.
pub struct Reverted {
    pub commit: Oid,
    pub conflicts: Vec<Kept>,
}

/// Undoes what `rev` changed (against its first parent) in the live memory.
pub fn revert(agent: &Agent, rev: &str) -> Result<Reverted> {
    let repo = agent.repo();
    let _lock = agent.lock()?;
    let target = repo.resolve(rev).map_err(|_| {
        Diagnostic::new(format!("no commit {rev} in the memory of {}", agent.name())).hint(format!(
            "pick one from `agentenv memory log {}`",
            agent.name()
        ))
    })?;
    let Some(parent) = repo.first_parent(&target)? else {
        return Err(Diagnostic::new(format!(
            "{rev} is the memory's first commit: there is nothing before it"
        ))
        .into());
    };
    let head = repo.head()?;
    let prov = provenance(agent, format!("memory revert {} {rev}", agent.name()));
    let (tree, conflicts) = merge_into_head(&repo, &head, &target, &parent, &prov.session)?;
    let subject = repo.run(&["log", "-1", "--format=%s", &target])?;
    let summary = format!(
        "revert {}: {}",
        &target[..12],
        String::from_utf8_lossy(&subject).trim()
    );
    let mut extra = vec![("Reverts", target.clone())];
    extra.extend(
        conflicts
            .iter()
            .map(|k| (super::merge::CONFLICT_TRAILER, k.trailer())),
    );
    let when = now();
    let commit = repo.commit_tree(
        &tree,
        &[&head],
        &prov.message(&summary, when, &extra),
        &prov.signature(when),
    )?;
    repo.update_ref(&commit, Some(&head), &[])?;
    Ok(Reverted { commit, conflicts })
}

/// Which side a resolved conflict keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Take {
    /// The version the file has now (the live memory's).
    Kept,
    /// The other side, kept beside it.
    Other,
}

/// Settles the open conflict on `path` (or its other side's path): the file takes `take`,
/// the other side's file goes.
pub fn resolve(agent: &Agent, path: &str, take: Take) -> Result<Oid> {
    let repo = agent.repo();
    let _lock = agent.lock()?;
    let head = repo.head()?;
    let files = repo.ls_tree(&head)?;
    let path = path.trim_start_matches("~/");
    let open = open_conflicts(agent, &files)?;
    let Some(c) = open.iter().find(|c| c.path == path || c.beside == path) else {
        let mut d = Diagnostic::new(format!(
            "no open conflict on {path} in the memory of {}",
            agent.name()
        ));
        for c in &open {
            d = d.detail(format!("open: {}", c.path));
        }
        return Err(d
            .hint(format!("see `agentenv memory status {}`", agent.name()))
            .into());
    };
    let mut changes = vec![Change::Delete {
        path: c.beside.as_bytes().to_vec(),
    }];
    if take == Take::Other {
        let other = files
            .iter()
            .find(|f| shown(&f.path) == c.beside)
            .ok_or_else(|| anyhow::anyhow!("{} is no longer in the memory", c.beside))?;
        changes.push(Change::Write {
            path: c.path.as_bytes().to_vec(),
            mode: u32::from_str_radix(&other.mode, 8).unwrap_or(0o100644),
            data: repo.read_blob(&other.oid)?,
        });
    }
    let prov = provenance(agent, format!("memory resolve {} {path}", agent.name()));
    let when = now();
    let summary = format!(
        "resolve {}: keep the {} side",
        c.path,
        match take {
            Take::Kept => "kept",
            Take::Other => "other",
        }
    );
    let scratch = format!("refs/agentenv/sessions/{}", prov.session);
    let commit = repo.commit_changes(
        Some(&head),
        &changes,
        &prov.message(&summary, when, &[("Resolved", c.path.clone())]),
        &prov.signature(when),
        &scratch,
    )?;
    repo.update_ref(&commit, Some(&head), &[&scratch])?;
    Ok(commit)
}
