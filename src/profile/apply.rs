//! Carrying out an activation plan as one transaction, and undoing one. The journal is written
//! before the first change; undo works from the journal alone and from what it finds on disk,
//! so it also repairs a transaction that was killed half-way.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::journal::{new_tx_id, Journal, StateFiles, Step, TxState, JOURNAL_VERSION};
use super::links::is_missing;
use super::plan::ActivationPlan;

/// Test hook: stop for good after this many steps (of an apply or of an undo), so a test can
/// kill agentenv at a known point.
const PAUSE_VAR: &str = "AGENTENV_TEST_PAUSE_AFTER_STEPS";

/// What an undo had to leave in place because the user changed it since activation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndoReport {
    /// Links no longer pointing where agentenv pointed them: left alone.
    pub changed_links: Vec<PathBuf>,
    /// Directories agentenv created that are not empty now: left alone.
    pub kept_dirs: Vec<PathBuf>,
    /// Entries moved aside whose place is taken now: (place, where the original still is).
    pub kept_backups: Vec<(PathBuf, PathBuf)>,
}

impl UndoReport {
    /// One line per thing left in place, for stderr.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.changed_links {
            out.push(format!(
                "left {} in place: it was changed after activation",
                p.display()
            ));
        }
        for d in &self.kept_dirs {
            out.push(format!(
                "left {} in place: it holds files that are not the profile's",
                d.display()
            ));
        }
        for (place, backup) in &self.kept_backups {
            out.push(format!(
                "could not put back {}: something else is there now; the original is at {}",
                place.display(),
                backup.display()
            ));
        }
        out
    }
}

/// Records `plan` in a journal and makes it, all or nothing: on any failure, what was made is
/// undone and the error returned.
pub fn apply_plan(plan: &ActivationPlan, files: &StateFiles) -> Result<Journal> {
    let id = new_tx_id();
    let backups = files.backups(&id);
    std::fs::create_dir_all(&backups)
        .with_context(|| format!("cannot create {}", backups.display()))?;
    let backup_dev = std::fs::metadata(&backups)
        .with_context(|| format!("cannot inspect {}", backups.display()))?
        .dev();
    let mut steps = Vec::with_capacity(plan.conflicts.len() + plan.dirs.len() + plan.links.len());
    for (i, c) in plan.conflicts.iter().enumerate() {
        steps.push(Step::MoveAside {
            path: c.path.clone(),
            backup: backup_place(&c.path, &backups, backup_dev, &id, i),
        });
    }
    // Each link right after the directories it needs: on ext4, creating every directory
    // first and then every link takes twice as long.
    let mut dirs = plan.dirs.iter().peekable();
    for link in &plan.links {
        while let Some(dir) = dirs.next_if(|d| link.path.starts_with(d)) {
            steps.push(Step::CreateDir { path: dir.clone() });
        }
        steps.push(Step::Link {
            path: link.path.clone(),
            target: link.target.clone(),
        });
    }
    steps.extend(dirs.map(|d| Step::CreateDir { path: d.clone() }));
    let mut journal = Journal {
        version: JOURNAL_VERSION,
        id,
        state: TxState::Applying,
        profile: plan.profile.clone(),
        home: plan.home.clone(),
        steps,
        env: plan.env.clone(),
        hook: plan.hook.clone(),
        hook_failed: false,
        origin: None,
    };
    files.begin(&mut journal)?;
    let pause = pause_point();
    for (done, step) in journal.steps.iter().enumerate() {
        if let Err(err) = make_step(step) {
            return Err(match undo(&mut journal, files) {
                Ok(report) => {
                    for w in report.warnings() {
                        tracing::warn!("{w}");
                    }
                    err.context("activation failed; the home is as it was")
                }
                Err(undo_err) => err.context(format!(
                    "activation failed, and undoing it too ({undo_err:#}); the next activate or deactivate finishes the undo"
                )),
            });
        }
        pause_if(pause, done + 1);
    }
    files.mark(&mut journal, TxState::Applied)?;
    Ok(journal)
}

/// Where the entry at `path` is moved: the transaction's backup area when it is on the same
/// file system (a rename keeps everything), else a hidden name beside it.
fn backup_place(path: &Path, area: &Path, area_dev: u64, id: &str, index: usize) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let same_fs = std::fs::metadata(parent).is_ok_and(|m| m.dev() == area_dev);
    if same_fs {
        area.join(index.to_string())
    } else {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        parent.join(format!(".{name}.agentenv-{id}"))
    }
}

fn make_step(step: &Step) -> Result<()> {
    match step {
        Step::MoveAside { path, backup } => std::fs::rename(path, backup).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                path.display(),
                backup.display()
            )
        }),
        Step::CreateDir { path } => std::fs::create_dir(path)
            .with_context(|| format!("cannot create the directory {}", path.display())),
        Step::Link { path, target } => std::os::unix::fs::symlink(target, path)
            .with_context(|| format!("cannot link {} -> {}", path.display(), target.display())),
    }
}

/// Undoes the journal's transaction and removes the journal: the way out of an active profile
/// and the repair of an interrupted one.
pub fn undo(journal: &mut Journal, files: &StateFiles) -> Result<UndoReport> {
    if journal.state == TxState::Applied {
        files.mark(journal, TxState::Removing)?;
    }
    let report = undo_steps(journal)?;
    remove_if_present(&files.env_script())?;
    let area = files.backups(&journal.id);
    let _ = std::fs::remove_dir(&area);
    if let Some(parent) = area.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    files.clear()?;
    Ok(report)
}

/// Undoes every step that was made, last first. Each undo checks what is there, so running it
/// again, or on a transaction that stopped half-way, is safe.
fn undo_steps(journal: &Journal) -> Result<UndoReport> {
    let moved: HashMap<&Path, &Path> = journal
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::MoveAside { path, backup } => Some((path.as_path(), backup.as_path())),
            _ => None,
        })
        .collect();
    let mut report = UndoReport::default();
    let pause = pause_point();
    for (done, step) in journal.steps.iter().rev().enumerate() {
        match step {
            Step::Link { path, target } => {
                // If what was in the way is not in the backup, it was never moved (or is back
                // already): what is at `path` is the user's.
                if moved.get(path.as_path()).is_some_and(|b| !exists(b)) {
                    continue;
                }
                match std::fs::read_link(path) {
                    Ok(t) if &t == target => remove_if_present(path)?,
                    Ok(_) => report.changed_links.push(path.clone()),
                    Err(e) if is_missing(&e) => {}
                    Err(_) => report.changed_links.push(path.clone()),
                }
            }
            Step::CreateDir { path } => match std::fs::remove_dir(path) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                    report.kept_dirs.push(path.clone())
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot remove the directory {}", path.display()))
                }
            },
            Step::MoveAside { path, backup } => {
                if !exists(backup) {
                    continue;
                }
                if exists(path) {
                    report.kept_backups.push((path.clone(), backup.clone()));
                    continue;
                }
                std::fs::rename(backup, path).with_context(|| {
                    format!(
                        "cannot put {} back from {}",
                        path.display(),
                        backup.display()
                    )
                })?;
            }
        }
        pause_if(pause, done + 1);
    }
    Ok(report)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn pause_point() -> Option<usize> {
    std::env::var(PAUSE_VAR).ok()?.parse().ok()
}

fn pause_if(pause: Option<usize>, done: usize) {
    if pause == Some(done) {
        eprintln!("agentenv: paused after {done} steps");
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
