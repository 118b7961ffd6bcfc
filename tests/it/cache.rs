//! The evaluated environment is cached: a warm start runs no nix, a change to anything that
//! defines the shell re-evaluates it, and a GC root keeps it alive through garbage collection.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::fixture;
use crate::support::{run, stderr, stdout, Fixture};

/// A `nix` on PATH that logs each call before running the real one.
struct NixSpy {
    log: PathBuf,
    path: String,
}

impl NixSpy {
    fn new(f: &Fixture) -> Self {
        let dir = f.tmp.path().join("spy");
        std::fs::create_dir_all(&dir).unwrap();
        let real = which("nix");
        let log = dir.join("calls.log");
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        );
        std::fs::write(dir.join("nix"), script).unwrap();
        std::fs::set_permissions(dir.join("nix"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&log, "").unwrap();
        Self {
            path: format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
            log,
        }
    }

    fn calls(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap().lines().count()
    }

    fn run(&self, f: &Fixture, args: &[&str]) -> std::process::Output {
        let mut c = f.agentenv();
        c.env("PATH", &self.path).args(args);
        run(c)
    }
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn warm_start_runs_no_nix() {
    let f = fixture!();
    let spy = NixSpy::new(&f);
    let o = spy.run(&f, &[".", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cold = spy.calls();
    assert!(cold >= 1, "a cold start evaluates with nix");
    for _ in 0..3 {
        let o = spy.run(&f, &[".", "--", "true"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(spy.calls(), cold, "warm starts ran nix");
}

#[test]
fn edit_to_flake_nix_re_evaluates() {
    let f = fixture!();
    let spy = NixSpy::new(&f);
    let o = spy.run(&f, &[".", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(
        stdout(&o),
        "hello from the agentenv example\n",
        "{}",
        stderr(&o)
    );
    let before = spy.calls();
    f.edit_flake("hello from the agentenv example", "changed greeting");
    let o = spy.run(&f, &[".", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!(stdout(&o), "changed greeting\n", "{}", stderr(&o));
    assert!(spy.calls() > before);
}

#[test]
fn edit_to_an_imported_nix_file_re_evaluates() {
    let f = fixture!();
    f.write("nix/greeting.nix", "\"from an imported file\"\n");
    f.edit_flake(
        "GREETING = \"hello from the agentenv example\";",
        "GREETING = import ./nix/greeting.nix;",
    );
    let o = f.run_in(&["sh", "-c", "echo $GREETING"]);
    assert_eq!(stdout(&o), "from an imported file\n", "{}", stderr(&o));
    f.write("nix/greeting.nix", "\"edited import\"\n");
    let o = f.run_in(&["sh", "-c", "echo $GREETING"]);
    assert_eq!(stdout(&o), "edited import\n", "{}", stderr(&o));
}

#[test]
fn edit_to_a_file_the_flake_names_re_evaluates() {
    let f = fixture!();
    let o = f.run_in(&["hello"]);
    assert!(
        stdout(&o).starts_with("hello from the agentenv example, from "),
        "{}",
        stderr(&o)
    );
    // build-tools.sh is named as `./build-tools.sh` in flake.nix: not a .nix file, still an input.
    let script = std::fs::read_to_string(f.flake.join("build-tools.sh")).unwrap();
    f.write(
        "build-tools.sh",
        &script.replace(
            "${GREETING:-hello}, from",
            "${GREETING:-hello}, rebuilt, from",
        ),
    );
    let o = f.run_in(&["hello"]);
    assert!(
        stdout(&o).starts_with("hello from the agentenv example, rebuilt, from "),
        "{} {}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn unrelated_file_changes_keep_the_cache_warm() {
    let f = fixture!();
    let spy = NixSpy::new(&f);
    assert!(spy.run(&f, &[".", "--", "true"]).status.success());
    let cold = spy.calls();
    std::fs::write(f.flake.join("notes.txt"), "not an input").unwrap();
    std::fs::create_dir_all(f.flake.join("build")).unwrap();
    // Nor is a tracked source file that no .nix file names.
    f.write("src/main.rs", "fn main() {}\n");
    assert!(spy.run(&f, &[".", "--", "true"]).status.success());
    assert_eq!(
        spy.calls(),
        cold,
        "a non-nix file or a new directory is not an input"
    );
}

#[test]
fn refresh_forces_a_new_evaluation() {
    let f = fixture!();
    let spy = NixSpy::new(&f);
    assert!(spy.run(&f, &[".", "--", "true"]).status.success());
    let cold = spy.calls();
    let o = spy.run(&f, &["--refresh", ".", "--", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(spy.calls() > cold);
    assert_eq!(f.cache_entries().len(), 1, "a refresh replaces the entry");
}

#[test]
fn cached_environment_survives_garbage_collection() {
    let f = fixture!();
    let spy = NixSpy::new(&f);
    let o = spy.run(&f, &[".", "--", "sh", "-c", "command -v hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hello = PathBuf::from(stdout(&o).trim());
    assert!(hello.starts_with("/nix/store"));
    let entry = &f.cache_entries()[0];
    let env_path = std::fs::canonicalize(entry.join("gcroot")).unwrap();

    let gc = run({
        let mut c = Command::new("nix-collect-garbage");
        c.env("NIX_CONFIG", &f.nix_config);
        c
    });
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(env_path.exists(), "the environment was collected");
    assert!(hello.exists(), "a tool of the environment was collected");

    let before = spy.calls();
    let o = spy.run(&f, &[".", "--", "hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(spy.calls(), before, "still warm after garbage collection");
}
