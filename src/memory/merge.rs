//! Landing a session's commit on the live memory: a fast-forward when nothing landed since its
//! base, else a three-way merge by `git merge-tree`. A conflict never leaves git's markers in
//! the memory: the path keeps the live memory's side, and the session's side is kept beside it
//! (`<path>.conflict-<session>`), named in a `Conflict:` trailer until `memory resolve`.

use anyhow::{bail, Result};

use super::provenance::Provenance;
use super::repo::{shown, Oid, Repo, TreeEntry};

/// The trailer naming a kept conflict: `<path> | <where the other side is>`.
pub const CONFLICT_TRAILER: &str = "Conflict";

/// A conflict the merge kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    /// The path, which keeps one side.
    pub path: String,
    /// Where the other side is, if it has content (a deletion has none).
    pub beside: Option<String>,
    /// Which side the path kept, and what the other did.
    pub what: String,
}

impl Kept {
    pub fn trailer(&self) -> String {
        match &self.beside {
            Some(b) => format!("{} | {b}", self.path),
            None => format!("{} | ({})", self.path, self.what),
        }
    }
}

/// What landing did.
#[derive(Debug, Clone)]
pub struct Landed {
    /// The live memory's commit now.
    pub commit: Oid,
    pub fast_forward: bool,
    pub conflicts: Vec<Kept>,
}

use super::repo::TreeEdit as Edit;

/// From the stages of every conflicted path (as `git merge-tree` lists them; 2 is the live
/// memory, 3 the incoming side), the edits that replace each conflicted path by one side and
/// keep the other beside it, tagged `tag`.
pub fn plan_conflicts(conflicts: &[(u8, TreeEntry)], tag: &str) -> (Vec<Edit>, Vec<Kept>) {
    let mut paths: Vec<&[u8]> = conflicts.iter().map(|(_, e)| e.path.as_slice()).collect();
    paths.dedup();
    paths.sort();
    paths.dedup();
    let mut edits = Vec::new();
    let mut kept = Vec::new();
    for path in paths {
        let stage = |n: u8| {
            conflicts
                .iter()
                .find(|(s, e)| *s == n && e.path == path)
                .map(|(_, e)| (e.mode.clone(), e.oid.clone()))
        };
        let (ours, theirs) = (stage(2), stage(3));
        let p = shown(path);
        match (ours, theirs) {
            (Some(ours), Some(theirs)) => {
                let mut beside = path.to_vec();
                beside.extend(format!(".conflict-{tag}").as_bytes());
                kept.push(Kept {
                    path: p,
                    beside: Some(shown(&beside)),
                    what: "both changed it: the live memory's version stays".into(),
                });
                edits.push((path.to_vec(), Some(ours)));
                edits.push((beside, Some(theirs)));
            }
            (Some(ours), None) => {
                kept.push(Kept {
                    path: p,
                    beside: None,
                    what: "removed by the session, changed in the live memory: kept".into(),
                });
                edits.push((path.to_vec(), Some(ours)));
            }
            (None, Some(theirs)) => {
                kept.push(Kept {
                    path: p,
                    beside: None,
                    what: "removed in the live memory, changed by the session: kept".into(),
                });
                edits.push((path.to_vec(), Some(theirs)));
            }
            (None, None) => edits.push((path.to_vec(), None)),
        }
    }
    (edits, kept)
}

/// Merges `theirs` into the live memory from `base`: the tree of the result and the conflicts
/// it kept (its paths hold one side each, never markers).
pub fn merge_into_head(
    repo: &Repo,
    head: &str,
    base: &str,
    theirs: &str,
    tag: &str,
) -> Result<(Oid, Vec<Kept>)> {
    let merged = repo.merge_tree(base, head, theirs)?;
    if merged.conflicts.is_empty() {
        return Ok((merged.tree, Vec::new()));
    }
    let (edits, kept) = plan_conflicts(&merged.conflicts, tag);
    let tree = repo.edit_tree(&merged.tree, &edits)?;
    Ok((tree, kept))
}

/// Lands `commit` (made on `base` by the session `prov`, ended at `ended`) on the live
/// memory, and deletes its scratch ref. The caller holds the agent's lock.
pub fn land(
    repo: &Repo,
    commit: &str,
    base: &str,
    prov: &Provenance,
    ended: u64,
    scratch_ref: &str,
) -> Result<Landed> {
    for _ in 0..5 {
        let head = repo.head()?;
        if head == base {
            if repo.update_ref(commit, Some(&head), &[scratch_ref]).is_ok() {
                return Ok(Landed {
                    commit: commit.to_string(),
                    fast_forward: true,
                    conflicts: Vec::new(),
                });
            }
            continue;
        }
        let tag: String = prov.session.chars().take(8).collect();
        let (tree, conflicts) = merge_into_head(repo, &head, base, commit, &tag)?;
        let extra: Vec<(&str, String)> = conflicts
            .iter()
            .map(|k| (CONFLICT_TRAILER, k.trailer()))
            .collect();
        let summary = format!("merge {}", prov.summary(0).split(':').next().unwrap_or(""));
        let message = prov.message(summary.trim(), ended, &extra);
        let merge = repo.commit_tree(&tree, &[&head, commit], &message, &prov.signature(ended))?;
        if repo.update_ref(&merge, Some(&head), &[scratch_ref]).is_ok() {
            return Ok(Landed {
                commit: merge,
                fast_forward: false,
                conflicts,
            });
        }
    }
    bail!("the live memory kept moving while this session landed; it is kept at {scratch_ref}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(stage: u8, path: &str, oid: &str) -> (u8, TreeEntry) {
        (
            stage,
            TreeEntry {
                mode: "100644".into(),
                oid: oid.into(),
                path: path.as_bytes().to_vec(),
            },
        )
    }

    #[test]
    fn both_sides_changed_keeps_the_live_one_and_the_other_beside() {
        let (edits, kept) = plan_conflicts(
            &[
                e(1, "a.md", "base"),
                e(2, "a.md", "live"),
                e(3, "a.md", "mine"),
            ],
            "s1",
        );
        assert_eq!(
            edits,
            vec![
                (b"a.md".to_vec(), Some(("100644".into(), "live".into()))),
                (
                    b"a.md.conflict-s1".to_vec(),
                    Some(("100644".into(), "mine".into()))
                ),
            ]
        );
        assert_eq!(kept[0].beside.as_deref(), Some("a.md.conflict-s1"));
    }

    #[test]
    fn a_removal_against_a_change_keeps_the_change() {
        let (edits, kept) = plan_conflicts(&[e(1, "a", "base"), e(3, "a", "mine")], "s1");
        assert_eq!(
            edits,
            vec![(b"a".to_vec(), Some(("100644".into(), "mine".into())))]
        );
        assert!(kept[0].beside.is_none());
        let (edits, _) = plan_conflicts(&[e(1, "a", "base"), e(2, "a", "live")], "s1");
        assert_eq!(
            edits,
            vec![(b"a".to_vec(), Some(("100644".into(), "live".into())))]
        );
    }
}
