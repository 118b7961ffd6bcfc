//! Bad input: a clear message naming the problem and the fix, exit code 1, and no state left
//! behind (no cache entry, no environment directory).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::fixture;
use crate::support::{run, stderr, Fixture};

fn assert_clean_failure(f: &Fixture, o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in:\n{err}");
    }
    assert!(
        f.cache_entries().is_empty(),
        "a cache entry was left: {err}"
    );
    assert!(f.envs().is_empty(), "an environment was left: {err}");
}

#[test]
fn path_that_does_not_exist() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args(["no/such/dir", "--", "true"]);
    let o = run(c);
    assert_clean_failure(&f, &o, &["no such directory", "no/such/dir", "hint:"]);
}

#[test]
fn directory_in_no_flake() {
    let f = fixture!();
    let lonely = f.tmp.path().join("lonely");
    std::fs::create_dir_all(lonely.join(".git")).unwrap();
    let mut c = f.agentenv();
    c.arg(&lonely).args(["--", "true"]);
    let o = run(c);
    assert_clean_failure(&f, &o, &["no flake.nix in", "nix flake init"]);
}

#[test]
fn flake_that_fails_to_evaluate_shows_nixs_error() {
    let f = fixture!();
    f.edit_flake(
        "GREETING = ",
        "GREETING = undefined-variable-here; IGNORED = ",
    );
    let o = f.run_in(&["true"]);
    assert_clean_failure(
        &f,
        &o,
        &[
            "nix could not evaluate",
            "undefined variable 'undefined-variable-here'",
        ],
    );
}

#[test]
fn flake_with_no_such_dev_shell_lists_what_it_has() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args([".#nope", "--", "true"]);
    let o = run(c);
    assert_clean_failure(
        &f,
        &o,
        &[
            "has no dev shell 'nope'",
            "devShells: default",
            "packages: tools",
            "agentenv",
        ],
    );
}

#[test]
fn nix_not_installed_says_how_to_install_it() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.env("PATH", "/nonexistent").args([".", "--", "true"]);
    let o = run(c);
    assert_clean_failure(&f, &o, &["nix is not installed", "apt-get install nix-bin"]);
}

#[test]
fn a_nix_daemon_that_does_not_answer_is_named() {
    let f = fixture!();
    let mut c = f.agentenv();
    let socket = f.tmp.path().join("no-daemon.sock");
    c.env("NIX_REMOTE", format!("unix://{}", socket.display()))
        .args([".", "--", "true"]);
    let o = run(c);
    assert_clean_failure(
        &f,
        &o,
        &["cannot connect to socket", "nix-daemon is not running"],
    );
}

#[test]
fn refused_user_namespaces_name_the_sysctl() {
    let f = fixture!();
    if !crate::support::is_root() {
        crate::support::skip(
            module_path!(),
            "needs root to lower user.max_user_namespaces in a namespace of its own",
        );
        return;
    }
    // Warm the cache as root, then, in a user namespace of the test's own whose limit of
    // nested user namespaces is 0, run agentenv as an unprivileged uid.
    let chmod = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(f.tmp.path())
        .status()
        .unwrap();
    assert!(chmod.success());
    assert!(f.run_in(&["true"]).status.success());
    let chmod = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&f.state)
        .status()
        .unwrap();
    assert!(chmod.success());
    let envs_before = f.envs();
    let uid = 65534;
    let script = format!(
        // sh gains root's capabilities in the namespace only by exec'ing once the maps exist.
        "read go && exec sh -c \"echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --reuid={uid} --regid={uid} --clear-groups env HOME=/tmp '{}' . -- true\"",
        crate::support::agentenv_bin().display()
    );
    let mut outer = Command::new("unshare");
    outer
        .args(["--user", "--", "sh", "-c", &script])
        .current_dir(&f.flake)
        .env("AGENTENV_HOME", &f.state)
        .env("NIX_CONFIG", &f.nix_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = outer.spawn().unwrap();
    // Map uids 0-65535 to themselves once the child is in its user namespace.
    let pid = child.id();
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|ns| ns == own) {
        assert!(start.elapsed().as_secs() < 10, "unshare did not start");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536\n").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536\n").unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = crate::support::wait_output(child);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("user.max_user_namespaces = 0"), "{err}");
    assert!(err.contains("sysctl"), "{err}");
    assert_eq!(f.envs(), envs_before, "nothing new was created");
}

#[test]
fn a_project_the_user_cannot_read_is_named_not_called_missing() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = root.join("locked");
    std::fs::create_dir_all(locked.join("sub")).unwrap();
    std::fs::write(locked.join("flake.nix"), "{}").unwrap();
    // Owned by whoever runs the tests, and shut to the user agentenv runs as: as root, the
    // unprivileged test user (root reads everything); otherwise this user, with mode 000.
    let as_user = |arg: &Path| {
        let mut c = Command::new(crate::support::agentenv_bin());
        if crate::support::is_root() {
            let user = nix::unistd::User::from_name("agentenv-test")
                .ok()
                .flatten()?;
            c = Command::new("setpriv");
            c.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--init-groups")
                .arg(crate::support::agentenv_bin());
        }
        c.arg(arg)
            .args(["--", "true"])
            .env("HOME", &root)
            .env("AGENTENV_HOME", root.join("state"))
            .current_dir("/");
        Some(run(c))
    };
    let mode = if crate::support::is_root() {
        0o700
    } else {
        0o000
    };
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(mode)).unwrap();
    for arg in [locked.clone(), locked.join("sub")] {
        let Some(o) = as_user(&arg) else {
            crate::support::skip(
                module_path!(),
                "no user agentenv-test (scripts/test.sh creates it)",
            );
            return;
        };
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let want = format!(
            "error: cannot read {}: permission denied\n",
            locked.display()
        );
        assert!(err.starts_with(&want), "{}: {err}", arg.display());
        assert!(err.contains("hint: "), "{err}");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
}
