//! Where a host tree (the profile, the private home) can be attached in the target: at its
//! path when the target has that directory, else on a directory made in a mirror of the
//! deepest directory on the way that the target has. Reads the target through `/proc/PID/root`
//! without following its links; what to mount is `graft`'s decision.

use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use super::facts::{read_listing, RootListing};

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
