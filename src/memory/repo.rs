//! An agent's memory as a bare git repository, driven through git's plumbing. The repository
//! has no work tree: what an agent writes is read by `tree` (never by git), so nothing a
//! session plants (a `.git`, hooks, attributes, config) reaches git. Every call runs git with
//! hooks off, no system or global config, and attributes read from the empty tree.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The branch holding the live memory.
pub const MAIN: &str = "refs/heads/main";
/// The empty tree, which git knows without storing it.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// A git object id, as hex.
pub type Oid = String;

/// One file of a tree: `mode` as git writes it (`100644`, `100755`, `120000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: String,
    pub oid: Oid,
    /// Relative, `/`-separated, as bytes (git paths need not be UTF-8).
    pub path: Vec<u8>,
}

/// A change to commit on top of a base: a file's new content, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Write {
        path: Vec<u8>,
        mode: u32,
        data: Vec<u8>,
    },
    Delete {
        path: Vec<u8>,
    },
}

impl Change {
    pub fn path(&self) -> &[u8] {
        match self {
            Change::Write { path, .. } | Change::Delete { path } => path,
        }
    }
}

/// Who made a commit, and when (seconds since the epoch).
#[derive(Debug, Clone)]
pub struct Signature {
    pub name: String,
    pub email: String,
    pub when: u64,
}

/// A path of a tree set to (mode, oid), or removed with `None`.
pub type TreeEdit = (Vec<u8>, Option<(String, Oid)>);

/// What `git merge-tree` made of three commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeTree {
    /// The merged tree; conflicted paths in it hold git's conflict markers and must be
    /// replaced before the tree is used (see `merge`).
    pub tree: Oid,
    /// The index stages of every conflicted path (1: base, 2: ours, 3: theirs).
    pub conflicts: Vec<(u8, TreeEntry)>,
}

/// A bare repository at `dir`.
#[derive(Debug, Clone)]
pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Creates the repository with an empty first commit (or one holding `seed`) on `main`.
    pub fn init(dir: &Path, seed: &[Change], message: &str, who: &Signature) -> Result<Self> {
        let out = plain_git()
            .args(["init", "--bare", "--quiet", "--initial-branch=main"])
            .arg(dir)
            .output()
            .context("cannot run git")?;
        check(&out, "git init")?;
        let repo = Self::at(dir);
        // Also in the repository's own config, for plain `git` run on it by hand.
        for (k, v) in [("core.hooksPath", "/dev/null"), ("gc.auto", "0")] {
            repo.run(&["config", k, v])?;
        }
        let scratch = "refs/agentenv/init";
        let commit = repo.commit_changes(None, seed, message, who, scratch)?;
        repo.update_ref(&commit, None, &[scratch])?;
        Ok(repo)
    }

    /// git on this repository, with the safety settings.
    pub fn git(&self) -> Command {
        let mut c = plain_git();
        c.arg("--git-dir").arg(&self.dir);
        c
    }

    /// Runs git with `args`; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self
            .git()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run git")?;
        check(&out, &format!("git {}", args.first().unwrap_or(&"")))?;
        Ok(out.stdout)
    }

    /// The commit of the live memory.
    pub fn head(&self) -> Result<Oid> {
        // The loose ref, as git writes it, without starting git; else (packed) git's answer.
        if let Ok(text) = std::fs::read_to_string(self.dir.join(MAIN)) {
            let oid = text.trim();
            if oid.len() == 40 && oid.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(oid.to_string());
            }
        }
        self.resolve(MAIN)
            .with_context(|| format!("the memory {} has no main branch", self.dir.display()))
    }

    /// The commit `rev` names.
    pub fn resolve(&self, rev: &str) -> Result<Oid> {
        let spec = format!("{rev}^{{commit}}");
        let out = self.run(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ]);
        match out {
            Ok(out) => Ok(String::from_utf8_lossy(&out).trim().to_string()),
            Err(_) => bail!("no commit {rev} in the memory"),
        }
    }

    /// Every file of the tree of `rev`.
    pub fn ls_tree(&self, rev: &str) -> Result<Vec<TreeEntry>> {
        let out = self.run(&["ls-tree", "-r", "-z", "--full-tree", rev])?;
        out.split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(parse_ls_line)
            .collect()
    }

    /// The contents of `oids`, in order, through one `git cat-file --batch`.
    pub fn read_blobs(&self, oids: &[&str]) -> Result<Vec<Vec<u8>>> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        let mut child = self
            .git()
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run git cat-file")?;
        let mut stdin = child.stdin.take().context("no stdin for git")?;
        let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
        // A writer thread: git answers as it reads, and a large batch would fill both pipes.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let mut out = BufReader::new(child.stdout.take().context("no stdout for git")?);
        let mut blobs = Vec::with_capacity(oids.len());
        for oid in oids {
            let mut header = String::new();
            out.read_line(&mut header)?;
            let size: usize = header
                .split_whitespace()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("git cannot read {oid}: {}", header.trim()))?;
            let mut data = vec![0; size + 1];
            out.read_exact(&mut data)?;
            data.pop();
            blobs.push(data);
        }
        let _ = writer.join();
        child.wait()?;
        Ok(blobs)
    }

    /// One blob's content.
    pub fn read_blob(&self, oid: &str) -> Result<Vec<u8>> {
        Ok(self.read_blobs(&[oid])?.pop().unwrap_or_default())
    }

    /// Commits `changes` on top of `base` (or as a first commit) through `git fast-import`,
    /// which reads every content from its stdin: nothing is read from disk by git. fast-import
    /// leaves the commit at `scratch_ref` (main is moved by `update_ref`, never here).
    pub fn commit_changes(
        &self,
        base: Option<&str>,
        changes: &[Change],
        message: &str,
        who: &Signature,
        scratch_ref: &str,
    ) -> Result<Oid> {
        let mut stream = Vec::new();
        let ident = format!("{} <{}> {} +0000", who.name, who.email, who.when);
        writeln!(stream, "reset {scratch_ref}\ncommit {scratch_ref}\nmark :1")?;
        writeln!(stream, "author {ident}\ncommitter {ident}")?;
        data_block(&mut stream, message.as_bytes())?;
        if let Some(b) = base {
            writeln!(stream, "from {b}")?;
        }
        for change in changes {
            match change {
                Change::Write { path, mode, data } => {
                    write!(stream, "M {mode:o} inline ")?;
                    stream.extend(quote_path(path));
                    stream.push(b'\n');
                    data_block(&mut stream, data)?;
                }
                Change::Delete { path } => {
                    stream.extend(b"D ");
                    stream.extend(quote_path(path));
                    stream.push(b'\n');
                }
            }
        }
        writeln!(stream, "get-mark :1")?;
        let mut child = self
            .git()
            .args(["fast-import", "--quiet", "--force", "--date-format=raw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run git fast-import")?;
        let mut stdin = child.stdin.take().context("no stdin for git")?;
        let writer = std::thread::spawn(move || stdin.write_all(&stream));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        check(&out, "git fast-import")?;
        let oid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if oid.len() < 40 {
            bail!("git fast-import gave no commit");
        }
        Ok(oid)
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: &str) -> Result<Oid> {
        let out = self.run(&["rev-parse", "--verify", &format!("{commit}^{{tree}}")])?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// The first parent of a commit, if any.
    pub fn first_parent(&self, commit: &str) -> Result<Option<Oid>> {
        let out = self.run(&["rev-list", "--parents", "-n", "1", commit])?;
        let line = String::from_utf8_lossy(&out);
        Ok(line.split_whitespace().nth(1).map(str::to_string))
    }

    /// A three-way merge of `ours` and `theirs` from `base`, written as a tree.
    pub fn merge_tree(&self, base: &str, ours: &str, theirs: &str) -> Result<MergeTree> {
        let out = self
            .git()
            .args(["merge-tree", "--write-tree", "-z", "--messages"])
            .arg(format!("--merge-base={base}"))
            .args([ours, theirs])
            .stdin(Stdio::null())
            .output()
            .context("cannot run git merge-tree")?;
        // 0: clean, 1: conflicts; anything else is a failure.
        if !matches!(out.status.code(), Some(0 | 1)) {
            check(&out, "git merge-tree")?;
        }
        parse_merge_tree(&out.stdout)
    }

    /// `tree` with `edits` made: each path set to (mode, oid), or removed with `None`.
    pub fn edit_tree(&self, tree: &str, edits: &[TreeEdit]) -> Result<Oid> {
        let scratch = tempfile::Builder::new()
            .prefix("index-")
            .tempfile_in(&self.dir)
            .context("cannot create a scratch index")?;
        let index = scratch.path().to_path_buf();
        let with_index = |args: &[&str]| {
            let mut c = self.git();
            c.env("GIT_INDEX_FILE", &index).args(args);
            c
        };
        let out = with_index(&["read-tree", tree]).output()?;
        check(&out, "git read-tree")?;
        let mut info = Vec::new();
        for (path, entry) in edits {
            match entry {
                Some((mode, oid)) => write!(info, "{mode} {oid}\t")?,
                None => write!(info, "0 {}\t", "0".repeat(40))?,
            }
            info.extend(path);
            info.push(0);
        }
        let mut child = with_index(&["update-index", "-z", "--index-info"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin for git")?
            .write_all(&info)?;
        check(&child.wait_with_output()?, "git update-index")?;
        let out = with_index(&["write-tree"]).output()?;
        check(&out, "git write-tree")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Stores `data` as a blob.
    pub fn write_blob(&self, data: &[u8]) -> Result<Oid> {
        let mut child = self
            .git()
            .args(["hash-object", "-w", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("no stdin for git")?
            .write_all(data)?;
        let out = child.wait_with_output()?;
        check(&out, "git hash-object")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A commit of `tree` with `parents`.
    pub fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
        who: &Signature,
    ) -> Result<Oid> {
        let mut c = self.git();
        c.arg("commit-tree").arg(tree);
        for p in parents {
            c.args(["-p", p]);
        }
        let date = format!("@{} +0000", who.when);
        c.env("GIT_AUTHOR_NAME", &who.name)
            .env("GIT_AUTHOR_EMAIL", &who.email)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_NAME", &who.name)
            .env("GIT_COMMITTER_EMAIL", &who.email)
            .env("GIT_COMMITTER_DATE", &date)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("cannot run git commit-tree")?;
        child
            .stdin
            .take()
            .context("no stdin for git")?
            .write_all(message.as_bytes())?;
        let out = child.wait_with_output()?;
        check(&out, "git commit-tree")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Moves main to `new` if it is still at `old` (`None`: main must not exist yet), and
    /// deletes the scratch refs `drop`, in one transaction.
    pub fn update_ref(&self, new: &str, old: Option<&str>, drop: &[&str]) -> Result<()> {
        let zero = "0".repeat(40);
        let mut input = format!("update {MAIN} {new} {}\n", old.unwrap_or(&zero));
        for r in drop {
            input.push_str(&format!("delete {r}\n"));
        }
        let mut child = self
            .git()
            .args(["update-ref", "-m", "agentenv", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run git update-ref")?;
        child
            .stdin
            .take()
            .context("no stdin for git")?
            .write_all(input.as_bytes())?;
        check(&child.wait_with_output()?, "git update-ref")
    }
}

/// git with no system or global config, no hooks, no attributes from any tree, no prompts,
/// and none of the caller's `GIT_*` variables.
fn plain_git() -> Command {
    let mut c = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.as_encoded_bytes().starts_with(b"GIT_") {
            c.env_remove(&k);
        }
    }
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("LC_ALL", "C");
    for setting in [
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "gc.auto=0",
        "attr.tree=4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "safe.directory=*",
        "user.name=agentenv",
        "user.email=agentenv@localhost",
    ] {
        c.args(["-c", setting]);
    }
    c
}

/// True if git can be run.
pub fn git_available() -> bool {
    plain_git()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn check(out: &std::process::Output, what: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    bail!("{what} failed ({}): {}", out.status, err.trim())
}

fn data_block(stream: &mut Vec<u8>, data: &[u8]) -> std::io::Result<()> {
    writeln!(stream, "data {}", data.len())?;
    stream.extend_from_slice(data);
    stream.push(b'\n');
    Ok(())
}

/// A path in fast-import's C-style quoting, which takes any byte.
fn quote_path(path: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in path {
        match b {
            b'"' => out.extend(b"\\\""),
            b'\\' => out.extend(b"\\\\"),
            b'\n' => out.extend(b"\\n"),
            0x20..=0x7e => out.push(b),
            _ => out.extend(format!("\\{b:03o}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

fn parse_ls_line(rec: &[u8]) -> Result<TreeEntry> {
    // `<mode> SP <type> SP <oid> TAB <path>`
    let tab = rec
        .iter()
        .position(|&b| b == b'\t')
        .context("odd git ls-tree output")?;
    let head = String::from_utf8_lossy(&rec[..tab]);
    let mut f = head.split(' ');
    let (Some(mode), Some(_), Some(oid)) = (f.next(), f.next(), f.next()) else {
        bail!("odd git ls-tree output: {head}");
    };
    Ok(TreeEntry {
        mode: mode.to_string(),
        oid: oid.to_string(),
        path: rec[tab + 1..].to_vec(),
    })
}

/// `git merge-tree --write-tree -z` output: the tree, then `<mode> <oid> <stage>\t<path>`
/// records, then an empty record and the messages.
fn parse_merge_tree(out: &[u8]) -> Result<MergeTree> {
    let mut records = out.split(|&b| b == 0);
    let tree = records
        .next()
        .map(|t| String::from_utf8_lossy(t).trim().to_string())
        .filter(|t| t.len() >= 40)
        .context("git merge-tree gave no tree")?;
    let mut conflicts = Vec::new();
    for rec in records {
        if rec.is_empty() {
            break;
        }
        let tab = rec
            .iter()
            .position(|&b| b == b'\t')
            .context("odd git merge-tree output")?;
        let head = String::from_utf8_lossy(&rec[..tab]);
        let f: Vec<&str> = head.split(' ').collect();
        let [mode, oid, stage] = f[..] else {
            bail!("odd git merge-tree output: {head}");
        };
        conflicts.push((
            stage.parse().context("odd git merge-tree stage")?,
            TreeEntry {
                mode: mode.to_string(),
                oid: oid.to_string(),
                path: rec[tab + 1..].to_vec(),
            },
        ));
    }
    Ok(MergeTree { tree, conflicts })
}

/// `path` as git spells it, for messages.
pub fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Runs git on the repository for a person to read (log, show, diff): its output goes straight
/// to stdout, and its exit code is returned.
pub fn show_to_user(repo: &Repo, args: &[&OsStr]) -> Result<i32> {
    let status = repo
        .git()
        .arg("--no-pager")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .context("cannot run git")?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_fast_import() {
        assert_eq!(quote_path(b"a b/\"c\"\n\xff"), b"\"a b/\\\"c\\\"\\n\\377\"");
    }

    #[test]
    fn merge_tree_output_is_parsed() {
        let out = b"1111111111111111111111111111111111111111\x00100644 aaaa 1\ta.md\x00100644 bbbb 2\ta.md\x00\x00messages";
        let m = parse_merge_tree(out).unwrap();
        assert_eq!(m.tree, "1".repeat(40));
        assert_eq!(m.conflicts.len(), 2);
        assert_eq!(m.conflicts[1].0, 2);
        assert_eq!(m.conflicts[1].1.path, b"a.md");
    }
}
