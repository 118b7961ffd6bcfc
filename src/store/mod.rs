//! Layer 1: each environment's copy-on-write view of the host's Nix store. On Linux it is an
//! overlay mount: the host's `/nix` below, the environment's own layer above, so anything
//! built or written inside stays in the environment. Creating it is one mount, whatever the
//! size of the store. One sandbox at a time writes an environment's layer (`LayerClaim`).

pub mod claim;

use std::path::{Path, PathBuf};

use crate::guest::rootfs::RootOp;

pub use claim::LayerClaim;

/// Where the host keeps the store that every view starts from.
pub const HOST_NIX: &str = "/nix";

/// A store view: which store is below, and where this environment's writes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreView {
    /// Read-only layers, the first on top.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The layer on a tmpfs of the sandbox's own (made on `upper`'s directory when it is
    /// mounted) rather than on the host's disk: it ends with the sandbox.
    pub layer_in_memory: bool,
}

impl StoreView {
    /// The view of the host store with its layer kept in `layer_dir`.
    pub fn over_host(layer_dir: &Path) -> Self {
        Self::new(Path::new(HOST_NIX), layer_dir)
    }

    /// A view of `lower` with its layer kept in `layer_dir`.
    pub fn new(lower: &Path, layer_dir: &Path) -> Self {
        Self {
            lowers: vec![lower.to_path_buf()],
            upper: layer_dir.join("upper"),
            work: layer_dir.join("work"),
            layer_in_memory: false,
        }
    }

    /// This view with its layer in memory: for a view that lives as long as one sandbox, on a
    /// host whose filesystem may be one overlayfs cannot write (FUSE, NFS).
    pub fn with_layer_in_memory(mut self) -> Self {
        self.layer_in_memory = true;
        self
    }

    /// This view with its layer made read-only and a new layer in `layer_dir` above it.
    pub fn with_layer_above(&self, layer_dir: &Path) -> Self {
        let mut lowers = vec![self.upper.clone()];
        lowers.extend(self.lowers.iter().cloned());
        Self {
            lowers,
            upper: layer_dir.join("upper"),
            work: layer_dir.join("work"),
            layer_in_memory: false,
        }
    }

    /// The mount that shows this view at `/nix`. `userxattr` is needed inside a user namespace,
    /// where overlayfs cannot use trusted xattrs.
    pub fn root_op(&self, userxattr: bool) -> RootOp {
        RootOp::Overlay {
            path: PathBuf::from(HOST_NIX),
            lowers: self.lowers.clone(),
            upper: self.upper.clone(),
            work: self.work.clone(),
            userxattr,
            layer_in_memory: self.layer_in_memory,
        }
    }
}
