//! Rootless: an unprivileged user gets the same environment through a user namespace, with
//! nix reached through the daemon.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::fixture;
use crate::support::{run, skip, stderr, stdout};

/// The unprivileged account scripts/test.sh creates (member of nix-users).
const TEST_USER: &str = "agentenv-test";

#[test]
fn unprivileged_user_gets_the_dev_shell() {
    let f = fixture!();
    let mut cmd;
    let uid;
    if crate::support::is_root() {
        let Some(user) = nix::unistd::User::from_name(TEST_USER).ok().flatten() else {
            skip(
                module_path!(),
                &format!("no user {TEST_USER} (scripts/test.sh creates it)"),
            );
            return;
        };
        if !std::path::Path::new("/nix/var/nix/daemon-socket/socket").exists() {
            skip(
                module_path!(),
                "nix-daemon is not running (scripts/test.sh starts it)",
            );
            return;
        }
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(f.tmp.path())
            .status()
            .unwrap();
        assert!(chown.success());
        uid = user.uid.as_raw();
        cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .arg("env")
            .arg(format!("HOME={}", f.tmp.path().join("home").display()))
            .arg(format!("USER={TEST_USER}"))
            .arg("NIX_REMOTE=daemon")
            .arg(crate::support::agentenv_bin());
        std::fs::create_dir_all(f.tmp.path().join("home")).unwrap();
        Command::new("chown")
            .arg(format!("{uid}"))
            .arg(f.tmp.path().join("home"))
            .status()
            .unwrap();
    } else {
        uid = nix::unistd::geteuid().as_raw();
        cmd = Command::new(crate::support::agentenv_bin());
    }
    cmd.env("AGENTENV_HOME", &f.state)
        .env("NIX_CONFIG", &f.nix_config)
        .current_dir(&f.flake)
        .args([".", "--", "sh", "-c", "id -u; echo $GREETING; echo x > made-rootless; (echo x > /nix/store/nope) 2>/dev/null || echo store-read-only; hello_greet 2>/dev/null; echo end"]);
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
