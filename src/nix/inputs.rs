//! The files that define a flake's dev environment (flake.nix, flake.lock, every git-tracked
//! `.nix` file and lock file, the files those name by relative path, nix's own config files)
//! and their stamps, so that a warm start can tell with
//! `stat` alone that nothing changed. Deciding what to do with a change is the cache's job.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::referenced;

/// The paths whose content defines a dev environment, and the directories in which a new one
/// could appear.
#[derive(Debug, Clone, Default)]
pub struct InputSet {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
}

/// What `stat` says of a file: if all of it is unchanged, the content is taken as unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatStamp {
    pub len: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
}

/// A file's stat and content hash; both `None` when it does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: PathBuf,
    pub stat: Option<StatStamp>,
    pub hash: Option<String>,
}

/// A directory's mtime and a hash of the names in it that could define the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStamp {
    pub path: PathBuf,
    pub mtime: (i64, i64),
    pub names: String,
}

/// Lists the inputs of the flake at `root`: its `.nix` files and lock files, tracked ones when
/// it is in a git repository (flakes see only those), otherwise every `.nix` file below it;
/// and the files those name by relative path (see `referenced`).
pub fn discover(root: &Path) -> Result<InputSet> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    files.insert(root.join("flake.nix"));
    files.insert(root.join("flake.lock"));
    let repo = git_root(root);
    match &repo {
        Some(repo) => {
            let specs = ["*.nix", "flake.lock", "*/flake.lock"].map(String::from);
            files.extend(git_tracked_files(repo, &specs)?);
        }
        None => walk_nix_files(root, &mut files),
    }
    let nix_files: Vec<PathBuf> = files.iter().filter(|f| is_nix_input(f)).cloned().collect();
    let named = referenced::named_paths(&nix_files, root);
    let candidates = match &repo {
        // Only below the named paths: a monorepo's whole file list is not read.
        Some(repo) => {
            let specs: Vec<String> = named
                .iter()
                .filter_map(|p| p.strip_prefix(repo).ok())
                .map(|rel| format!(":(literal){}", rel.display()))
                .collect();
            match specs.is_empty() {
                true => BTreeSet::new(),
                false => git_tracked_files(repo, &specs)?.into_iter().collect(),
            }
        }
        None => referenced::existing_below(&named),
    };
    // Regular files only: a submodule, a FIFO or a socket is no input to hash.
    files.extend(
        referenced::inputs_named(&named, &candidates)
            .into_iter()
            .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file())),
    );
    let scope = repo.as_deref().unwrap_or(root);
    for conf in nix_config_files() {
        files.insert(conf);
    }
    let mut dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter(|f| f.starts_with(scope))
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    dirs.insert(root.to_path_buf());
    Ok(InputSet {
        files: files.into_iter().collect(),
        dirs: dirs.into_iter().collect(),
    })
}

/// nix's configuration files, which can change what an evaluation gives (system, settings).
fn nix_config_files() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/nix/nix.conf")];
    if let Some(dir) = std::env::var_os("NIX_CONF_DIR") {
        v.push(PathBuf::from(dir).join("nix.conf"));
    }
    let user_conf = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = user_conf {
        v.push(c.join("nix/nix.conf"));
    }
    v
}

fn git_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// A `.nix` file of the flake: read for the paths it names.
fn is_nix_input(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "nix")
}

/// The files git tracks in `repo` that match `pathspecs`, as absolute paths.
fn git_tracked_files(repo: &Path, pathspecs: &[String]) -> Result<Vec<PathBuf>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-files", "-z", "--"])
        .args(pathspecs)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| {
            format!(
                "cannot run git to list the files of {} (nix needs git for flakes in a git repository)",
                repo.display()
            )
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "git ls-files failed in {}: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| repo.join(std::ffi::OsStr::from_bytes(s)))
        .collect())
}

fn walk_nix_files(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_nix_files(&path, out),
            Ok(_) if name.as_encoded_bytes().ends_with(b".nix") => {
                out.insert(path);
            }
            _ => {}
        }
    }
}

fn stat_of(path: &Path) -> Option<StatStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(StatStamp {
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
    })
}

/// Stamps every file, hashing its content.
pub fn stamp_files(files: &[PathBuf]) -> Result<Vec<FileStamp>> {
    files
        .iter()
        .map(|path| {
            let stat = stat_of(path);
            // Streamed: a named binary can be megabytes, and a persistent environment's PID 1
            // is forked from this process with its heap.
            let hash = match stat {
                None => None,
                Some(_) => Some(
                    std::fs::File::open(path)
                        .and_then(|f| {
                            let mut h = blake3::Hasher::new();
                            h.update_reader(f)?;
                            Ok(h.finalize().to_hex().to_string())
                        })
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
            };
            Ok(FileStamp {
                path: path.clone(),
                stat,
                hash,
            })
        })
        .collect()
}

/// Stamps every directory with its mtime and the names that matter in it.
pub fn stamp_dirs(dirs: &[PathBuf]) -> Vec<DirStamp> {
    dirs.iter()
        .map(|path| DirStamp {
            path: path.clone(),
            mtime: std::fs::metadata(path)
                .map(|m| (m.mtime(), m.mtime_nsec()))
                .unwrap_or((0, 0)),
            names: relevant_names(path),
        })
        .collect()
}

/// A hash of the sub-directories and `.nix`/`flake.lock` names in `dir`: a new one there may be
/// a new input; other files coming and going (editor swap files, build output) are not.
fn relevant_names(dir: &Path) -> String {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let b = n.as_encoded_bytes();
                    b.ends_with(b".nix")
                        || b == b"flake.lock"
                        || (!b.starts_with(b".") && e.file_type().is_ok_and(|t| t.is_dir()))
                })
                .map(|e| e.file_name().into_encoded_bytes())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    crate::util::hash_parts(names.iter().map(Vec::as_slice), 16)
}

/// True when every file has the stat it was stamped with (or is still missing).
pub fn files_unchanged(stamps: &[FileStamp]) -> bool {
    stamps.iter().all(|s| stat_of(&s.path) == s.stat)
}

/// True when no directory gained or lost a name that matters.
pub fn dirs_unchanged(stamps: &[DirStamp]) -> bool {
    stamps.iter().all(|s| {
        let mtime = std::fs::metadata(&s.path)
            .map(|m| (m.mtime(), m.mtime_nsec()))
            .unwrap_or((0, 0));
        mtime == s.mtime || relevant_names(&s.path) == s.names
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_git_flake_inputs_are_every_nix_file_but_hidden_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("flake.nix"), "{}").unwrap();
        std::fs::create_dir_all(root.join("nix/sub")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join("nix/sub/a.nix"), "1").unwrap();
        std::fs::write(root.join(".hidden/b.nix"), "1").unwrap();
        std::fs::write(root.join("nix/readme.md"), "1").unwrap();
        let inputs = discover(root).unwrap();
        assert!(inputs.files.contains(&root.join("nix/sub/a.nix")));
        assert!(inputs.files.contains(&root.join("flake.lock")));
        assert!(!inputs.files.contains(&root.join(".hidden/b.nix")));
        assert!(!inputs.files.contains(&root.join("nix/readme.md")));
        assert!(inputs.dirs.contains(&root.join("nix/sub")));
    }

    #[test]
    fn named_paths_bring_regular_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("flake.nix"), "{ t = ./tools; s = ./build.sh; }").unwrap();
        std::fs::write(root.join("build.sh"), "echo").unwrap();
        std::fs::create_dir_all(root.join("tools/sub")).unwrap();
        std::fs::write(root.join("tools/sub/tool"), "x").unwrap();
        nix::unistd::mkfifo(&root.join("tools/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink(root.join("tools/sub"), root.join("tools/link")).unwrap();
        let inputs = discover(root).unwrap();
        assert!(inputs.files.contains(&root.join("build.sh")));
        assert!(inputs.files.contains(&root.join("tools/sub/tool")));
        assert!(
            !inputs.files.contains(&root.join("tools/pipe")),
            "a FIFO would block"
        );
        assert!(
            !inputs.files.contains(&root.join("tools/link")),
            "a directory"
        );
        // Stamping them reads each file, and must not block or fail.
        stamp_files(&inputs.files).unwrap();
    }

    #[test]
    fn stamps_notice_an_edit_and_a_new_nix_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("flake.nix");
        std::fs::write(&f, "{}").unwrap();
        let files = stamp_files(std::slice::from_ref(&f)).unwrap();
        let dirs = stamp_dirs(&[tmp.path().to_path_buf()]);
        assert!(files_unchanged(&files) && dirs_unchanged(&dirs));
        std::fs::write(tmp.path().join("notes.txt"), "x").unwrap();
        assert!(dirs_unchanged(&dirs), "an unrelated file is not an input");
        std::fs::write(tmp.path().join("extra.nix"), "x").unwrap();
        assert!(!dirs_unchanged(&dirs));
        std::fs::write(&f, "{ }").unwrap();
        assert!(!files_unchanged(&files));
    }
}
