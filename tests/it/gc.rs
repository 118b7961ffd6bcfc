//! `agentenv ls` lists what agentenv keeps and `agentenv gc` reclaims what nothing uses: the
//! state of deleted projects with their nix GC roots, superseded evaluations, and with `--all`
//! everything but what a running environment uses.

use std::path::{Path, PathBuf};

use crate::fixture;
use crate::support::{run, stderr, stdout, Fixture};

fn gc(f: &Fixture, opts: &[&str]) -> std::process::Output {
    let mut c = f.agentenv();
    c.current_dir(f.tmp.path()).arg("gc").args(opts);
    let o = run(c);
    assert!(o.status.success(), "gc: {}", stderr(&o));
    o
}

fn ls_json(f: &Fixture) -> Vec<serde_json::Value> {
    let mut c = f.agentenv();
    c.current_dir(f.tmp.path()).args(["ls", "--json"]);
    let o = run(c);
    assert!(o.status.success(), "ls: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// nix's indirect GC roots that name something in the fixture's state.
fn roots_into(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir("/nix/var/nix/gcroots/auto")
        .map(|rd| {
            rd.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(state)))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gc_removes_roots_of_deleted_projects() {
    let f = fixture!();
    let o = f.run_in(&["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(f.cache_entries().len(), 1);
    assert_eq!(f.envs().len(), 1);
    let roots = roots_into(&f.state);
    let nix_roots_writable = crate::support::is_root();
    if nix_roots_writable {
        assert!(!roots.is_empty(), "nix made a GC root for the evaluation");
    }
    // Nothing is taken while the project lives.
    let o = gc(&f, &[]);
    assert!(stdout(&o).contains("0 items"), "{}", stdout(&o));
    assert_eq!(f.cache_entries().len(), 1);

    std::fs::remove_dir_all(&f.flake).unwrap();
    let listed = ls_json(&f);
    assert!(
        listed
            .iter()
            .all(|k| k["status"] == "project-gone" && k["reclaimable"] == true),
        "{listed:?}"
    );
    let o = gc(&f, &["--dry-run"]);
    assert!(stdout(&o).contains("would remove"), "{}", stdout(&o));
    assert_eq!(f.cache_entries().len(), 1, "a dry run removes nothing");

    let o = gc(&f, &[]);
    let out = stdout(&o);
    assert!(out.contains("freed"), "{out}");
    assert!(f.cache_entries().is_empty(), "{out}");
    assert!(f.envs().is_empty(), "{out}");
    if nix_roots_writable {
        let left: Vec<_> = roots
            .iter()
            .filter(|r| r.symlink_metadata().is_ok())
            .collect();
        assert!(left.is_empty(), "GC roots left: {left:?}");
    }
    assert!(ls_json(&f).is_empty());
}

#[test]
fn gc_removes_superseded_evaluations_and_the_project_still_starts() {
    let f = fixture!();
    assert!(f.run_in(&["true"]).status.success());
    f.edit_flake("hello from the agentenv example", "hello again");
    let o = f.run_in(&["sh", "-c", "echo $GREETING"]);
    assert_eq!(stdout(&o), "hello again\n", "{}", stderr(&o));
    assert_eq!(f.cache_entries().len(), 2);
    let o = gc(&f, &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let removed = report["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{report}");
    assert_eq!(removed[0]["status"], "superseded");
    assert!(report["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(f.cache_entries().len(), 1);
    let o = f.run_in(&["sh", "-c", "echo $GREETING"]);
    assert_eq!(stdout(&o), "hello again\n", "{}", stderr(&o));
}

#[test]
fn gc_all_keeps_what_a_running_environment_uses() {
    let f = fixture!();
    let id = f.up(&[]);
    let o = gc(&f, &["--all"]);
    assert!(stdout(&o).contains("0 items"), "{}", stdout(&o));
    let listed = ls_json(&f);
    assert!(
        listed
            .iter()
            .any(|k| k["kind"] == "environment" && k["status"] == "running"),
        "{listed:?}"
    );
    let o = f.exec(&id, &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    f.down(&id);
    gc(&f, &["--all"]);
    assert!(f.cache_entries().is_empty());
    assert!(f.envs().is_empty());
    // Everything is made again by the next start.
    let o = f.run_in(&["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn gc_older_than_takes_only_what_was_not_used_since() {
    let f = fixture!();
    assert!(f.run_in(&["true"]).status.success());
    gc(&f, &["--older-than", "1h"]);
    assert_eq!(f.envs().len(), 1, "used just now");
    // Last used two days ago.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    for p in f.envs().iter().map(|e| e.join("env.json")).chain(
        f.cache_entries()
            .iter()
            .flat_map(|e| [e.join("entry.json"), e.clone()]),
    ) {
        let file = std::fs::File::options().read(true).open(&p).unwrap();
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(old)
                .set_modified(old),
        )
        .unwrap();
    }
    let mut c = f.agentenv();
    c.current_dir(f.tmp.path()).arg("ls");
    let o = run(c);
    assert!(stdout(&o).contains("2d ago"), "{}", stdout(&o));
    let o = gc(&f, &["--older-than", "1d"]);
    assert!(f.envs().is_empty(), "{}", stdout(&o));
    assert!(f.cache_entries().is_empty());
}

#[test]
fn gc_killed_half_way_leaves_nothing_a_start_trips_on() {
    let f = fixture!();
    assert!(f.run_in(&["true"]).status.success());
    // What a gc killed after its first step leaves: the entry and the environment renamed
    // into the trash (under the pid of a process that is gone), their index record, lock and
    // GC roots still there.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let entry = f.cache_entries().remove(0);
    let env = f.envs().remove(0);
    let cache_trash = f.state.join("cache/.trash");
    let data_trash = f.state.join("data/.trash");
    std::fs::create_dir_all(&cache_trash).unwrap();
    std::fs::create_dir_all(&data_trash).unwrap();
    let name = |p: &Path| format!("{dead}-{}", p.file_name().unwrap().to_string_lossy());
    std::fs::rename(&entry, cache_trash.join(name(&entry))).unwrap();
    std::fs::rename(&env, data_trash.join(name(&env))).unwrap();
    // The next start evaluates again and makes a fresh environment.
    let o = f.run_in(&["sh", "-c", "echo $GREETING"]);
    assert_eq!(
        stdout(&o),
        "hello from the agentenv example\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(f.cache_entries().len(), 1);
    assert_eq!(f.envs().len(), 1);
    // The next gc empties the trash and keeps what is current.
    let o = gc(&f, &[]);
    assert!(
        crate::support::list(&cache_trash).is_empty(),
        "{}",
        stdout(&o)
    );
    assert!(
        crate::support::list(&data_trash).is_empty(),
        "{}",
        stdout(&o)
    );
    assert_eq!(f.cache_entries().len(), 1);
    assert!(f.run_in(&["true"]).status.success());
}
