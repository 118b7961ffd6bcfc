//! Changing a home as its owner. When root changes a home that belongs to someone else (a
//! container user's private home, `sudo` with another user's `$HOME`), the changes are made
//! with the owner's file-system identity (fsuid, fsgid and groups), not root's: root's rights
//! on the rest of the host are not lent to whatever the owner planted in the home. Only file
//! access changes, and only until the guard is dropped.

use anyhow::Result;

use super::beneath::HomeDir;

/// While it lives, this thread's file accesses are the home owner's.
#[must_use]
pub struct AsOwner {
    #[cfg(target_os = "linux")]
    saved: Option<linux::Saved>,
}

/// Takes on the identity of `home`'s owner if agentenv runs as root and the home is not
/// root's; else changes nothing.
pub fn act_as_owner(home: &HomeDir) -> Result<AsOwner> {
    #[cfg(target_os = "linux")]
    {
        let (uid, gid) = home.owner()?;
        if nix::unistd::geteuid().is_root() && uid != 0 {
            tracing::debug!(uid, gid, home = %home.path().display(), "changing the home as its owner");
            return Ok(AsOwner {
                saved: Some(linux::become_owner(uid, gid)?),
            });
        }
        Ok(AsOwner { saved: None })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = home;
        Ok(AsOwner {})
    }
}

#[cfg(target_os = "linux")]
impl Drop for AsOwner {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            linux::restore(saved);
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use anyhow::{bail, Context, Result};
    use nix::unistd::{getegid, geteuid, getgroups, setfsgid, setfsuid, setgroups, Gid, Uid};

    pub struct Saved {
        groups: Vec<Gid>,
    }

    pub fn become_owner(uid: u32, gid: u32) -> Result<Saved> {
        let groups = getgroups().context("cannot read agentenv's groups")?;
        setgroups(&[Gid::from_raw(gid)]).context("cannot take on the home owner's group")?;
        let saved = Saved { groups };
        setfsgid(Gid::from_raw(gid));
        setfsuid(Uid::from_raw(uid));
        // setfsuid reports no error; asking again returns the id in force.
        let (fsuid, fsgid) = (setfsuid(Uid::from_raw(uid)), setfsgid(Gid::from_raw(gid)));
        if fsuid.as_raw() != uid || fsgid.as_raw() != gid {
            restore(saved);
            bail!("cannot take on the file-system identity {uid}:{gid} of the home's owner");
        }
        Ok(saved)
    }

    pub fn restore(saved: Saved) {
        setfsuid(geteuid());
        setfsgid(getegid());
        if let Err(e) = setgroups(&saved.groups) {
            tracing::warn!("cannot restore agentenv's groups: {e}");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::profile::beneath::HomeLinks;

    #[test]
    fn roots_changes_to_someone_elses_home_have_only_the_owners_rights() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (changing a home as its owner is what root does)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let roots = tmp.path().join("roots");
        std::fs::create_dir(&home).unwrap();
        std::fs::create_dir(&roots).unwrap();
        std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
        let dir = HomeDir::open(&home, HomeLinks::Refused).unwrap();
        {
            let _owner = act_as_owner(&dir).unwrap();
            let err = std::fs::write(roots.join("x"), "").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EACCES));
            dir.place(&home.join("made")).unwrap().mkdir().unwrap();
        }
        let made = std::fs::symlink_metadata(home.join("made")).unwrap();
        assert_eq!(
            (
                std::os::unix::fs::MetadataExt::uid(&made),
                std::os::unix::fs::MetadataExt::gid(&made)
            ),
            (1000, 1000)
        );
        // Root's own identity is back.
        std::fs::write(roots.join("x"), "").unwrap();
    }
}
