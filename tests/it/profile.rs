//! `agentenv profile` on a plain home, through the real binary: activation into a home full of
//! conflicts, exact restore, no-op re-activation, switching, kill -9 and recovery, bad input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::home::{snapshot, write, write_profile, TestHome};

fn profile_in(t: &TestHome, name: &str) -> String {
    let dir = t.root.join(name);
    write_profile(&dir, name);
    dir.display().to_string()
}

fn link_of(path: &Path) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("{} is not a link: {e}", path.display()))
        .display()
        .to_string()
}

fn journal_exists(t: &TestHome) -> bool {
    t.state().join("journal.json").exists()
}

#[test]
fn profile_restore_is_byte_exact() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let p = profile_in(&t, "config");
    let before = snapshot(&t.home);

    t.ok(&["profile", "activate", &p]);
    let h = &t.home;
    assert_eq!(link_of(&h.join(".bashrc")), format!("{p}/home/.bashrc"));
    assert_eq!(link_of(&h.join(".gitconfig")), format!("{p}/git/config"));
    assert_eq!(
        link_of(&h.join(".config/nvim/init.lua")),
        format!("{p}/home/.config/nvim/init.lua")
    );
    assert_eq!(
        link_of(&h.join(".claude/skills/review")),
        format!("{p}/skills/review")
    );
    // ~/.codex/skills is the user's symlink to ~/notes: the skill lands through it.
    assert_eq!(
        link_of(&h.join("notes/review")),
        format!("{p}/skills/review")
    );
    assert_eq!(
        std::fs::read(h.join(".local/share/keep")).unwrap(),
        b"\x00\x01binary\xff"
    );
    assert_eq!(
        std::fs::read_to_string(h.join(".bashrc")).unwrap(),
        "# config bashrc\n"
    );

    t.ok(&["profile", "deactivate"]);
    assert_eq!(snapshot(&t.home), before);
    assert!(!journal_exists(&t));
}

#[test]
fn activate_sh_runs_with_the_profile_and_home() {
    let t = TestHome::new();
    let p = profile_in(&t, "config");
    t.ok(&["profile", "activate", &p]);
    let log = std::fs::read_to_string(format!("{p}.hook.log")).unwrap();
    assert_eq!(log, format!("{} {p}\n", t.home.display()));
}

#[test]
fn env_script_puts_bin_on_path_and_sets_variables() {
    let t = TestHome::new();
    let p = profile_in(&t, "config");
    t.ok(&["profile", "activate", &p]);
    let script = t.state().join("env.sh");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". {}; hello; echo \"$EDITOR $AGENTENV_PROFILE\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("hello from profile\nnvim {p}\n")
    );
}

#[test]
fn reactivating_the_same_profile_changes_nothing() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let p = profile_in(&t, "config");
    t.ok(&["profile", "activate", &p]);
    let home = snapshot(&t.home);
    let journal = std::fs::read(t.state().join("journal.json")).unwrap();
    let state = snapshot(&t.state());

    t.ok(&["profile", "activate", &p]);
    assert_eq!(snapshot(&t.home), home);
    assert_eq!(
        std::fs::read(t.state().join("journal.json")).unwrap(),
        journal
    );
    assert_eq!(snapshot(&t.state()), state);
    let log = std::fs::read_to_string(format!("{p}.hook.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "activate.sh ran again: {log}");
}

#[test]
fn activating_another_profile_first_undoes_the_previous_one() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let before = snapshot(&t.home);
    let one = profile_in(&t, "one");
    let two = t.root.join("two");
    write(&two, "home/.bashrc", b"# two\n", 0o644);
    write(&two, "home/.only-two", b"x", 0o644);
    let two = two.display().to_string();

    t.ok(&["profile", "activate", &one]);
    t.ok(&["profile", "activate", &two]);
    let h = &t.home;
    assert_eq!(link_of(&h.join(".bashrc")), format!("{two}/home/.bashrc"));
    assert_eq!(
        link_of(&h.join(".only-two")),
        format!("{two}/home/.only-two")
    );
    // Nothing of the first profile is left: the user's own entries are back.
    assert_eq!(
        std::fs::read(h.join(".vimrc")).unwrap(),
        b"set nocompatible\n"
    );
    assert!(!h.join(".claude/skills/review").is_symlink());
    assert!(h.join(".config").is_file());

    t.ok(&["profile", "deactivate"]);
    assert_eq!(snapshot(&t.home), before);
}

#[test]
fn a_link_the_user_changed_is_left_alone_on_deactivate() {
    let t = TestHome::new();
    let p = profile_in(&t, "config");
    t.ok(&["profile", "activate", &p]);
    let rc = t.home.join(".bashrc");
    std::fs::remove_file(&rc).unwrap();
    std::fs::write(&rc, "edited by hand\n").unwrap();
    let status = t.ok(&["profile", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["changed_links"][0], rc.display().to_string());

    let out = t.run(&["profile", "deactivate"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("left"));
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), "edited by hand\n");
    assert!(!t.home.join(".vimrc").exists());
}

/// The number of steps activating `profile` into the home takes, from the dry run.
fn step_count(t: &TestHome, profile: &str) -> usize {
    let plan = t.ok(&["profile", "activate", profile, "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    ["conflicts", "dirs", "links"]
        .iter()
        .map(|k| plan[k].as_array().unwrap().len())
        .sum()
}

/// Runs `args` with a pause after `steps` steps, and kills it with SIGKILL there.
fn kill_after(t: &TestHome, args: &[&str], steps: usize) {
    let mut child = t
        .command(args)
        .env("AGENTENV_TEST_PAUSE_AFTER_STEPS", steps.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .next()
        .expect("agentenv ended before pausing")
        .unwrap();
    assert_eq!(line, format!("agentenv: paused after {steps} steps"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_during_activate_is_undone_by_the_next_deactivate() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let p = profile_in(&t, "config");
    let before = snapshot(&t.home);
    let total = step_count(&t, &p);
    for steps in [1, 3, 7, total / 2, total - 1] {
        kill_after(&t, &["profile", "activate", &p], steps);
        assert_ne!(
            snapshot(&t.home),
            before,
            "nothing was done in {steps} steps"
        );
        let status = t.ok(&["profile", "status"]);
        assert!(status.contains("interrupted while activating"), "{status}");
        t.ok(&["profile", "deactivate"]);
        assert_eq!(snapshot(&t.home), before, "after a kill at step {steps}");
    }
}

#[test]
fn kill_during_activate_is_repaired_by_the_next_activate() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let p = profile_in(&t, "config");
    let before = snapshot(&t.home);
    t.ok(&["profile", "activate", &p]);
    let active = snapshot(&t.home);
    t.ok(&["profile", "deactivate"]);

    let total = step_count(&t, &p);
    kill_after(&t, &["profile", "activate", &p], total / 2);
    t.ok(&["profile", "activate", &p]);
    assert_eq!(snapshot(&t.home), active);
    t.ok(&["profile", "deactivate"]);
    assert_eq!(snapshot(&t.home), before);
}

#[test]
fn kill_during_deactivate_is_finished_by_the_next_deactivate() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let p = profile_in(&t, "config");
    let before = snapshot(&t.home);
    let total = step_count(&t, &p);
    for steps in [1, total / 2, total - 1] {
        t.ok(&["profile", "activate", &p]);
        kill_after(&t, &["profile", "deactivate"], steps);
        let status = t.ok(&["profile", "status"]);
        assert!(
            status.contains("interrupted while deactivating"),
            "{status}"
        );
        t.ok(&["profile", "deactivate"]);
        assert_eq!(
            snapshot(&t.home),
            before,
            "after a kill at undo step {steps}"
        );
    }
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let p = profile_in(&t, "config");
    let before = snapshot(&t.home);
    let out = t.ok(&["profile", "activate", &p, "--dry-run"]);
    let home = t.home.display();
    assert!(
        out.contains(&format!("move aside  {home}/.bashrc (file)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("link        {home}/.bashrc -> {p}/home/.bashrc")),
        "{out}"
    );
    assert!(out.contains(&format!("path first  {p}/bin")), "{out}");
    assert_eq!(snapshot(&t.home), before);
    assert!(!journal_exists(&t));
}

#[test]
fn status_reports_the_active_profile() {
    let t = TestHome::new();
    assert_eq!(t.ok(&["profile", "status", "--json"]).trim(), "null");
    let p = profile_in(&t, "config");
    t.ok(&["profile", "activate", &p]);
    let status: serde_json::Value =
        serde_json::from_str(&t.ok(&["profile", "status", "--json"])).unwrap();
    assert_eq!(status["state"], "active", "the word `status` uses too");
    assert_eq!(status["profile"], p.as_str());
    assert_eq!(status["links"], 9);
    assert_eq!(status["env"]["path_prepend"][0], format!("{p}/bin"));
    assert!(t.ok(&["profile", "status"]).contains("state     active"));
}

#[test]
fn the_profile_comes_from_the_environment_or_the_config_file() {
    let t = TestHome::new();
    let p = profile_in(&t, "config");
    let out = t
        .command(&["profile", "activate", "--dry-run"])
        .env("AGENTENV_PROFILE", &p)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("activate {p} into")));
    write(
        &t.agentenv_home,
        "config/config.toml",
        format!("profile = \"{p}\"\n").as_bytes(),
        0o644,
    );
    t.ok(&["profile", "activate"]);
    assert!(t.home.join(".bashrc").is_symlink());
    let config = write(
        &t.agentenv_home,
        "config/config.toml",
        format!("profile = \"{p}\"\nprofiles = \"x\"\n").as_bytes(),
        0o644,
    );
    let err = t.fails(&["profile", "activate"]);
    let place = format!("{}:2:1: unknown field `profiles`", config.display());
    assert!(err.contains(&place) && err.contains("hint: "), "{err}");
    std::fs::remove_file(t.agentenv_home.join("config/config.toml")).unwrap();
    let err = t.fails(&["profile", "activate"]);
    assert!(err.starts_with("error: no profile given"), "{err}");
}

#[test]
fn an_empty_agentenv_profile_counts_as_unset() {
    let t = TestHome::new();
    let p = profile_in(&t, "config");
    write(
        &t.agentenv_home,
        "config/config.toml",
        format!("profile = \"{p}\"\n").as_bytes(),
        0o644,
    );
    let run = |args: &[&str]| {
        t.command(args)
            .env("AGENTENV_PROFILE", "")
            .output()
            .unwrap()
    };
    let out = run(&["profile", "activate", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("activate {p} into")));
    // Not a usage error about a --profile nobody passed: the path is looked at.
    let missing = t.root.join("missing");
    let out = run(&[&missing.display().to_string(), "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: no such directory"), "{err}");
}

/// Runs `activate` on a bad profile and checks the error and that nothing changed.
fn refused(t: &TestHome, profile: &Path, expected: &str) -> String {
    let before = snapshot(&t.home);
    let err = t.fails(&["profile", "activate", &profile.display().to_string()]);
    assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    assert!(err.contains("  hint: "), "no hint in:\n{err}");
    assert_eq!(snapshot(&t.home), before, "the home changed: {err}");
    assert!(!journal_exists(t));
    err
}

#[test]
fn bad_input_leaves_the_home_unchanged() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    refused(&t, &t.root.join("missing"), "no profile directory at");

    let bad = t.root.join("bad");
    write_profile(&bad, "bad");
    write(
        &bad,
        "agentenv.toml",
        b"[env]\nEDITOR = \"vi\"\nPAGER = less\n",
        0o644,
    );
    let err = refused(&t, &bad, &format!("{}/agentenv.toml:3:9", bad.display()));
    assert!(err.contains("   3 | PAGER = less"), "{err}");

    write(
        &bad,
        "agentenv.toml",
        b"[links]\n\"git/config\" = \"../../etc/gitconfig\"\n",
        0o644,
    );
    refused(&t, &bad, "would leave the home directory");
    write(
        &bad,
        "agentenv.toml",
        b"[links]\n\"git/config\" = \"/etc/gitconfig\"\n",
        0o644,
    );
    refused(&t, &bad, "would leave the home directory");
    write(&bad, "agentenv.toml", b"[linkz]\n", 0o644);
    refused(&t, &bad, "agentenv.toml:1:2");
    std::fs::remove_file(bad.join("agentenv.toml")).unwrap();

    std::os::unix::fs::symlink("loop", bad.join("home/loop")).unwrap();
    refused(&t, &bad, "is a symlink cycle");
    std::fs::remove_file(bad.join("home/loop")).unwrap();

    std::os::unix::fs::symlink(t.home.join("notes"), bad.join("home/notes-again")).unwrap();
    refused(
        &t,
        &bad,
        "inside the home directory: linking it would make a cycle",
    );
    std::fs::remove_file(bad.join("home/notes-again")).unwrap();

    // A profile inside the home, with a link back into itself.
    let inner = t.home.join("config");
    write_profile(&inner, "inner");
    write(
        &inner,
        "agentenv.toml",
        b"[links]\n\"bin\" = \"config/bin2\"\n",
        0o644,
    );
    refused(&t, &inner, "a cycle");
    std::fs::remove_dir_all(&inner).unwrap();
}

#[test]
fn the_example_profile_activates_and_deactivates() {
    let t = TestHome::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/profile");
    let p = example.display().to_string();
    t.ok(&["profile", "activate", &p]);
    let h = &t.home;
    assert_eq!(link_of(&h.join(".bashrc")), format!("{p}/home/.bashrc"));
    assert_eq!(
        link_of(&h.join(".config/git/ignore")),
        format!("{p}/home/.config/git/ignore")
    );
    assert_eq!(
        link_of(&h.join(".config/nvim/init.lua")),
        format!("{p}/editor/init.lua")
    );
    for skills in [".claude/skills", ".codex/skills"] {
        let skill = h.join(skills).join("commit-message");
        assert_eq!(link_of(&skill), format!("{p}/skills/commit-message"));
    }
    // activate.sh ran with the home set.
    assert!(h.join(".cache/nvim").is_dir());
    let status: serde_json::Value =
        serde_json::from_str(&t.ok(&["profile", "status", "--json"])).unwrap();
    assert_eq!(status["env"]["tools"], format!("{p}#tools"));
    assert_eq!(status["env"]["shell_init"][0], "alias ll='ls -alF'");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; hello-profile",
            t.state().join("env.sh").display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("hello from the profile at {p}\n")
    );

    t.ok(&["profile", "deactivate"]);
    // Only what activate.sh made itself is left.
    let left: Vec<_> = snapshot(h).into_keys().collect();
    assert_eq!(left, [Path::new(".cache"), Path::new(".cache/nvim")]);
}

#[test]
fn a_profile_refused_after_the_undo_brings_the_previous_one_back() {
    let t = TestHome::new();
    t.fill_with_conflicts();
    let one = profile_in(&t, "one");
    t.ok(&["profile", "activate", &one]);
    let active = snapshot(&t.home);
    // The second profile can only be refused once the first is undone: its files go below
    // ~/.cache, a symlink leading out of the home.
    std::os::unix::fs::symlink("/tmp", t.home.join(".cache")).unwrap();
    let active_with_cache = snapshot(&t.home);
    let two = t.root.join("two");
    write(&two, "home/.cache/x", b"x", 0o644);
    let err = t.fails(&["profile", "activate", &two.display().to_string()]);
    assert!(err.contains("outside the home directory"), "{err}");
    assert_eq!(snapshot(&t.home), active_with_cache);
    assert_ne!(active, active_with_cache);
    let status: serde_json::Value =
        serde_json::from_str(&t.ok(&["profile", "status", "--json"])).unwrap();
    assert_eq!(status["profile"], one.as_str());
}

#[test]
fn activate_says_what_is_active_and_the_line_for_the_shell_rc() {
    let t = TestHome::new();
    let p = profile_in(&t, "config");
    let o = t.run(&["profile", "activate", &p]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let env_sh = t.state().join("env.sh");
    assert!(
        err.starts_with(&format!("{p} is active in {}: 9 links", t.home.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "add this line to ~/.bashrc (or your shell's rc file): . {}",
            env_sh.display()
        )),
        "{err}"
    );
    let o = t.run(&["profile", "activate", &p]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("already; nothing changed"), "{err}");
}
