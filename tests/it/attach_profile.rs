//! `agentenv attach --profile`: the profile's dotfiles, skills and `bin/` in a private home
//! shown at the session's `$HOME`, the profile at its own path, and nothing of either ever in
//! the target: not in its view while a session runs, not in its files or mounts after; in a
//! read-only container, one that lacks its `$HOME`, and a rootless one.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::containers::{Container, Image, Runtime};
use crate::support::{run, spawn_until_ready, stderr, stdout, wait_output, Fixture, Pty};
use crate::{fixture, runtime};

/// A copy of examples/profile (without its `tools`: their flake needs nixpkgs) with a dotfile
/// only its owner may read, and an activate.sh that records the home it ran with.
fn profile_copy(f: &Fixture) -> PathBuf {
    let dir = f.profile_copy_without_tools();
    std::fs::write(
        dir.join("activate.sh"),
        "#!/bin/sh\necho hook-output\necho \"$HOME\" > \"$HOME/.hook-seen\"\n",
    )
    .unwrap();
    let secret = dir.join("home/.secret");
    std::fs::write(&secret, "owner-only\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    dir
}

fn with_profile(f: &Fixture, p: &Path, target: &str, opts: &[&str], script: &str) -> Output {
    let mut c = f.attach_cmd(target, opts, &["sh", "-c", script]);
    c.env("AGENTENV_PROFILE", p);
    run(c)
}

/// What a session shows of the profile: where ~/.bashrc leads and its first line, the skills,
/// the profile's own tool and variables, the 0600 dotfile, and PATH.
const SHOW: &str = "readlink ~/.bashrc; head -n 1 ~/.bashrc; ls ~/.claude/skills ~/.codex/skills; \
                    readlink ~/.config/nvim/init.lua; hello-profile; echo \"$EDITOR $HOME\"; \
                    cat ~/.secret; echo \"$PATH\"";

fn assert_shows_profile(out: &str, p: &Path, home: &str, target_path: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 12, "{out}");
    assert_eq!(
        lines[0],
        p.join("home/.bashrc").display().to_string(),
        "{out}"
    );
    assert!(
        lines[1].starts_with("# ~/.bashrc from the profile"),
        "{out}"
    );
    assert_eq!(lines[3], "commit-message", "{out}");
    assert_eq!(lines[6], "commit-message", "{out}");
    assert_eq!(lines[7], p.join("editor/init.lua").display().to_string());
    assert_eq!(
        lines[8],
        format!("hello from the profile at {}", p.display())
    );
    assert_eq!(lines[9], format!("nvim {home}"));
    assert_eq!(lines[10], "owner-only");
    let path = lines[11];
    let bin = format!(":{}/bin:", p.display());
    assert!(
        path.starts_with(target_path),
        "the target's PATH first: {path}"
    );
    let after_target = path.find(&bin).is_some_and(|i| i + 1 >= target_path.len());
    assert!(
        after_target,
        "the profile's bin/ after the target's PATH: {path}"
    );
}

fn end_session(session: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(session.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = wait_output(session);
}

/// Nothing of the profile or the private home in the target's view.
fn assert_target_sees_nothing(c: &Container, p: &Path, home: &str) {
    let root = PathBuf::from(format!("/proc/{}/root", c.pid));
    assert!(!root.join(p.strip_prefix("/").unwrap()).exists());
    let home = root.join(home.trim_start_matches('/'));
    assert!(!home.join(".bashrc").exists() && !home.join(".claude").exists());
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.pid)).unwrap();
    assert!(!mountinfo.contains("attach-homes") && !mountinfo.contains("/config "));
}

fn homes(f: &Fixture) -> Vec<PathBuf> {
    crate::support::list(&f.state.join("data/attach-homes"))
}

#[test]
fn profile_is_in_the_session_and_never_in_the_target() {
    let rt = runtime!("never_in_the_target", Runtime::podman());
    let f = fixture!();
    let p = profile_copy(&f);
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    // The home of a target that is gone, left by an earlier attach: removed by the next one.
    let stale = f.state.join("data/attach-homes/999999999-1-abcd/home");
    std::fs::create_dir_all(&stale).unwrap();
    let before = c.snapshot();

    let script = format!("{SHOW}; echo from-session > ~/note; echo ready; exec sleep 60");
    let profile_arg = p.to_string_lossy();
    let cmd = f.attach_cmd(
        &c.name,
        &["--profile", &profile_arg],
        &["sh", "-c", &script],
    );
    let (session, out) = spawn_until_ready(cmd);
    let target_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:";
    assert_shows_profile(&out, &p, "/root", target_path);
    assert!(
        !out.contains("hook-output"),
        "activate.sh's output is not the session's: {out}"
    );
    assert_target_sees_nothing(&c, &p, "/root");
    let seen = c.exec(&["ls", "-A", "/root"]);
    assert_eq!(stdout(&seen), "", "the target's /root is its own");
    assert_eq!(c.snapshot(), before, "nothing changes while a session runs");
    end_session(session);
    assert_target_sees_nothing(&c, &p, "/root");
    assert_eq!(c.snapshot(), before, "the target is exactly as before");
    assert!(c.is_running());

    // The same target again ($AGENTENV_PROFILE): the same home; with --no-profile, the
    // target's own /root.
    assert!(!stale.exists(), "the stale home is gone");
    assert_eq!(homes(&f).len(), 1);
    let o = with_profile(&f, &p, &c.name, &[], "cat ~/note");
    assert_eq!(stdout(&o), "from-session\n", "{}", stderr(&o));
    // activate.sh ran in the target, with the home the session sees.
    let o = with_profile(&f, &p, &c.name, &[], "cat ~/.hook-seen");
    assert_eq!(stdout(&o), "/root\n", "{}", stderr(&o));
    let o = with_profile(
        &f,
        &p,
        &c.name,
        &["--no-profile"],
        "ls -A ~; echo \"${AGENTENV_PROFILE:-none}\"",
    );
    assert_eq!(stdout(&o), "none\n", "{}", stderr(&o));

    // An interactive shell runs the profile's init; its history stays in the private home.
    let mut cmd = f.agentenv();
    cmd.args(["attach", "--profile", &profile_arg, &c.name]);
    let mut pty = Pty::spawn(cmd);
    pty.expect(&format!("(agentenv:{})", c.name));
    pty.send("alias ll\nexit 0\n");
    assert!(pty.wait().success(), "{}", pty.text());
    assert!(pty.text().contains("alias ll='ls -alF'"), "{}", pty.text());
    assert_eq!(c.snapshot(), before);
}

#[test]
fn read_only_container_lacking_the_home_that_holds_the_profile() {
    let rt = runtime!("read_only", Runtime::podman());
    let f = fixture!();
    let p = profile_copy(&f);
    // $HOME is the profile's parent: its mount point is made in the private home.
    let home = p.parent().unwrap().to_string_lossy().into_owned();
    let c = rt.start(
        Image::Busybox,
        &["--read-only", "-e", &format!("HOME={home}")],
        &["/bin/sleep", "1000"],
    );
    assert!(c.exec(&["touch", "/tmp/of-the-target"]).status.success());
    let before = c.snapshot();
    let script =
        format!("{SHOW}; ls ~; ls /tmp; (touch /tmp/x) 2>/dev/null || echo tmp-stays-read-only");
    let o = with_profile(&f, &p, &c.name, &[], &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_shows_profile(&out, &p, &home, "/usr/local/sbin:");
    let tail: Vec<&str> = out.lines().skip(12).collect();
    let tmp_entry = p.parent().unwrap().file_name().unwrap().to_string_lossy();
    let listed = [
        "config",
        tmp_entry.as_ref(),
        "of-the-target",
        "tmp-stays-read-only",
    ];
    assert_eq!(tail, listed, "{out}");
    assert_target_sees_nothing(&c, &p, &home);
    assert_eq!(c.snapshot(), before);
    assert!(c.is_running());
}

#[test]
fn rootless_container_owns_its_home_and_reads_the_profile() {
    let rt = runtime!("rootless", Runtime::rootless_podman());
    let f = fixture!();
    let p = profile_copy(&f);
    // Its $HOME does not exist: the mount point is made in a mirror of /home.
    let c = rt.start(
        Image::Busybox,
        &["--read-only", "--network", "none", "-e", "HOME=/home/app"],
        &["/bin/sleep", "1000"],
    );
    let before = c.snapshot();
    let target = format!("pid:{}", c.pid);
    let script = format!(
        "{SHOW}; id -u; stat -c %u:%g ~ ~/.secret; echo x > ~/note && cat ~/note; ls /home"
    );
    let o = with_profile(&f, &p, &target, &[], &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_shows_profile(&out, &p, "/home/app", "/usr/local/sbin:");
    let tail: Vec<&str> = out.lines().skip(12).collect();
    assert_eq!(
        tail,
        ["0", "0:0", "0:0", "x", "ana", "app"],
        "root of the container owns them: {out}"
    );

    let o = with_profile(
        &f,
        &p,
        &target,
        &["--user", "ana"],
        "id -u; stat -c %u ~; touch ~/made && echo made; cat ~/.bashrc | head -n 1",
    );
    assert_eq!(
        stdout(&o),
        "1000\n1000\nmade\n# ~/.bashrc from the profile (linked, so edits to the profile show at once).\n",
        "{}",
        stderr(&o)
    );
    assert_target_sees_nothing(&c, &p, "/home/app");
    assert_eq!(c.snapshot(), before);
    assert!(c.is_running());
}

#[test]
fn what_activate_sh_leaves_running_cannot_write_to_the_caller_after_it() {
    let rt = runtime!("hook_leftovers", Runtime::podman());
    let f = fixture!();
    let p = profile_copy(&f);
    std::fs::write(
        p.join("activate.sh"),
        "#!/bin/sh\necho hook-output\n(sleep 2; echo LATE-FROM-HOOK >&2) &\n",
    )
    .unwrap();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    // `run` reads stdout and stderr to their end: a leftover holding stderr would be heard.
    let o = with_profile(&f, &p, &c.name, &[], "echo command-ran");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "command-ran\n");
    assert!(stderr(&o).contains("hook-output"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("LATE-FROM-HOOK"), "{}", stderr(&o));
}
