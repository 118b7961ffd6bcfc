//! The overlay mount of a root (`RootOp::Overlay`): its options, the paths they cannot carry,
//! and a layer kept in memory. Which layers a view has is the store's; this only mounts them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use nix::mount::MsFlags;

use super::syscall::Syscall;

/// The layers of one overlay mount.
pub struct OverlayLayers<'a> {
    /// Read-only, the first on top.
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    /// Needed inside a user namespace, where overlayfs cannot use trusted xattrs.
    pub userxattr: bool,
    /// `upper` and `work` on a fresh tmpfs mounted on their common parent, in the calling
    /// mount namespace only: for a layer that ends with the sandbox, on a host whose own
    /// filesystem overlayfs cannot write (FUSE, NFS).
    pub in_memory: bool,
}

pub(crate) fn check_overlay_path(p: &Path) -> Result<()> {
    let s = p.as_os_str().as_encoded_bytes();
    if s.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
        bail!(
            "{} contains ',', ':' or '\\', which overlay mount options cannot carry; move agentenv's state with AGENTENV_HOME",
            p.display()
        );
    }
    Ok(())
}

/// Mounts the overlay of `layers` at `target`.
pub fn mount_overlay(layers: &OverlayLayers, target: &Path, sys: &dyn Syscall) -> Result<()> {
    let (upper, work) = (layers.upper, layers.work);
    for p in layers
        .lowers
        .iter()
        .map(PathBuf::as_path)
        .chain([upper, work])
    {
        check_overlay_path(p)?;
    }
    if layers.in_memory {
        let Some(dir) = upper.parent().filter(|d| Some(*d) == work.parent()) else {
            bail!(
                "{} and {} are not in one directory, which a layer in memory needs",
                upper.display(),
                work.display()
            );
        };
        sys.mount(
            Some(Path::new("tmpfs")),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )?;
        sys.mkdir_all(upper, 0o755)?;
        sys.mkdir_all(work, 0o700)?;
    }
    sys.mkdir_all(target, 0o755)?;
    let lowers: Vec<String> = layers
        .lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    if layers.userxattr {
        data.push_str(",userxattr");
    }
    if lowers.len() > 1 {
        // A scratch layer above a layer another sandbox owns: with the index on (a
        // kernel default on some systems) the mount would be refused as busy.
        data.push_str(",index=off");
    }
    sys.mount(
        Some(Path::new("overlay")),
        target,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::syscall::RecordingSyscall;

    #[test]
    fn overlay_refuses_paths_it_cannot_express() {
        assert!(check_overlay_path(Path::new("/a,b")).is_err());
        assert!(check_overlay_path(Path::new("/home/a/.local/share")).is_ok());
    }

    #[test]
    fn a_layer_in_memory_is_a_tmpfs_on_its_directory_before_the_overlay() {
        let lowers = [PathBuf::from("/c/nix")];
        let layers = OverlayLayers {
            lowers: &lowers,
            upper: Path::new("/s/store/upper"),
            work: Path::new("/s/store/work"),
            userxattr: true,
            in_memory: true,
        };
        let sys = RecordingSyscall::default();
        mount_overlay(&layers, Path::new("/r/nix"), &sys).unwrap();
        let calls = sys.calls.into_inner();
        let at = |prefix: &str| calls.iter().position(|c| c.starts_with(prefix));
        let tmpfs = at("mount tmpfs /s/store tmpfs").expect("a tmpfs on the layer");
        let overlay = at("mount overlay /r/nix overlay").expect("the overlay");
        assert!(tmpfs < overlay, "{calls:?}");
        assert!(calls[overlay].contains("upperdir=/s/store/upper,workdir=/s/store/work"));

        let apart = OverlayLayers {
            work: Path::new("/elsewhere/work"),
            ..layers
        };
        assert!(mount_overlay(&apart, Path::new("/r/nix"), &RecordingSyscall::default()).is_err());
    }
}
