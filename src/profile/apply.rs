//! Carrying out an activation plan as one transaction, and undoing one. The journal is written
//! before the first change; undo works from the journal alone and from what it finds on disk,
//! so it also repairs a transaction that was killed half-way. Every change to the home goes
//! through `beneath` (no symlink planted in the home is followed) and is made as the home's
//! owner (`owner`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags};

use super::beneath::{is_blocked, HomeDir, Place};
use super::journal::{new_tx_id, Journal, StateFiles, Step, TxState, JOURNAL_VERSION};
use super::links::is_missing;
use super::owner::act_as_owner;
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
    /// Places that cannot be reached any more, because a directory on their way was replaced
    /// (by a symlink, a file) or removed: left alone, with where the original is, if any.
    pub unreachable: Vec<(PathBuf, Option<PathBuf>)>,
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
        for (place, backup) in &self.unreachable {
            let rest = match backup {
                Some(b) => format!("; the original is at {}", b.display()),
                None => String::new(),
            };
            out.push(format!(
                "left {} alone: a directory on its way is no longer the directory it was (a symlink, a file, or gone){rest}",
                place.display()
            ));
        }
        out
    }
}

/// Records `plan` in a journal and makes it, all or nothing: on any failure, what was made is
/// undone and the error returned.
pub fn apply_plan(plan: &ActivationPlan, files: &StateFiles) -> Result<Journal> {
    let id = new_tx_id();
    let home = HomeDir::open(&plan.home, plan.home_links)?;
    let backups = files.backups(&id);
    std::fs::create_dir_all(&backups)
        .with_context(|| format!("cannot create {}", backups.display()))?;
    let area = open_area(&backups, &home)?
        .with_context(|| format!("cannot open {}", backups.display()))?;
    let backup_dev = rustix::fs::fstat(&area)
        .with_context(|| format!("cannot inspect {}", backups.display()))?
        .st_dev as u64;
    let places = Places {
        home,
        area: Some((backups.clone(), area)),
        last_link: RefCell::new(None),
    };
    let mut steps = Vec::with_capacity(plan.conflicts.len() + plan.dirs.len() + plan.links.len());
    for (i, c) in plan.conflicts.iter().enumerate() {
        steps.push(Step::MoveAside {
            path: c.path.clone(),
            backup: backup_place(&places, &c.path, &backups, backup_dev, &id, i),
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
        home_links: plan.home_links,
        steps,
        env: plan.env.clone(),
        hook: plan.hook.clone(),
        hook_failed: false,
        origin: None,
    };
    files.begin(&mut journal)?;
    let failed = {
        let _owner = act_as_owner(&places.home)?;
        make_steps(&journal.steps, &places).err()
    };
    if let Some(err) = failed {
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
    files.mark(&mut journal, TxState::Applied)?;
    Ok(journal)
}

/// Where a transaction's steps happen: the home, reached as `beneath` allows, and the
/// transaction's backup area (agentenv's own), opened before anything is done as the owner.
struct Places {
    home: HomeDir,
    area: Option<(PathBuf, OwnedFd)>,
    /// The directory of the last link made or removed: the links of one directory share its
    /// descriptor. Every other step forgets it, since it may move or remove a directory.
    last_link: RefCell<Option<Place>>,
}

impl Places {
    fn at(&self, path: &Path) -> std::io::Result<Place> {
        if let Some((area, fd)) = &self.area {
            if path.parent() == Some(area.as_path()) {
                let name = path.file_name().unwrap_or_default();
                return Place::in_dir(std::os::fd::AsFd::as_fd(fd), name);
            }
        }
        self.home.place(path)
    }

    fn link_at(&self, path: &Path) -> std::io::Result<Place> {
        let place = self
            .home
            .place_near(path, self.last_link.borrow().as_ref())?;
        *self.last_link.borrow_mut() = Some(place.clone());
        Ok(place)
    }

    fn forget_link_dir(&self) {
        self.last_link.borrow_mut().take();
    }

    /// Where the step on `path` happens (`link` if it is a link's).
    fn for_step(&self, path: &Path, link: bool) -> std::io::Result<Place> {
        if link {
            return self.link_at(path);
        }
        self.forget_link_dir();
        self.at(path)
    }
}

/// Opens the backup area (`None` if it is gone). When the home is changed as its owner, the
/// area is given to the owner too, so that entries can be moved into it and back.
fn open_area(area: &Path, home: &HomeDir) -> Result<Option<OwnedFd>> {
    let fd = match rustix::fs::open(
        area,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", area.display())),
    };
    let (uid, gid) = home.owner()?;
    let st =
        rustix::fs::fstat(&fd).with_context(|| format!("cannot inspect {}", area.display()))?;
    if nix::unistd::geteuid().is_root() && (st.st_uid, st.st_gid) != (uid, gid) {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .with_context(|| format!("cannot give {} to the home's owner", area.display()))?;
    }
    Ok(Some(fd))
}

fn make_steps(steps: &[Step], places: &Places) -> Result<()> {
    let pause = pause_point();
    for (done, step) in steps.iter().enumerate() {
        make_step(step, places)?;
        pause_if(pause, done + 1);
    }
    Ok(())
}

/// Where the entry at `path` is moved: the transaction's backup area when it is on the same
/// file system (a rename keeps everything), else a hidden name beside it.
fn backup_place(
    places: &Places,
    path: &Path,
    area: &Path,
    area_dev: u64,
    id: &str,
    index: usize,
) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let same_fs = places
        .at(path)
        .and_then(|p| p.dir_dev())
        .map_or(true, |dev| dev == area_dev);
    if same_fs {
        area.join(index.to_string())
    } else {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        parent.join(format!(".{name}.agentenv-{id}"))
    }
}

fn make_step(step: &Step, places: &Places) -> Result<()> {
    let link = matches!(step, Step::Link { .. });
    let at = |path: &Path| {
        places
            .for_step(path, link)
            .with_context(|| format!("cannot reach {}", path.display()))
    };
    match step {
        Step::MoveAside { path, backup } => at(path)?.rename_to(&at(backup)?).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                path.display(),
                backup.display()
            )
        }),
        Step::CreateDir { path } => at(path)?
            .mkdir()
            .with_context(|| format!("cannot create the directory {}", path.display())),
        Step::Link { path, target } => at(path)?
            .symlink(target)
            .with_context(|| format!("cannot link {} -> {}", path.display(), target.display())),
    }
}

/// Undoes the journal's transaction and removes the journal: the way out of an active profile
/// and the repair of an interrupted one.
pub fn undo(journal: &mut Journal, files: &StateFiles) -> Result<UndoReport> {
    if journal.state == TxState::Applied {
        files.mark(journal, TxState::Removing)?;
    }
    let area = files.backups(&journal.id);
    let report = if std::fs::symlink_metadata(&journal.home).is_err() {
        home_gone(journal)
    } else {
        let home = HomeDir::open(&journal.home, journal.home_links)?;
        let places = Places {
            area: open_area(&area, &home)?.map(|fd| (area.clone(), fd)),
            home,
            last_link: RefCell::new(None),
        };
        let _owner = act_as_owner(&places.home)?;
        undo_steps(journal, &places)?
    };
    remove_if_present(&files.env_script())?;
    let _ = std::fs::remove_dir(&area);
    if let Some(parent) = area.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    files.clear()?;
    Ok(report)
}

/// The undo of a home that is gone: nothing to remove; what was moved aside stays where it is.
fn home_gone(journal: &Journal) -> UndoReport {
    let mut report = UndoReport::default();
    for step in journal.steps.iter().rev() {
        if let Step::MoveAside { path, backup } = step {
            if std::fs::symlink_metadata(backup).is_ok() {
                report
                    .unreachable
                    .push((path.clone(), Some(backup.clone())));
            }
        }
    }
    report
}

/// Undoes every step that was made, last first. Each undo checks what is there, so running it
/// again, or on a transaction that stopped half-way, is safe. A place that cannot be reached
/// any more is reported and left: nothing is done through a directory that was replaced.
fn undo_steps(journal: &Journal, places: &Places) -> Result<UndoReport> {
    let moved: HashMap<&Path, &Path> = journal
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::MoveAside { path, backup } => Some((path.as_path(), backup.as_path())),
            _ => None,
        })
        .collect();
    let exists = |path: &Path| places.at(path).is_ok_and(|p| p.exists());
    let mut report = UndoReport::default();
    let pause = pause_point();
    for (done, step) in journal.steps.iter().rev().enumerate() {
        let path = match step {
            Step::Link { path, .. } | Step::CreateDir { path } | Step::MoveAside { path, .. } => {
                path
            }
        };
        let backup = match step {
            Step::MoveAside { backup, .. } => Some(backup),
            _ => None,
        };
        if backup.is_some_and(|b| !exists(b)) {
            // Never moved, or back already.
            pause_if(pause, done + 1);
            continue;
        }
        let place = match places.for_step(path, matches!(step, Step::Link { .. })) {
            Ok(place) => place,
            // Its directory is gone, and what was made in it with it.
            Err(e) if is_missing(&e) && backup.is_none() => {
                pause_if(pause, done + 1);
                continue;
            }
            Err(e) if is_missing(&e) || is_blocked(&e) => {
                report.unreachable.push((path.clone(), backup.cloned()));
                pause_if(pause, done + 1);
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot reach {}", path.display()));
            }
        };
        match step {
            Step::Link { path, target } => {
                // If what was in the way is not in the backup, it was never moved (or is back
                // already): what is at `path` is the user's.
                if moved.get(path.as_path()).is_some_and(|b| !exists(b)) {
                    continue;
                }
                match place.read_link() {
                    Ok(t) if &t == target => match place.unlink() {
                        Ok(()) => {}
                        Err(e) if is_missing(&e) => {}
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("cannot remove {}", path.display()))
                        }
                    },
                    Ok(_) => report.changed_links.push(path.clone()),
                    Err(e) if is_missing(&e) => {}
                    Err(_) => report.changed_links.push(path.clone()),
                }
            }
            Step::CreateDir { path } => match place.rmdir() {
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
                if place.exists() {
                    report.kept_backups.push((path.clone(), backup.clone()));
                    continue;
                }
                let from = places
                    .at(backup)
                    .with_context(|| format!("cannot reach {}", backup.display()))?;
                from.rename_to(&place).with_context(|| {
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

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
