//! Where a host tree (the profile, the private home) can be attached in the target: at its
//! path when the target has that directory, else on a directory made in a mirror of the
//! deepest directory on the way that the target has. Reads the target through `/proc/PID/root`
//! without following its links; what to mount is `graft`'s decision.

use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use super::facts::{read_listing, RootListing};
use super::target::Target;
use crate::diag::Diagnostic;
use crate::profile::Profile;
use crate::store::HOST_NIX;

/// A host directory shown at a path of the session, attached after the toolbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeGraft {
    /// The directory on the host.
    pub source: PathBuf,
    /// Where the session sees it.
    pub at: PathBuf,
    pub read_only: bool,
}

/// How the mount point of a tree is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spot {
    /// The target has the directory (or a tree attached before it provides it).
    Ready,
    /// The target has `below` but not `below/rest`: a tmpfs mirroring `below` (whose entries
    /// are `listing`; `None` for `/`, which the new root lists) gets the missing directories.
    Missing {
        below: PathBuf,
        rest: PathBuf,
        listing: Option<RootListing>,
    },
}

/// Finds the spot for `at` (absolute, normalised) in the target whose root is `root`. A
/// component that is a file or a link in the target counts as missing: the mirror replaces it
/// by a directory, so the path cannot lead anywhere else.
pub fn find_spot(root: &Path, at: &Path) -> Result<Spot> {
    let mut below = PathBuf::from("/");
    let mut rest = PathBuf::new();
    for c in at.components() {
        let Component::Normal(name) = c else { continue };
        if rest.as_os_str().is_empty() {
            let seen = root
                .join(below.strip_prefix("/").unwrap_or(&below))
                .join(name);
            if std::fs::symlink_metadata(&seen).is_ok_and(|m| m.is_dir()) {
                below.push(name);
                continue;
            }
        }
        rest.push(name);
    }
    if rest.as_os_str().is_empty() {
        return Ok(Spot::Ready);
    }
    let listing = match below == Path::new("/") {
        true => None,
        false => Some(read_listing(
            &root.join(below.strip_prefix("/").unwrap_or(&below)),
        )?),
    };
    Ok(Spot::Missing {
        below,
        rest,
        listing,
    })
}

/// The profile's directory as its links name it, once it is known to fit a session in
/// `target` whose home is `home_at`.
pub fn check_profile(dir: &Path, home_at: &Path, target: &Target) -> Result<PathBuf> {
    let dir = Profile::load(dir)?.root;
    let odd = home_at.components().any(|c| c == Component::ParentDir);
    if !home_at.is_absolute() || home_at == Path::new("/") || odd {
        return Err(Diagnostic::new(format!(
            "the session in {} has no home directory for the profile (HOME is {})",
            target.label,
            home_at.display()
        ))
        .hint("pass a user with a home in the target's /etc/passwd (`--user NAME`), or attach without it: `--no-profile`")
        .into());
    }
    let nix = Path::new(HOST_NIX);
    let in_nix = |p: &Path| p.starts_with(nix) && !p.starts_with(nix.join("store"));
    if home_at.starts_with(&dir) || in_nix(&dir) || home_at.starts_with(nix) {
        return Err(Diagnostic::new(format!(
            "the profile {} and the home {} cannot both be shown in {}",
            dir.display(),
            home_at.display(),
            target.label
        ))
        .detail("the profile may not hold the home, and /nix is the toolbox's")
        .hint("keep the profile in a directory of its own, e.g. ~/config, or pass `--user` with another home")
        .into());
    }
    Ok(dir)
}

/// The private home `home` shown at `home_at`, then the profile `profile` read-only at its
/// own path (in the store it is there already, with the toolbox's store). A profile below
/// `home_at` is attached on a directory `make_mount_point` makes in the home (given the
/// path relative to it).
pub fn home_and_profile(
    home: &Path,
    home_at: &Path,
    profile: Option<&Path>,
    target_root: &Path,
    make_mount_point: impl FnOnce(&Path) -> Result<()>,
) -> Result<Vec<(TreeGraft, Spot)>> {
    let mut trees = vec![(
        TreeGraft {
            source: home.to_path_buf(),
            at: home_at.to_path_buf(),
            read_only: false,
        },
        find_spot(target_root, home_at)?,
    )];
    let Some(dir) = profile else {
        return Ok(trees);
    };
    if dir.starts_with(Path::new(HOST_NIX).join("store")) {
        return Ok(trees);
    }
    let spot = match dir.strip_prefix(home_at) {
        Ok(rel) => {
            make_mount_point(rel)?;
            Spot::Ready
        }
        Err(_) => find_spot(target_root, dir)?,
    };
    trees.push((
        TreeGraft {
            source: dir.to_path_buf(),
            at: dir.to_path_buf(),
            read_only: true,
        },
        spot,
    ));
    Ok(trees)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::facts::{EntryKind, RootEntry};

    #[test]
    fn an_existing_directory_is_ready() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("root/config")).unwrap();
        assert_eq!(
            find_spot(root.path(), Path::new("/root/config")).unwrap(),
            Spot::Ready
        );
    }

    #[test]
    fn a_missing_path_is_made_below_the_deepest_directory_there() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("home/bob")).unwrap();
        std::fs::write(root.path().join("home/.keep"), "").unwrap();
        let spot = find_spot(root.path(), Path::new("/home/ana/config")).unwrap();
        let Spot::Missing {
            below,
            rest,
            listing,
        } = spot
        else {
            panic!("{spot:?}")
        };
        assert_eq!(
            (below.as_path(), rest.as_path()),
            (Path::new("/home"), Path::new("ana/config"))
        );
        let names: Vec<RootEntry> = listing.unwrap().entries;
        assert_eq!(
            names,
            vec![
                RootEntry {
                    name: ".keep".into(),
                    kind: EntryKind::Other
                },
                RootEntry {
                    name: "bob".into(),
                    kind: EntryKind::Dir
                },
            ]
        );
    }

    #[test]
    fn links_and_files_on_the_way_count_as_missing() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/elsewhere", root.path().join("home")).unwrap();
        let spot = find_spot(root.path(), Path::new("/home/ana")).unwrap();
        assert_eq!(
            spot,
            Spot::Missing {
                below: "/".into(),
                rest: "home/ana".into(),
                listing: None
            }
        );
    }
}
