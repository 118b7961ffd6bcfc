//! What a dispatched session sees of the host: the host itself by default, nothing of it with
//! `--isolated`, and, on a host that refuses user namespaces, an error naming
//! `--no-namespaces`, with which the session runs bare; and a terminal, where there is one here.
//! Real sshd hosts, as in `dispatch`.

use crate::dispatch::{host_fixture, Lab};
use crate::support::{stderr, stdout};

/// A file of the host's outside any home, and what a command prints of it, the host's name
/// and its processes' names.
const NOTE: &str = "/tmp/host-note";
const LOOK: &str =
    "cat /etc/hostname; cat /tmp/host-note; cat /proc/[0-9]*/comm; echo \"cwd=$PWD\"";

#[test]
fn dispatch_isolated_sees_neither_the_hosts_files_nor_its_processes() {
    host_fixture!("dispatch_isolated_sees_neither_the_hosts_files_nor_its_processes");
    let f = crate::fixture!();
    let mut lab = Lab::new("isolated");
    let host = lab.host(&[]);
    let o = lab.ssh(
        &host,
        &format!("echo host-secret > {NOTE}; cat /etc/hostname"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let hostname = stdout(&o).trim().to_string();
    assert!(!hostname.is_empty());

    // The default: the host's own files and processes.
    let o = lab.dispatch(&f, &host, &[], &["sh", "-c", &format!("{LOOK}; exit 3")]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&hostname), "{out}");
    assert!(out.contains("host-secret"), "{out}");
    assert!(out.contains("sshd"), "the host's sshd is in /proc: {out}");

    // Isolated: none of that; the toolbox at /nix, the work directory, a private /etc.
    let script = format!(
        "{LOOK}; hello; echo written-in-work > note && cat /work/note; echo \"home=$HOME\"; exit 4"
    );
    let o = lab.dispatch(&f, &host, &["--isolated"], &["sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains(&hostname), "the host's name is hidden: {out}");
    assert!(
        !out.contains("host-secret"),
        "the host's files are hidden: {out}"
    );
    assert!(
        !out.contains("sshd"),
        "the host's processes are hidden: {out}"
    );
    assert!(
        out.contains("agentenv\n"),
        "a generated /etc/hostname: {out}"
    );
    assert!(out.contains("cwd=/work\n"), "{out}");
    assert!(out.contains("home=/home/dev\n"), "{out}");
    assert!(
        out.contains("hello from the agentenv example"),
        "the toolbox runs from /nix: {out}"
    );
    assert!(out.contains("written-in-work"), "{out}");
    let err = stderr(&o);
    assert!(err.contains("No such file"), "{err}");

    // A command killed by a signal is 128+N inside the sandbox too.
    let o = lab.dispatch(&f, &host, &["--isolated"], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));

    // The session's store layer and work directory went with it.
    let left = lab.ssh(&host, "ls -A ~/.agentenv");
    assert_eq!(
        stdout(&left).split_whitespace().collect::<Vec<_>>(),
        ["bin", "nix"],
        "only the caches remain"
    );
}

/// A seccomp profile for Docker that allows every syscall but new user namespaces: unshare
/// and clone with CLONE_NEWUSER fail with EPERM, clone3 (whose flags a filter cannot see) is
/// unknown, so that C libraries fall back to clone.
const NO_USERNS_PROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    { "names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
      "args": [{ "index": 0, "value": 268435456, "valueTwo": 268435456, "op": "SCMP_CMP_MASKED_EQ" }] },
    { "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
      "args": [{ "index": 0, "value": 268435456, "valueTwo": 268435456, "op": "SCMP_CMP_MASKED_EQ" }] },
    { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
  ]
}"#;

#[test]
fn dispatch_where_user_namespaces_are_refused_runs_only_with_no_namespaces() {
    host_fixture!("dispatch_where_user_namespaces_are_refused_runs_only_with_no_namespaces");
    let f = crate::fixture!();
    let mut lab = Lab::new("nouserns");
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-userns.json");
    std::fs::write(&profile, NO_USERNS_PROFILE).unwrap();
    let host = lab.host_with_seccomp(profile.to_str().unwrap(), &[]);

    // Without the flag: an error, the fix on the host, and the flag.
    for args in [&[][..], &["--isolated"][..]] {
        let o = lab.dispatch(&f, &host, args, &["true"]);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("refused"), "{err}");
        assert!(err.contains("seccomp"), "how to allow them: {err}");
        assert!(err.contains("--no-namespaces"), "{err}");
    }

    // With it: the command runs on the host itself, with the toolbox's static tools on PATH
    // from agentenv's directory, and its exit code comes back; one warning says so.
    let o = lab.dispatch(
        &f,
        &host,
        &["--no-namespaces"],
        &[
            "sh",
            "-c",
            "test ! -e /nix && command -v busybox && busybox echo \"home=$HOME\" && cat /etc/hostname; exit 5",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("/home/dev/.agentenv/nix/store/"),
        "the toolbox's busybox, from agentenv's directory: {out}"
    );
    assert!(
        out.contains("home=/home/dev/.agentenv/sessions/"),
        "a private home: {out}"
    );
    let hostname = stdout(&lab.ssh(&host, "cat /etc/hostname"));
    assert!(out.contains(hostname.trim()), "the host's own /etc: {out}");
    let err = stderr(&o);
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(err.contains("--no-namespaces"), "{err}");

    // Nothing left: not the session, not the agent's scripts in /tmp, no process.
    let o = lab.dispatch(
        &f,
        &host,
        &["--no-namespaces"],
        &["sh", "-c", "sleep 30 & true"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let procs = lab.ssh(&host, "ps -u dev -o comm=");
    assert!(
        !stdout(&procs).lines().any(|c| c.trim() == "sleep"),
        "what the command left running ended with it: {}",
        stdout(&procs)
    );
    let left = lab.ssh(&host, "ls -A ~/.agentenv; ls -A /tmp");
    assert_eq!(
        stdout(&left).split_whitespace().collect::<Vec<_>>(),
        ["bin", "nix"],
        "only the caches remain"
    );
}

#[test]
fn dispatch_from_a_terminal_gets_one_on_the_host_with_its_size() {
    host_fixture!("dispatch_from_a_terminal_gets_one_on_the_host_with_its_size");
    let f = crate::fixture!();
    let mut lab = Lab::new("tty");
    let host = lab.host(&[]);
    // `script` gives agentenv a terminal of 33 rows and 101 columns.
    let base = f.agentenv();
    let mut c = std::process::Command::new("script");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(dir) = base.get_current_dir() {
        c.current_dir(dir);
    }
    let inner = format!(
        "stty rows 33 cols 101; exec {} dispatch dev@{} -- sh -c 'test -t 0 && test -t 1 && echo on-a-tty; stty size; exit 6'",
        base.get_program().to_string_lossy(),
        host.ip
    );
    c.env("AGENTENV_SSH", lab.ssh_command())
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null());
    let o = crate::support::run(c);
    let out = stdout(&o);
    assert!(out.contains("on-a-tty"), "{out}{}", stderr(&o));
    assert!(out.contains("33 101"), "the size went along: {out}");
    assert_eq!(o.status.code(), Some(6), "{out}{}", stderr(&o));
}
