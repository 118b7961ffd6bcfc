//! The VM assets (kernel, initrd, guest root, golden store image) as installed in agentenv's
//! data directory by `agentenv vm setup DIR`, and the check that they are of this agentenv's
//! format and the guest's architecture. Nothing is downloaded: scripts/vm-assets.sh (Debian's
//! packages) or `nix build .#vm-assets` (nixpkgs) builds a set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::spec::Arch;
use crate::diag::Diagnostic;
use crate::paths::StateDirs;

/// The layout of an asset set; scripts/vm-assets.sh writes the same number.
pub const ASSETS_FORMAT: u32 = 1;

/// The files of a set.
pub const FILES: [&str; 5] = ["kernel", "initrd", "root.img", "store.img", "VERSION"];

/// A checked set of assets.
#[derive(Debug, Clone)]
pub struct Assets {
    pub dir: PathBuf,
    pub arch: Arch,
    pub kernel_version: String,
}

impl Assets {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("kernel")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd")
    }
    pub fn root_image(&self) -> PathBuf {
        self.dir.join("root.img")
    }
    pub fn store_image(&self) -> PathBuf {
        self.dir.join("store.img")
    }

    /// Where `vm setup` installs the set for `arch`.
    pub fn install_dir(state: &StateDirs, arch: Arch) -> PathBuf {
        state.data.join("vm").join(arch.as_str())
    }

    /// The installed set for `arch`, checked.
    pub fn installed(state: &StateDirs, arch: Arch) -> Result<Self> {
        let dir = Self::install_dir(state, arch);
        Self::check(&dir, Some(arch)).map_err(|e| {
            Diagnostic::new(format!("no usable VM assets for {arch} guests: {e:#}"))
                .hint(format!(
                    "build a set and install it: scripts/vm-assets.sh --arch {arch} DIR && agentenv vm setup DIR"
                ))
                .into()
        })
    }

    /// Reads and checks the set in `dir` (of architecture `want`, if given).
    pub fn check(dir: &Path, want: Option<Arch>) -> Result<Self> {
        for f in FILES {
            if !dir.join(f).is_file() {
                anyhow::bail!("{} is missing", dir.join(f).display());
            }
        }
        let version = std::fs::read_to_string(dir.join("VERSION"))
            .with_context(|| format!("cannot read {}/VERSION", dir.display()))?;
        let field = |name: &str| {
            version
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let format: u32 = field("format").and_then(|f| f.parse().ok()).unwrap_or(0);
        if format != ASSETS_FORMAT {
            anyhow::bail!(
                "{} holds assets of format {format}; this agentenv uses format {ASSETS_FORMAT}",
                dir.display()
            );
        }
        let arch: Arch = field("arch")
            .unwrap_or_default()
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{}/VERSION: {e}", dir.display()))?;
        if let Some(want) = want {
            if arch != want {
                anyhow::bail!("{} holds {arch} assets, not {want}", dir.display());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            arch,
            kernel_version: field("kernel").unwrap_or_default(),
        })
    }

    /// Installs the set in `src` (checked first) for its architecture, replacing what was
    /// there. Files are cloned where the filesystem can, else copied.
    pub fn install(state: &StateDirs, src: &Path) -> Result<Self> {
        let found = Self::check(src, None)?;
        let dest = Self::install_dir(state, found.arch);
        let tmp = dest.with_extension("new");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        for f in FILES {
            super::clone::clone_image(&src.join(f), &tmp.join(f))?;
        }
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("cannot move the assets into {}", dest.display()))?;
        Self::check(&dest, Some(found.arch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dir: &Path, version: &str) {
        for f in FILES {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        std::fs::write(dir.join("VERSION"), version).unwrap();
    }

    #[test]
    fn a_set_of_another_format_or_arch_is_refused() {
        let d = tempfile::tempdir().unwrap();
        set(d.path(), "format=1\narch=aarch64\nkernel=6.1\n");
        let a = Assets::check(d.path(), Some(Arch::Aarch64)).unwrap();
        assert_eq!(a.kernel_version, "6.1");
        let e = Assets::check(d.path(), Some(Arch::X86_64)).unwrap_err();
        assert!(format!("{e}").contains("not x86_64"), "{e}");
        set(d.path(), "format=0\narch=aarch64\n");
        let e = Assets::check(d.path(), None).unwrap_err();
        assert!(format!("{e}").contains("format 0"), "{e}");
    }

    #[test]
    fn setup_installs_a_set_where_it_is_found_again() {
        let src = tempfile::tempdir().unwrap();
        set(src.path(), "format=1\narch=aarch64\n");
        let home = tempfile::tempdir().unwrap();
        let state = StateDirs::under(home.path());
        assert!(Assets::installed(&state, Arch::Aarch64).is_err());
        Assets::install(&state, src.path()).unwrap();
        let a = Assets::installed(&state, Arch::Aarch64).unwrap();
        assert_eq!(a.arch, Arch::Aarch64);
        // Installing again replaces the set.
        Assets::install(&state, src.path()).unwrap();
    }
}
