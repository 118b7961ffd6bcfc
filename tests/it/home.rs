//! Shared by the profile integration tests: a temporary home and agentenv state, the real
//! binary pointed at them, and exact snapshots of a directory tree.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One entry of a tree, as a restore must reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, bytes: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

/// Every path below `root` (not following symlinks) with its kind, mode, contents or target.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let ft = meta.file_type();
        let e = if ft.is_symlink() {
            Entry::Symlink {
                target: std::fs::read_link(&path).unwrap(),
            }
        } else if ft.is_dir() {
            walk(root, &path, out);
            Entry::Dir { mode }
        } else if ft.is_file() {
            Entry::File {
                mode,
                bytes: std::fs::read(&path).unwrap(),
            }
        } else {
            Entry::Other { mode }
        };
        out.insert(rel, e);
    }
}

/// A temporary home, agentenv state and a place for profiles.
pub struct TestHome {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub agentenv_home: PathBuf,
    /// Without AGENTENV_HOME: agentenv keeps its state where it does for a user, in the home.
    pub state_in_home: bool,
}

impl TestHome {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let home = root.join("home");
        let agentenv_home = root.join("agentenv");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&agentenv_home).unwrap();
        Self {
            _tmp: tmp,
            root,
            home,
            agentenv_home,
            state_in_home: false,
        }
    }

    /// A home with agentenv's state in it, at the XDG default `~/.local/state/agentenv`.
    pub fn with_default_state() -> Self {
        Self {
            state_in_home: true,
            ..Self::new()
        }
    }

    /// The profile state directory agentenv uses for this home.
    pub fn state(&self) -> PathBuf {
        match self.state_in_home {
            true => self.home.join(".local/state/agentenv/profile"),
            false => self.agentenv_home.join("state/profile"),
        }
    }

    /// `agentenv ARGS` with HOME and AGENTENV_HOME (unless `state_in_home`) pointing here.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentenv"));
        cmd.args(args)
            .current_dir(&self.root)
            .env("HOME", &self.home)
            .env("AGENTENV_HOME", &self.agentenv_home)
            .env_remove("AGENTENV_PROFILE")
            .env_remove("XDG_STATE_HOME")
            .env_remove("AGENTENV_TEST_PAUSE_AFTER_STEPS");
        if self.state_in_home {
            cmd.env_remove("AGENTENV_HOME")
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_DATA_HOME")
                .env_remove("XDG_CACHE_HOME");
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "agentenv {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit code 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "agentenv {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Fills the home with entries in the way of `write_profile`'s links, of every kind and
    /// several modes, plus files of its own that must not be touched.
    pub fn fill_with_conflicts(&self) {
        let h = &self.home;
        write(h, ".bashrc", b"# my own bashrc\n", 0o600);
        write(h, ".vimrc", b"set nocompatible\n", 0o755);
        write(h, ".gitconfig", b"[user]\n\tname = me\n", 0o444);
        write(h, ".config", b"a file where a directory must go", 0o640);
        write(
            h,
            ".claude/skills/review/SKILL.md",
            b"my own skill\n",
            0o644,
        );
        std::fs::set_permissions(h.join(".claude/skills/review"), perm(0o700)).unwrap();
        write(h, ".local/share/keep", b"\x00\x01binary\xff", 0o600);
        write(h, "notes/todo.txt", b"untouched\n", 0o644);
        symlink("/etc/hostname", h.join(".inputrc")).unwrap();
        symlink("/nowhere/at/all", h.join(".profile")).unwrap();
        std::fs::create_dir_all(h.join(".codex")).unwrap();
        symlink(h.join("notes"), h.join(".codex/skills")).unwrap();
        std::fs::set_permissions(h.join("notes"), perm(0o751)).unwrap();
    }
}

pub fn perm(mode: u32) -> std::fs::Permissions {
    std::fs::Permissions::from_mode(mode)
}

/// Writes `bytes` at `root/rel` (creating parents) with `mode`.
pub fn write(root: &Path, rel: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, perm(mode)).unwrap();
    path
}

/// A profile using every feature: home/ files, a skill with two targets, bin/, a manifest
/// with links, variables, init snippets, and an activate.sh that logs beside the profile.
pub fn write_profile(dir: &Path, marker: &str) {
    write(
        dir,
        "home/.bashrc",
        format!("# {marker} bashrc\n").as_bytes(),
        0o644,
    );
    write(dir, "home/.vimrc", b"syntax on\n", 0o644);
    write(dir, "home/.inputrc", b"set editing-mode vi\n", 0o644);
    write(dir, "home/.profile", b"# profile\n", 0o644);
    write(
        dir,
        "home/.config/nvim/init.lua",
        b"vim.o.number = true\n",
        0o644,
    );
    write(
        dir,
        "home/.local/bin/tool",
        b"#!/bin/sh\necho tool\n",
        0o755,
    );
    write(
        dir,
        "skills/review/SKILL.md",
        format!("---\nname: review\ndescription: {marker} review\n---\nReview.\n").as_bytes(),
        0o644,
    );
    write(
        dir,
        "bin/hello",
        b"#!/bin/sh\necho hello from profile\n",
        0o755,
    );
    write(dir, "git/config", b"[core]\n\tpager = less\n", 0o644);
    write(
        dir,
        "agentenv.toml",
        b"[links]\n\"git/config\" = \".gitconfig\"\n\n[skills]\ntargets = [\".codex/skills\"]\n\n\
          [env]\nEDITOR = \"nvim\"\n\n[shell]\ninit = [\"alias ll='ls -l'\"]\n",
        0o644,
    );
    write(
        dir,
        "activate.sh",
        b"#!/bin/sh\necho \"$HOME $AGENTENV_PROFILE\" >> \"$AGENTENV_PROFILE.hook.log\"\n",
        0o755,
    );
}
