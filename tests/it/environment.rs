//! The environment inside is the one `nix develop` gives: variables byte for byte, the stdenv
//! setup's effects, the shellHook, and in an interactive shell the arrays and functions too.

use std::collections::BTreeMap;
use std::process::Command;

use crate::fixture;
use crate::support::{run, stderr, Fixture, Pty};

/// Variables that differ by design: the caller's own (nix develop passes the caller's whole
/// environment; a sandbox does not), the sandbox's, and per-run temp dirs.
const RUNTIME_VARS: &[&str] = &[
    "HOME",
    "SHLVL",
    "_",
    "TMP",
    "TMPDIR",
    "TEMP",
    "TEMPDIR",
    "NIX_BUILD_TOP",
    "NIX_GCROOT",
    "PATH",
    "AGENTENV_HOME",
    // nix 2.8's script keeps the builder's SHELL (/usr/sbin/nologin); agentenv sets the
    // environment's bash (checked below).
    "SHELL",
];

fn environ(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// A clean caller environment, the same for nix develop and agentenv.
fn clean(cmd: &mut Command, f: &Fixture, home: &std::path::Path) {
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap())
        .env("NIX_CONFIG", &f.nix_config)
        .env("AGENTENV_HOME", &f.state)
        .env("TERM", "dumb");
}

#[test]
fn command_environment_matches_nix_develop() {
    let f = fixture!();
    let home = f.tmp.path().join("caller-home");
    std::fs::create_dir_all(&home).unwrap();

    let mut nix = f.nix();
    nix.args(["develop", ".", "--command", "cat", "/proc/self/environ"]);
    clean(&mut nix, &f, &home);
    let expected = run(nix);
    assert!(
        expected.status.success(),
        "nix develop: {}",
        stderr(&expected)
    );

    let mut ours = f.agentenv();
    ours.args([".", "--", "cat", "/proc/self/environ"]);
    clean(&mut ours, &f, &home);
    let got = run(ours);
    assert!(got.status.success(), "agentenv: {}", stderr(&got));

    let (expected, got) = (environ(&expected.stdout), environ(&got.stdout));
    assert!(expected.contains_key("HELLO_SETUP_DONE") && expected.contains_key("HELLO_HOOK_RAN"));
    for (k, v) in &expected {
        if RUNTIME_VARS.contains(&k.as_str()) {
            continue;
        }
        assert_eq!(got.get(k), Some(v), "variable {k}");
    }
    // PATH: the dev shell's part is the same; what follows is the caller's PATH for nix
    // develop, and the sandbox's (empty but for sh and env) for agentenv.
    let caller_path = std::env::var("PATH").unwrap();
    let dev_path = expected["PATH"]
        .strip_suffix(&format!(":{caller_path}"))
        .unwrap();
    assert_eq!(got["PATH"], format!("{dev_path}:/usr/bin:/bin"));
    for tmp in ["TMPDIR", "NIX_BUILD_TOP"] {
        assert!(
            got[tmp].starts_with("/tmp/nix-shell."),
            "{tmp}={}",
            got[tmp]
        );
    }
    // SHELL is a bash of the environment that exists inside.
    assert!(
        got["SHELL"].starts_with("/nix/store/") && got["SHELL"].ends_with("/bin/bash"),
        "SHELL={}",
        got["SHELL"]
    );
}

/// Runs an interactive shell on a pty, sends `script`, and returns what it printed between
/// two markers (the markers are split in the script so that its echo does not match).
fn interactive(cmd: Command, script: &str) -> (String, String) {
    let mut pty = Pty::spawn(cmd);
    pty.send(&format!(
        "printf '%s\\n' BEGIN\"\"MARK; {script}; printf '%s\\n' END\"\"MARK; exit 0\n"
    ));
    let status = pty.wait();
    let text = pty.text().replace("\r\n", "\n");
    assert!(status.success(), "{text}");
    let start = text.rfind("BEGINMARK\n").expect("begin marker") + "BEGINMARK\n".len();
    let end = text.rfind("ENDMARK\n").expect("end marker");
    (text[start..end].to_string(), text)
}

#[test]
fn interactive_shell_matches_nix_develop_with_arrays_and_functions() {
    let f = fixture!();
    let home = f.tmp.path().join("caller-home");
    std::fs::create_dir_all(&home).unwrap();
    let script = "declare -p hello_phases hello_colors GREETING HELLO_SETUP_DONE HELLO_HOOK_RAN; declare -f hello_greet; hello_greet";

    let mut nix = f.nix();
    nix.args(["develop", "."]);
    clean(&mut nix, &f, &home);
    let (expected, _) = interactive(nix, script);
    assert!(expected.contains("declare -a hello_phases="), "{expected}");

    let mut ours = f.agentenv();
    ours.arg(".");
    clean(&mut ours, &f, &home);
    let (got, whole) = interactive(ours, script);
    assert_eq!(got, expected);
    assert!(
        whole.contains("(agentenv:hello)"),
        "the prompt says where you are:\n{whole}"
    );
}

#[test]
fn interactive_shell_has_job_control_and_a_terminal() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.arg(".");
    let (got, whole) = interactive(
        c,
        "case $- in *m*) echo job-control;; esac; sleep 5 & jobs; kill %1; tty",
    );
    assert!(got.contains("job-control\n"), "{whole}");
    assert!(got.contains("Running"), "{whole}");
    assert!(
        got.contains("/dev/console\n"),
        "ttyname finds the terminal: {whole}"
    );
}

#[test]
fn bash_variable_names_the_running_bash_as_in_nix_develop() {
    let f = fixture!();
    let home = f.tmp.path().join("caller-home");
    std::fs::create_dir_all(&home).unwrap();
    let script = "if test \"$BASH\" -ef /proc/$$/exe; then echo BASH-is-the-shell; else echo \"BASH=$BASH\"; fi";
    let piped = |mut cmd: Command| {
        use std::io::Write;
        clean(&mut cmd, &f, &home);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{script}\n").as_bytes()).unwrap();
        drop(stdin);
        crate::support::wait_output(child)
    };
    let mut nix = f.nix();
    nix.args(["develop", "."]);
    let expected = piped(nix);
    assert_eq!(crate::support::stdout(&expected), "BASH-is-the-shell\n");
    let mut ours = f.agentenv();
    ours.arg(".");
    let got = piped(ours);
    assert_eq!(
        crate::support::stdout(&got),
        "BASH-is-the-shell\n",
        "{}",
        stderr(&got)
    );
    // In the interactive shell too.
    let mut ours = f.agentenv();
    ours.arg(".");
    clean(&mut ours, &f, &home);
    let (got, _) = interactive(ours, script);
    assert_eq!(got.trim_end(), "BASH-is-the-shell");
}
