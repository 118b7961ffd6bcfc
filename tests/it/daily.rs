//! Day-to-day use: what agentenv says while it works and when something is off (progress
//! without a terminal, typos of verbs, untracked flake files, dev shells that do not exist),
//! and that `exec` runs a script from stdin as `agentenv .` does.

use crate::fixture;
use crate::support::{run, stderr, stdout};

#[test]
fn cold_start_reports_progress_without_a_terminal() {
    let f = fixture!();
    // A build of two seconds (its own, so no earlier test's build is reused).
    let script = std::fs::read_to_string(f.flake.join("build-tools.sh")).unwrap();
    let unique = f.flake.display().to_string();
    f.write(
        "build-tools.sh",
        &format!("{script}\n\"$bb\" sleep 2 # {unique}\n"),
    );
    let o = f.run_in(&["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("agentenv: evaluating the dev shell of hello\n"),
        "{err}"
    );
    assert!(
        err.contains("agentenv: evaluating the dev shell of hello: done in "),
        "{err}"
    );
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "no spinner: {err:?}"
    );
    // Warm: nothing to report.
    let o = f.run_in(&["true"]);
    assert_eq!(stderr(&o), "");
    // --quiet: nothing either, cold.
    f.write(
        "build-tools.sh",
        &format!("{script}\n\"$bb\" sleep 2 # {unique} again\n"),
    );
    let o = f.run_in_with(&["--quiet"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

#[test]
fn exec_without_a_command_runs_the_script_on_stdin_as_enter_does() {
    use std::io::Write;
    let f = fixture!();
    let id = f.up(&[]);
    let script = "echo \"$GREETING\"; exit 3\n";
    let piped = |mut c: std::process::Command| {
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        crate::support::wait_output(child)
    };
    let mut c = f.agentenv();
    c.arg(".");
    let enter = piped(c);
    let mut c = f.agentenv();
    c.args(["exec", &id]);
    let exec = piped(c);
    f.down(&id);
    assert_eq!(enter.status.code(), Some(3), "{}", stderr(&enter));
    assert_eq!(exec.status.code(), Some(3), "{}", stderr(&exec));
    assert_eq!(stdout(&exec), "hello from the agentenv example\n");
    assert_eq!(stdout(&exec), stdout(&enter));
}

#[test]
fn typo_of_a_verb_suggests_it_unless_such_a_directory_exists() {
    let f = fixture!();
    for (args, hint) in [
        (&["upp"][..], "did you mean `agentenv up`?"),
        (&["exce", "web"], "did you mean `agentenv exec web`?"),
    ] {
        let mut c = f.agentenv();
        c.args(args);
        let o = run(c);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!(
                "error: '{}' is neither a verb nor a directory",
                args[0]
            )),
            "{err}"
        );
        assert!(err.contains(hint), "{err}");
    }
    // A directory of that name is a path, as always.
    std::fs::create_dir(f.flake.join("upp")).unwrap();
    let mut c = f.agentenv();
    c.args(["upp", "--", "true"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn untracked_flake_nix_is_named_with_a_git_add_hint() {
    let f = fixture!();
    let ok = std::process::Command::new("git")
        .arg("-C")
        .arg(&f.flake)
        .args(["rm", "-q", "--cached", "flake.nix"])
        .status()
        .unwrap();
    assert!(ok.success());
    let o = f.run_in(&["true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: {}/flake.nix is not tracked by git",
            f.flake.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: track it: `git add flake.nix`"), "{err}");
}

#[test]
fn a_run_beside_the_owner_of_the_nix_layer_says_its_nix_writes_are_dropped() {
    let f = fixture!();
    let id = f.up(&[]);
    // Another --network: not a run in the environment, a sandbox of its own beside it.
    let o = f.run_in_with(&["--network", "none"], &["true"]);
    f.down(&id);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("warning: another run of hello-"), "{err}");
    assert!(err.contains("/nix is dropped when it ends"), "{err}");
    assert!(err.contains("`agentenv up` and `agentenv exec`"), "{err}");
    // Alone, nothing is said.
    let o = f.run_in(&["true"]);
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_missing_dev_shell_lists_the_shells_and_hints_only_at_what_is_missing() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args([".#nosuch", "--", "true"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("has no dev shell 'nosuch'"), "{err}");
    assert!(err.contains("  devShells: default\n"), "{err}");
    assert!(err.contains("hint: pick one: `agentenv "), "{err}");
    assert!(
        !err.contains(".default` to the flake") && !err.contains("<system>.default"),
        "the default shell exists: {err}"
    );
    assert!(
        err.contains("or add `devShells.x86_64-linux.nosuch`") || !cfg!(target_arch = "x86_64"),
        "{err}"
    );
}

/// What the bash completion script gets from agentenv for the words `line`, the last one being
/// completed.
fn completions(f: &crate::support::Fixture, line: &[&str]) -> Vec<String> {
    let mut c = f.agentenv();
    c.env("COMPLETE", "bash")
        .env("_CLAP_IFS", "\n")
        .env("_CLAP_COMPLETE_INDEX", (line.len() - 1).to_string())
        .arg("--")
        .args(line);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(String::from).collect()
}

#[test]
fn completion_offers_verbs_running_environments_and_containers() {
    let f = fixture!();
    let verbs = completions(&f, &["agentenv", ""]);
    for v in ["up", "exec", "ls", "gc", "attach"] {
        assert!(verbs.iter().any(|c| c == v), "{verbs:?}");
    }
    assert!(!verbs.iter().any(|c| c == "__man"), "hidden: {verbs:?}");
    let id = f.up(&["--name", "completed-env"]);
    let envs = completions(&f, &["agentenv", "exec", "comp"]);
    let down = completions(&f, &["agentenv", "down", ""]);
    f.down(&id);
    assert_eq!(envs, vec!["completed-env".to_string()]);
    assert!(
        down.contains(&id) && down.contains(&"completed-env".to_string()),
        "{down:?}"
    );

    let rt = crate::runtime!(
        "completion_offers_verbs_running_environments_and_containers",
        crate::containers::Runtime::podman()
    );
    let c = rt.start(
        crate::containers::Image::Busybox,
        &[],
        &["/bin/sleep", "1000"],
    );
    let targets = completions(&f, &["agentenv", "attach", &c.name[..c.name.len() - 1]]);
    assert!(targets.contains(&c.name), "{targets:?}");
}

#[test]
fn manual_page_is_generated_from_the_command_line() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.arg("__man");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH agentenv 1"),
        "{page}"
    );
    for section in [
        "AGENTENV GC",
        "AGENTENV LS",
        "AGENTENV EXEC",
        "\\-\\-older\\-than",
    ] {
        assert!(page.contains(section), "no {section} in the page");
    }
    // The set-up script installs it.
    let script =
        std::fs::read_to_string(crate::support::repo_root().join("scripts/example.sh")).unwrap();
    assert!(
        script.contains("install_docs "),
        "scripts/example.sh installs the manual page"
    );
}
