//! `agentenv attach` with bad input: an unknown container (the running ones are listed), a
//! stopped one (its status is named), an ambiguous prefix (the candidates are listed), a dead
//! PID, a root without /proc, missing privilege (the capability is named), no toolbox, an
//! unknown user, ids out of range or not mapped. Each is one clear error, exit code 1 (2 for an
//! empty target, a usage error), no toolbox evaluated, and the target exactly as before.

use std::process::{Command, Output};

use crate::containers::{Container, Image, Runtime, Snapshot};
use crate::support::{run, skip, stderr, Fixture};
use crate::{fixture, runtime};

fn attach(f: &Fixture, args: &[&str]) -> Output {
    let mut c = f.agentenv();
    c.arg("attach").args(args).args(["--", "true"]);
    run(c)
}

/// The error is one message with hints, exit code 1, and nothing was done.
fn assert_refused(
    f: &Fixture,
    o: &Output,
    needles: &[&str],
    target: Option<(&Container, &Snapshot)>,
) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("hint: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in:\n{err}");
    }
    assert!(
        f.cache_entries().is_empty(),
        "a toolbox was evaluated: {err}"
    );
    if let Some((c, before)) = target {
        assert_eq!(&c.snapshot(), before);
        assert!(c.is_running());
    }
}

#[test]
fn unknown_container_lists_the_running_ones() {
    let rt = runtime!("unknown_container", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let o = attach(&f, &["agentenv-no-such-container"]);
    assert_refused(
        &f,
        &o,
        &[
            "no running container matches 'agentenv-no-such-container'",
            "running containers: ",
            &format!("{} ({}, podman)", c.name, &c.id[..12]),
        ],
        None,
    );
}

#[test]
fn ambiguous_prefix_lists_the_candidates() {
    let rt = runtime!("ambiguous_prefix", Runtime::podman());
    let f = fixture!();
    let a = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let b = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = a.snapshot();
    let prefix = format!("agentenv-attach-{}-", std::process::id());
    let o = attach(&f, &[&prefix]);
    assert_refused(
        &f,
        &o,
        &[
            &format!("cannot attach to '{prefix}': "),
            " running containers match",
            "candidates: ",
            &a.name,
            &b.name,
            "use a longer id or the full name",
        ],
        Some((&a, &before)),
    );
}

#[test]
fn dead_pid_is_refused() {
    let f = fixture!();
    if !crate::support::is_root() {
        skip(
            concat!(module_path!(), "::dead_pid"),
            "attaching needs root",
        );
        return;
    }
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let o = attach(&f, &[&format!("pid:{pid}")]);
    assert_refused(&f, &o, &[&format!("no process {pid} is running")], None);
    let o = attach(&f, &["pid:nope"]);
    assert_refused(&f, &o, &["'pid:nope' is not a process id"], None);
}

#[test]
fn missing_privilege_names_the_capability() {
    let rt = runtime!("missing_privilege", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::support::agentenv_bin())
        .args(["attach", &c.name, "--", "true"])
        .env("AGENTENV_HOME", &f.state)
        .env("NIX_CONFIG", &f.nix_config)
        .current_dir(&f.flake);
    let o = run(cmd);
    assert_refused(
        &f,
        &o,
        &["attaching needs CAP_SYS_ADMIN", "sudo agentenv attach"],
        Some((&c, &before)),
    );
}

#[test]
fn no_toolbox_asks_for_a_flake() {
    let rt = runtime!("no_toolbox", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    let mut cmd = f.agentenv();
    cmd.current_dir(f.tmp.path())
        .args(["attach", &c.name, "--", "true"]);
    let o = run(cmd);
    assert_refused(
        &f,
        &o,
        &["no toolbox: no flake.nix in", "--flake"],
        Some((&c, &before)),
    );
}

#[test]
fn unknown_user_is_refused() {
    let rt = runtime!("unknown_user", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    let o = attach(&f, &["--user", "nobody-here", &c.name]);
    assert_refused(
        &f,
        &o,
        &[
            "no user 'nobody-here' in the target's /etc/passwd",
            "--user 1000",
        ],
        Some((&c, &before)),
    );
}

#[test]
fn ids_out_of_range_are_refused() {
    let rt = runtime!("ids_out_of_range", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    // 4294967295 is -1 to setresuid, which would leave the session root.
    for (spec, what) in [
        ("4294967295:1000", "user id 4294967295"),
        ("1000:4294967295", "group id 4294967295"),
        ("99999999999", "user id 99999999999"),
    ] {
        let o = attach(&f, &["--user", spec, &c.name]);
        assert_refused(
            &f,
            &o,
            &[&format!("{what} is out of range"), "0 to 4294967294"],
            Some((&c, &before)),
        );
    }
}

#[test]
fn ids_the_targets_user_namespace_does_not_map_are_named() {
    let rt = runtime!("unmapped_user", Runtime::rootless_podman());
    let f = fixture!();
    let c = rt.start(
        Image::Busybox,
        &["--network", "none"],
        &["/bin/sleep", "1000"],
    );
    let before = c.snapshot();
    let o = attach(&f, &["--user", "70000", &format!("pid:{}", c.pid)]);
    assert_refused(
        &f,
        &o,
        &[
            "uid 70000 is not mapped in the target's user namespace",
            "it maps uids 0-",
        ],
        Some((&c, &before)),
    );
}

#[test]
fn a_stopped_container_is_named_with_its_status() {
    let rt = runtime!("stopped", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let mut stop = rt.cli();
    stop.args(["stop", "-t", "0", &c.id]);
    assert!(run(stop).status.success());
    let o = attach(&f, &[&c.name]);
    assert_refused(
        &f,
        &o,
        &[
            &format!(
                "container {} ({}, podman) exists but is not running (Exited",
                c.name,
                &c.id[..12]
            ),
            &format!("podman start {}", c.name),
        ],
        None,
    );
}

#[test]
fn a_target_whose_root_has_no_proc_is_refused() {
    let f = fixture!();
    if !crate::support::is_root() {
        skip(
            concat!(module_path!(), "::root_without_proc"),
            "chroot and attaching need root",
        );
        return;
    }
    let root = f.tmp.path().join("chroot");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox");
    let root = root.canonicalize().unwrap();
    let mut sleeper = Command::new("chroot")
        .arg(&root)
        .args(["/bin/busybox", "sleep", "60"])
        .spawn()
        .unwrap();
    // Until chroot has exec'd busybox, the process's root is still the host's.
    let pid = sleeper.id();
    let rooted = format!("/proc/{pid}/root");
    for _ in 0..100 {
        if std::fs::read_link(&rooted).is_ok_and(|r| r == root) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = attach(&f, &[&format!("pid:{pid}")]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_refused(
        &f,
        &o,
        &[
            &format!("the root of process {pid} has no /proc"),
            "mount -t proc",
        ],
        None,
    );
}

#[test]
fn an_empty_target_is_a_usage_error() {
    let f = fixture!();
    let o = attach(&f, &[""]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("TARGET"), "{err}");
    assert!(f.cache_entries().is_empty());
}
