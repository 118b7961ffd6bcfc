//! `agentenv profile` with agentenv's state where a user has it, inside the home being
//! activated (`~/.local/state/agentenv`), and profile symlinks the plan must judge by their
//! target alone.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::home::{snapshot, write, TestHome};

/// Expects `activate` (and its dry run) of `profile` to fail with `expected` and a hint, and
/// the home to be exactly as it was.
fn refused(t: &TestHome, profile: &Path, expected: &str) {
    let before = snapshot(&t.home);
    let p = profile.display().to_string();
    for args in [
        &["profile", "activate", &p, "--dry-run"][..],
        &["profile", "activate", &p],
    ] {
        let err = t.fails(args);
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in:\n{err}"
        );
        assert!(err.contains("  hint: "), "no hint in:\n{err}");
        assert_eq!(
            snapshot(&t.home),
            before,
            "{args:?} changed the home: {err}"
        );
    }
}

#[test]
fn a_first_activation_creates_directories_beside_the_state_directory() {
    let t = TestHome::with_default_state();
    let p = t.root.join("config");
    write(&p, "home/.local/bin/mytool", b"#!/bin/sh\n", 0o755);
    write(&p, "home/.bashrc", b"# rc\n", 0o644);

    t.ok(&["profile", "activate", &p.display().to_string()]);
    let tool = t.home.join(".local/bin/mytool");
    assert_eq!(
        std::fs::read_link(&tool).unwrap(),
        p.join("home/.local/bin/mytool")
    );
    assert!(t.state().join("journal.json").is_file());

    t.ok(&["profile", "deactivate"]);
    // Only agentenv's own state is left in the home.
    let left: Vec<_> = snapshot(&t.home)
        .into_keys()
        .filter(|k| !k.starts_with(".local/state/agentenv"))
        .collect();
    assert_eq!(left, [Path::new(".local"), Path::new(".local/state")]);
    t.ok(&["profile", "activate", &p.display().to_string()]);
    assert!(tool.is_symlink());
}

#[test]
fn bad_input_leaves_a_home_holding_the_state_directory_unchanged() {
    let t = TestHome::with_default_state();
    let bad = t.root.join("bad");
    write(&bad, "home/.local/bin/mytool", b"x", 0o755);
    write(&bad, "x", b"x", 0o644);
    write(
        &bad,
        "agentenv.toml",
        b"[links]\n\"x\" = \".local/state/agentenv/foo\"\n",
        0o644,
    );
    refused(&t, &bad, "agentenv's own state");
    assert!(!t.home.join(".local").exists());

    std::fs::remove_file(bad.join("agentenv.toml")).unwrap();
    symlink(t.home.join(".notyet"), bad.join("home/.notyet")).unwrap();
    refused(&t, &bad, "inside the home directory");
}

#[test]
fn a_profile_symlink_to_a_home_path_not_yet_there_is_refused() {
    let t = TestHome::new();
    let p = t.root.join("config");
    write(&p, "home/.bashrc", b"# rc\n", 0o644);
    // Once linked, ~/.notyet would point at itself.
    symlink(t.home.join(".notyet"), p.join("home/.notyet")).unwrap();
    refused(&t, &p, "points to");
    assert!(std::fs::symlink_metadata(t.home.join(".notyet")).is_err());

    // Relative to its own directory, the same.
    std::fs::remove_file(p.join("home/.notyet")).unwrap();
    symlink("../../home/.notyet", p.join("home/.notyet")).unwrap();
    refused(&t, &p, "inside the home directory");
}
