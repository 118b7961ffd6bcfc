//! The cache of evaluated dev environments, in two levels. An index record per (flake, shell,
//! nix, system, NIX_CONFIG) holds the stamps of the flake's inputs and points to an entry; an
//! entry is content-addressed (one per state of those inputs) and is owned by `devenv`.
//! A warm lookup is a handful of `stat` calls; nothing here runs nix.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use super::inputs::{dirs_unchanged, files_unchanged, DirStamp, FileStamp};
use crate::util::{hash_parts, write_atomic};

/// Bumped whenever the layout of index records or entries changes, or what counts as an
/// input does (2: the files `.nix` files name by relative path).
const FORMAT: u32 = 2;

/// The on-disk cache rooted at `<cache>/devenv`.
#[derive(Debug, Clone)]
pub struct DevEnvCache {
    root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexRecord {
    format: u32,
    content_key: String,
    files: Vec<FileStamp>,
    dirs: Vec<DirStamp>,
}

/// An index record as listed for `agentenv ls` and `gc`.
#[derive(Debug, Clone)]
pub struct IndexListing {
    pub path: PathBuf,
    /// `None` for a record that cannot be read or has another format.
    pub content_key: Option<String>,
    pub inputs: Vec<PathBuf>,
}

/// Held while an entry is being evaluated, so that two cold starts do not run nix twice.
pub struct EntryLock {
    _lock: Flock<File>,
}

impl DevEnvCache {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The key of an index record: everything but the inputs' content that changes what nix
    /// would answer.
    pub fn index_key(parts: &[&str]) -> String {
        let mut all = vec![b"agentenv-devenv".as_slice()];
        let format = FORMAT.to_string();
        all.push(format.as_bytes());
        all.extend(parts.iter().map(|p| p.as_bytes()));
        hash_parts(all, 16)
    }

    /// The key of an entry: the index key and the content of every input.
    pub fn content_key(index_key: &str, files: &[FileStamp]) -> String {
        let mut parts: Vec<Vec<u8>> = vec![index_key.as_bytes().to_vec()];
        for f in files {
            parts.push(f.path.as_os_str().as_encoded_bytes().to_vec());
            parts.push(f.hash.as_deref().unwrap_or("-").as_bytes().to_vec());
        }
        hash_parts(parts.iter().map(Vec::as_slice), 16)
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.root.join("index").join(format!("{key}.json"))
    }

    /// The directory of the entry for `content_key`.
    pub fn entry_dir(&self, content_key: &str) -> PathBuf {
        self.root.join("entries").join(content_key)
    }

    /// The content key recorded under `key`, if no input changed since (checked by stat).
    pub fn lookup_unchanged(&self, key: &str) -> Option<String> {
        let data = std::fs::read(self.index_path(key)).ok()?;
        let rec: IndexRecord = serde_json::from_slice(&data).ok()?;
        if rec.format != FORMAT {
            return None;
        }
        if !files_unchanged(&rec.files) {
            tracing::debug!("an input file changed since the last evaluation");
            return None;
        }
        if !dirs_unchanged(&rec.dirs) {
            tracing::debug!("an input directory changed since the last evaluation");
            return None;
        }
        Some(rec.content_key)
    }

    /// Records that `key` currently resolves to `content_key` with these stamps.
    pub fn record(
        &self,
        key: &str,
        content_key: &str,
        files: &[FileStamp],
        dirs: &[DirStamp],
    ) -> Result<()> {
        let rec = IndexRecord {
            format: FORMAT,
            content_key: content_key.to_string(),
            files: files.to_vec(),
            dirs: dirs.to_vec(),
        };
        write_atomic(&self.index_path(key), &serde_json::to_vec(&rec)?)
    }

    /// Every index record: its file, the entry it points to, and the input files it stamps.
    /// Records of another format are listed too (they point nowhere a lookup would follow).
    pub fn index_records(&self) -> Vec<IndexListing> {
        let Ok(rd) = std::fs::read_dir(self.root.join("index")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| {
                let rec = std::fs::read(e.path())
                    .ok()
                    .and_then(|d| serde_json::from_slice::<IndexRecord>(&d).ok())
                    .filter(|r| r.format == FORMAT);
                IndexListing {
                    path: e.path(),
                    content_key: rec.as_ref().map(|r| r.content_key.clone()),
                    inputs: rec
                        .map(|r| r.files.into_iter().map(|f| f.path).collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The content keys of every entry on disk.
    pub fn entry_keys(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join("entries")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// The lock file of the entry for `content_key` (see `lock`).
    pub fn lock_path(&self, content_key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{content_key}.lock"))
    }

    /// Locks the entry for `content_key` against concurrent evaluation.
    pub fn lock(&self, content_key: &str) -> Result<EntryLock> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = self.lock_path(content_key);
        let lock = crate::util::lock_file(&path, "evaluating the same dev environment")?;
        Ok(EntryLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::inputs::{stamp_dirs, stamp_files};

    #[test]
    fn index_answers_until_an_input_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let cache = DevEnvCache::new(state.path().join("c"));
        let f = tmp.path().join("flake.nix");
        std::fs::write(&f, "{}").unwrap();
        let files = stamp_files(std::slice::from_ref(&f)).unwrap();
        let dirs = stamp_dirs(&[tmp.path().to_path_buf()]);
        let key = DevEnvCache::index_key(&["/p", "default"]);
        let ck = DevEnvCache::content_key(&key, &files);
        cache.record(&key, &ck, &files, &dirs).unwrap();
        assert_eq!(cache.lookup_unchanged(&key), Some(ck.clone()));
        std::fs::write(&f, "{ x = 1; }").unwrap();
        assert_eq!(cache.lookup_unchanged(&key), None);
        let files2 = stamp_files(std::slice::from_ref(&f)).unwrap();
        assert_ne!(DevEnvCache::content_key(&key, &files2), ck);
    }
}
