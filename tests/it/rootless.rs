//! Rootless: an unprivileged user gets the same environment through a user namespace, with
//! nix reached through the daemon.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::fixture;
use crate::support::{run, skip, stderr, stdout, Fixture};

/// The unprivileged account scripts/test.sh creates (member of nix-users).
const TEST_USER: &str = "agentenv-test";

/// agentenv as an unprivileged user: the test user when the tests run as root, else the
/// current user. `None` (after a loud skip) if that cannot be arranged.
pub(crate) fn unprivileged<'a>(
    f: &'a Fixture,
    test: &str,
) -> Option<(Box<dyn Fn() -> Command + 'a>, u32)> {
    if !crate::support::is_root() {
        let uid = nix::unistd::geteuid().as_raw();
        let make = move || {
            let mut c = Command::new(crate::support::agentenv_bin());
            c.env("AGENTENV_HOME", &f.state)
                .env("NIX_CONFIG", &f.nix_config)
                .current_dir(&f.flake);
            c
        };
        return Some((Box::new(make), uid));
    }
    let Some(user) = nix::unistd::User::from_name(TEST_USER).ok().flatten() else {
        skip(
            test,
            &format!("no user {TEST_USER} (scripts/test.sh creates it)"),
        );
        return None;
    };
    if std::os::unix::net::UnixStream::connect("/nix/var/nix/daemon-socket/socket").is_err() {
        skip(
            test,
            "nix-daemon does not answer on its socket (scripts/test.sh starts it)",
        );
        return None;
    }
    let home = f.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(f.tmp.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let uid = user.uid.as_raw();
    let make = move || {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .arg("env")
            .arg(format!("HOME={}", home.display()))
            .arg(format!("USER={TEST_USER}"))
            .arg("NIX_REMOTE=daemon")
            .arg(crate::support::agentenv_bin())
            .env("AGENTENV_HOME", &f.state)
            .env("NIX_CONFIG", &f.nix_config)
            .current_dir(&f.flake);
        c
    };
    Some((Box::new(make), uid))
}

#[test]
fn unprivileged_user_gets_the_dev_shell() {
    let f = fixture!();
    let Some((agentenv, uid)) = unprivileged(&f, module_path!()) else {
        return;
    };
    let mut cmd = agentenv();
    cmd.args([".", "--", "sh", "-c", "id -u; echo $GREETING; echo x > made-rootless; (echo x > /nix/store/nope) 2>/dev/null || echo store-read-only; echo end"]);
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{uid}\nhello from the agentenv example\nstore-read-only\nend\n"),
        "{}",
        stderr(&o)
    );
    let made = std::fs::metadata(f.flake.join("made-rootless")).unwrap();
    assert_eq!(made.uid(), uid, "project files belong to the caller");
}

#[test]
fn unprivileged_user_keeps_an_environment_up() {
    let f = fixture!();
    let Some((agentenv, uid)) = unprivileged(&f, module_path!()) else {
        return;
    };
    let mut up = agentenv();
    up.arg("up");
    let o = run(up);
    assert!(o.status.success(), "up: {}", stderr(&o));
    let id = stdout(&o).lines().last().unwrap().to_string();
    let mut exec = agentenv();
    exec.args(["exec", &id, "--", "sh", "-c", "id -u; echo $GREETING"]);
    let o = run(exec);
    assert_eq!(
        stdout(&o),
        format!("{uid}\nhello from the agentenv example\n"),
        "{}",
        stderr(&o)
    );
    let mut down = agentenv();
    down.args(["down", &id]);
    let o = run(down);
    assert!(o.status.success(), "down: {}", stderr(&o));
}
