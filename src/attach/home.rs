//! The session's private home on the host: a directory in agentenv's data per running target,
//! profile and session user, the profile activated into it, owned by the session's user, and
//! removed once its target is gone. Showing it at the target's `$HOME` is `graft`'s job.
//!
//! The target can write the home while agentenv changes it: every change goes through the
//! profile engine's descriptors (no symlink in the home is followed) as the home's owner, the
//! session's user, never as root.
//!
//! It lives as long as the target's process (its PID and start time are in its name): every
//! attach to the same running target reuses it, so a warm attach changes nothing and what the
//! session wrote there (history, caches, an agent's memory) is there next time; a target that
//! is gone (a restarted container is a new process) leaves a home the next attach removes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::target::{process_state, Target};
use crate::paths::StateDirs;
use crate::profile::beneath::{HomeDir, HomeLinks};
use crate::profile::owner::act_as_owner;
use crate::profile::ProfileEnv;
use crate::util::hash_parts;

/// One private home and the profile engine's state for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachHome {
    pub root: PathBuf,
    /// The session's numeric owner in the target's terms (which an idmapped mount shows as
    /// such in a target with its own user namespace).
    pub uid: u32,
    pub gid: u32,
}

/// Where the private homes live.
pub fn homes_dir(state: &StateDirs) -> PathBuf {
    state.data.join("attach-homes")
}

impl AttachHome {
    /// The home for `profile` in `target`, for a session user `uid:gid` whose home is `at`.
    pub fn for_session(
        state: &StateDirs,
        target: &Target,
        profile: &Path,
        at: &Path,
        uid: u32,
        gid: u32,
    ) -> Self {
        let hash = hash_parts(
            [
                profile.as_os_str().as_encoded_bytes(),
                at.as_os_str().as_encoded_bytes(),
                &uid.to_le_bytes(),
                &gid.to_le_bytes(),
            ],
            4,
        );
        let name = format!("{}-{}-{hash}", target.pid, target.start_time);
        Self {
            root: homes_dir(state).join(name),
            uid,
            gid,
        }
    }

    /// The home of the agent `name` in the same session: kept apart from the user's.
    pub fn for_agent(mut self, name: &str) -> Self {
        let base = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.root = self.root.with_file_name(format!("{base}-agent-{name}"));
        self
    }

    /// The directory shown as the session's `$HOME`.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// The profile engine's state for the home.
    pub fn profile_state(&self) -> PathBuf {
        self.root.join("profile")
    }

    /// Activates `profile` into the home (a no-op when it is there already) and adds the
    /// profile's built tools. The home belongs to the session's user, so what the activation
    /// makes does too. Returns the profile's environment and its `activate.sh` when that is to
    /// run in the target.
    pub fn activate(
        &self,
        profile: &Path,
        tools_cache: &Path,
        except: &[PathBuf],
    ) -> Result<(ProfileEnv, Option<PathBuf>)> {
        let home = self.home();
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        // The home's own directory is agentenv's to give (the target sees it only as the
        // mount on its $HOME); everything below it is made as its owner.
        let meta = std::fs::symlink_metadata(&home)
            .with_context(|| format!("cannot read {}", home.display()))?;
        if meta.uid() != self.uid || meta.gid() != self.gid {
            std::os::unix::fs::lchown(&home, Some(self.uid), Some(self.gid)).with_context(
                || {
                    format!(
                        "cannot give {} to the session's user {}:{}",
                        home.display(),
                        self.uid,
                        self.gid
                    )
                },
            )?;
        }
        let done = crate::profile::activate_except(
            profile,
            &home,
            &self.profile_state(),
            crate::profile::HookRun::ByCaller,
            except,
        )?;
        for w in &done.warnings {
            tracing::warn!("{w}");
        }
        let mut env = done.env;
        if let Some(bin) = crate::profile::tools::cached_tools(&env, tools_cache, false) {
            if !env.path_append.contains(&bin) {
                env.path_append.push(bin);
            }
        }
        Ok((env, done.pending_hook))
    }

    /// Makes the directory `rel` in the home, where a tree below the home is attached.
    /// Like the activation, it follows no symlink in the home and is made as the home's owner.
    pub fn make_mount_point(&self, rel: &Path) -> Result<()> {
        let home = HomeDir::open(&self.home(), HomeLinks::Refused)?;
        let _owner = act_as_owner(&home)?;
        home.create_dirs(rel).with_context(|| {
            format!(
                "cannot create {} in the private home for the profile",
                self.home().join(rel).display()
            )
        })
    }
}

/// Gives `dir` and everything in it not already theirs to `uid:gid`, without following links.
pub(crate) fn give_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let give = |path: &Path, meta: &std::fs::Metadata| -> Result<()> {
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).with_context(|| {
                format!(
                    "cannot give {} to the session's user {uid}:{gid}",
                    path.display()
                )
            })?;
        }
        Ok(())
    };
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    give(dir, &meta)?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let listing =
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for e in listing {
            let e = e.with_context(|| format!("cannot list {}", d.display()))?;
            let meta = e
                .metadata()
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            give(&e.path(), &meta)?;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// Removes the homes of targets that no longer run. Failures are only logged: a leftover
/// home is removed by a later attach.
pub fn sweep_homes(state: &StateDirs) {
    let Ok(listing) = std::fs::read_dir(homes_dir(state)) else {
        return;
    };
    for e in listing.flatten() {
        let name = e.file_name();
        if home_in_use(&name.to_string_lossy()) == Some(false) {
            tracing::debug!(home = %e.path().display(), "removing the home of a target that is gone");
            if let Err(err) = crate::util::remove_tree(&e.path()) {
                tracing::debug!("cannot remove {}: {err}", e.path().display());
            }
        }
    }
}

/// Whether the home named `name` belongs to a target that still runs; `None` for a name that
/// is not a home's.
pub fn home_in_use(name: &str) -> Option<bool> {
    let (pid, start) = parse_home_name(name)?;
    Some(process_state(pid).is_some_and(|(s, st)| s == start && st != 'Z'))
}

/// The target's PID and start time in a home's name `PID-START-HASH`.
fn parse_home_name(name: &str) -> Option<(i32, u64)> {
    let mut parts = name.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Target {
        Target::of_pid(std::process::id() as i32).unwrap()
    }

    #[test]
    fn homes_differ_by_target_profile_and_user() {
        let state = StateDirs::under(Path::new("/s"));
        let t = me();
        let a = AttachHome::for_session(&state, &t, Path::new("/p"), Path::new("/root"), 0, 0);
        let name = a.root.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(parse_home_name(&name), Some((t.pid, t.start_time)));
        assert_eq!(a.home(), a.root.join("home"));
        let other = [
            AttachHome::for_session(&state, &t, Path::new("/q"), Path::new("/root"), 0, 0),
            AttachHome::for_session(&state, &t, Path::new("/p"), Path::new("/home/a"), 0, 0),
            AttachHome::for_session(&state, &t, Path::new("/p"), Path::new("/root"), 1000, 0),
        ];
        assert!(other.iter().all(|o| o.root != a.root));
    }

    #[test]
    fn homes_of_targets_that_are_gone_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDirs::under(tmp.path());
        let live = AttachHome::for_session(&state, &me(), Path::new("/p"), Path::new("/r"), 0, 0);
        let gone = homes_dir(&state).join(format!("{}-1-abcd", std::process::id()));
        let other = homes_dir(&state).join("not-a-home");
        for d in [live.home(), gone.join("home"), other.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        sweep_homes(&state);
        assert!(live.home().is_dir());
        assert!(!gone.exists());
        assert!(other.exists());
    }
}
