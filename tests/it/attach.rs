//! `agentenv attach` against real containers: the toolbox works in a read-only container with
//! no shell and no libc, next to a store of the target's own, in a rootless container and in
//! docker; the target's mounts, files and fds are the same after a session, its processes never
//! see the toolbox, and it keeps running.

use std::process::{Command, Output};
use std::time::Duration;

use crate::containers::{Image, Runtime, TARGET_TOOL};
use crate::support::{run, skip, spawn_until_ready, stderr, stdout, wait_output, Fixture, Pty};
use crate::{fixture, runtime};

fn attach(f: &Fixture, target: &str, cmd: &[&str]) -> Output {
    run(f.attach_cmd(target, &[], cmd))
}

#[test]
fn read_only_container_without_shell_or_libc_gets_the_toolbox() {
    let rt = runtime!("read_only_container", Runtime::podman());
    let f = fixture!();
    let c = rt.start(
        Image::NoShell,
        &["--read-only", "-e", "FROM_TARGET=kept", "-w", "/tmp"],
        &["/sleep", "1000"],
    );
    let before = c.snapshot();
    let script = "echo \"$FROM_TARGET\"; pwd; hostname; echo \"$PATH\"; ls /; echo \"$GREETING\"; \
                  tr '\\0' ' ' < /proc/1/cmdline; echo; \
                  (touch /made-here) 2>/dev/null || echo root-stays-read-only; exit 7";
    let o = attach(&f, &c.name, &["sh", "-c", script]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "kept", "the target's variables are kept: {out}");
    assert_eq!(lines[1], "/tmp", "the target's working directory: {out}");
    assert_eq!(lines[2], &c.id[..12], "the target's hostname: {out}");
    let target_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:";
    assert!(
        lines[3].starts_with(target_path),
        "target PATH first: {out}"
    );
    assert!(lines[3].contains("-hello-tools/bin"), "{out}");
    assert!(
        out.contains("\nnix\n") && out.contains("\nsleep\n"),
        "{out}"
    );
    assert!(out.contains("hello from the agentenv example\n"), "{out}");
    assert!(
        out.contains("/sleep 1000 \n"),
        "the target's PID namespace: {out}"
    );
    assert!(out.ends_with("root-stays-read-only\n"), "{out}");
    assert_eq!(c.snapshot(), before, "the target is exactly as before");
    assert!(c.is_running());
}

#[test]
fn target_with_its_own_store_sees_both_stores() {
    let rt = runtime!("own_store", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::OwnNix, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    let script = format!(
        "{TARGET_TOOL}; echo \"$GREETING\"; (touch /nix/store/x) 2>/dev/null || echo store-read-only"
    );
    let o = attach(&f, &c.name, &["sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "target-tool-ok\nhello from the agentenv example\nstore-read-only\n"
    );
    let own: Vec<_> = std::fs::read_dir(format!("/proc/{}/root/nix/store", c.pid))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(own.len(), 1, "the target's store is only its own: {own:?}");
    assert_eq!(c.snapshot(), before);
}

#[test]
fn target_never_sees_the_toolbox_and_is_unchanged_after_detach() {
    let rt = runtime!("no_trace", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    let cmd = f.attach_cmd(&c.name, &[], &["sh", "-c", "echo ready; exec sleep 60"]);
    let (session, before_ready) = spawn_until_ready(cmd);
    assert_eq!(before_ready, "", "the session printed nothing else first");

    // While attached: nothing of ours in the target's view.
    let root = format!("/proc/{}/root", c.pid);
    assert!(!std::path::Path::new(&root).join("nix").exists());
    let seen = c.exec(&["ls", "/nix"]);
    assert!(
        !seen.status.success(),
        "the target sees /nix: {}",
        stdout(&seen)
    );
    let during = c.snapshot();
    assert_eq!(during.mountinfo, before.mountinfo);
    assert_eq!(during.files, before.files);
    let ps = c.exec(&[
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do cat $p/cmdline; echo; done",
    ]);
    let listed = stdout(&ps).replace('\0', " ");
    assert!(
        listed.contains("sleep 60"),
        "the session runs in the target: {listed}"
    );

    // Signals reach the command; its code comes back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(session.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = wait_output(session);
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.snapshot(), before, "the target is exactly as before");
    assert!(c.is_running());
}

#[test]
fn a_command_that_is_not_found_is_named_with_127() {
    let rt = runtime!("not_found", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let o = attach(&f, &c.name, &["agentenv-no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "agentenv: agentenv-no-such-command: command not found\n"
    );
}

#[test]
fn a_session_whose_target_exits_says_so() {
    let rt = runtime!("target_exits", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let cmd = f.attach_cmd(&c.name, &[], &["sh", "-c", "echo ready; exec sleep 60"]);
    let (session, before_ready) = spawn_until_ready(cmd);
    assert_eq!(before_ready, "", "the session printed nothing else first");
    let mut kill = rt.cli();
    kill.args(["kill", &c.id]);
    let killed = run(kill);
    assert!(killed.status.success(), "{}", stderr(&killed));
    let o = wait_output(session);
    assert_eq!(o.status.code(), Some(128 + 9), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "agentenv: {} ({}, podman) exited; the session ended with it\n",
            c.name,
            &c.id[..12]
        )
    );
}

#[test]
fn writes_to_the_targets_files_reach_the_target() {
    let rt = runtime!("writes", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let o = attach(&f, &c.name, &["sh", "-c", "echo from-session > /root/note"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let seen = c.exec(&["cat", "/root/note"]);
    assert_eq!(stdout(&seen), "from-session\n");
}

#[test]
fn interactive_shell_on_a_terminal() {
    let rt = runtime!("interactive", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    let mut cmd = f.agentenv();
    cmd.args(["attach", &c.name]);
    let pts = format!("/proc/{}/root/dev/pts", c.pid);
    let pts_before = crate::support::list(std::path::Path::new(&pts));
    let mut pty = Pty::spawn(cmd);
    set_winsize(&pty, 33, 101);
    pty.expect(&format!("(agentenv:{})", c.name));
    pty.send("echo $((6*7))-$AGENTENV_ATTACH\n");
    pty.expect(&format!("42-{}", c.name));
    // A terminal of the session's own, sized like the caller's, that the target never sees.
    pty.send("echo \"t=$(tty) s=$(stty size)\"\n");
    pty.expect("t=/dev/pts/0 s=33 101");
    assert_eq!(crate::support::list(std::path::Path::new(&pts)), pts_before);
    set_winsize(&pty, 40, 120);
    pty.send("echo \"resized=$(stty size)\"\n");
    pty.expect("resized=40 120");
    // Ctrl-C reaches the session's foreground command through its terminal.
    pty.send("sleep 30\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    pty.send("\x03");
    pty.send("echo interrupted=$?\n");
    pty.expect("interrupted=130");
    // Also while the session floods the terminal: typing still gets through.
    pty.send("yes\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    pty.send("\x03");
    pty.send("echo flood-stopped=$?\n");
    pty.expect("flood-stopped=130");
    pty.send("exit 3\n");
    assert_eq!(pty.wait().code(), Some(3), "{}", pty.text());
    assert_eq!(c.snapshot(), before, "no shell history or other file left");
}

/// Sets the size of the terminal `pty` gives its process (SIGWINCH follows).
fn set_winsize(pty: &Pty, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads `ws`, which lives across the call.
    assert_eq!(
        unsafe { libc::ioctl(pty.master().as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

#[test]
fn user_option_runs_as_a_user_of_the_target() {
    let rt = runtime!("user", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &["--read-only"], &["/bin/sleep", "1000"]);
    let script = ["sh", "-c", "echo $(id -u):$(id -g) $HOME $USER"];
    let o = run(f.attach_cmd(&c.name, &["--user", "ana"], &script));
    assert_eq!(stdout(&o), "1000:1000 /home/ana ana\n", "{}", stderr(&o));
    let o = run(f.attach_cmd(&c.name, &["--user", "4242:4343"], &script));
    assert!(stdout(&o).starts_with("4242:4343 "), "{}", stderr(&o));
}

#[test]
fn rootless_podman_container() {
    let rt = runtime!("rootless", Runtime::rootless_podman());
    let f = fixture!();
    let c = rt.start(
        Image::Busybox,
        &["--read-only", "--network", "none"],
        &["/bin/sleep", "1000"],
    );
    let before = c.snapshot();
    let script = "id -u; head -n 1 /proc/self/uid_map; echo x > /tmp/probe && cat /tmp/probe && rm /tmp/probe; echo \"$GREETING\"";
    let o = attach(&f, &format!("pid:{}", c.pid), &["sh", "-c", script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "root of the container: {out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map[0], "0", "in the container's user namespace: {out}");
    assert_ne!(map[1], "0", "whose root is not the host's: {out}");
    assert_eq!(&lines[2..], ["x", "hello from the agentenv example"]);
    assert_eq!(c.snapshot(), before);
    assert!(c.is_running());

    // A terminal of the session's own, in the container's user namespace too.
    let mut cmd = f.agentenv();
    cmd.args(["attach", &format!("pid:{}", c.pid)]);
    let mut pty = Pty::spawn(cmd);
    pty.send("echo t=$(tty)\n");
    pty.expect("t=/dev/pts/0");
    pty.send("exit 0\n");
    assert!(pty.wait().success(), "{}", pty.text());
    assert_eq!(c.snapshot(), before);

    // A store of its own, merged with the toolbox's inside the container's user namespace.
    let own = rt.start(
        Image::OwnNix,
        &["--network", "none"],
        &["/bin/sleep", "1000"],
    );
    let before = own.snapshot();
    let script = format!("{TARGET_TOOL}; echo \"$GREETING\"");
    let o = attach(&f, &own.pid.to_string(), &["sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "target-tool-ok\nhello from the agentenv example\n"
    );
    assert_eq!(own.snapshot(), before);
}

#[test]
fn process_on_the_host_by_pid() {
    let f = fixture!();
    if !crate::support::is_root() {
        skip(
            concat!(module_path!(), "::host_process"),
            "attaching needs root",
        );
        return;
    }
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .current_dir(f.tmp.path())
        .env("FROM_TARGET", "host-process")
        .spawn()
        .unwrap();
    let script = [
        "sh",
        "-c",
        "pwd; echo $FROM_TARGET; echo \"$GREETING\"; exit 4",
    ];
    let o = attach(&f, &sleeper.id().to_string(), &script);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{}\nhost-process\nhello from the agentenv example\n",
            f.tmp.path().canonicalize().unwrap().display()
        )
    );
}

#[test]
fn docker_container_by_name_and_short_id() {
    let rt = runtime!("docker", Runtime::docker());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &["--read-only"], &["/bin/sleep", "1000"]);
    let before = c.snapshot();
    for target in [c.name.as_str(), &c.id[..12]] {
        let o = attach(&f, target, &["sh", "-c", "hostname; echo \"$GREETING\""]);
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            format!("{}\nhello from the agentenv example\n", &c.id[..12])
        );
    }
    assert_eq!(c.snapshot(), before);
    assert!(c.is_running());
}

#[test]
fn container_of_an_unknown_runtime_is_found_in_the_cgroup_tree() {
    let rt = runtime!("docker", Runtime::docker());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    // Neither runc's state files nor any CLI can tell of it: the state directories are hidden
    // behind empty mounts in a mount namespace of the test's, and PATH holds only nix and git.
    let only_nix = f.tmp.path().join("only-nix");
    std::fs::create_dir_all(&only_nix).unwrap();
    for tool in ["nix", "git"] {
        let path = crate::support::find_in_path(tool).expect("on PATH");
        std::os::unix::fs::symlink(path, only_nix.join(tool)).unwrap();
    }
    let hide = "for d in /run/runc /run/docker/runtime-runc /run/containerd/runc /run/user; do \
                [ -d $d ] && mount -t tmpfs none $d; done; \
                [ -z \"$(ls /run/docker/runtime-runc)\" ] || exit 99; \
                exec env PATH=\"$0\" \"$@\"";
    let attach = f.attach_cmd(
        &c.id[..12],
        &[],
        &["sh", "-c", "hostname; echo \"$GREETING\""],
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--", "sh", "-c", hide])
        .arg(&only_nix)
        .arg(attach.get_program())
        .args(attach.get_args())
        .envs(attach.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(attach.get_current_dir().unwrap());
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{}\nhello from the agentenv example\n", &c.id[..12])
    );
    assert!(c.is_running());
}

#[test]
fn descriptors_of_the_caller_beyond_stdio_do_not_reach_the_target() {
    let rt = runtime!("descriptors", Runtime::podman());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &[], &["/bin/sleep", "1000"]);
    let mut cmd = f.attach_cmd(
        &c.name,
        &["--user", "ana"],
        &[
            "sh",
            "-c",
            "ls /proc/self/fd/9/ >/dev/null 2>&1 && echo leaked; ls /proc/self/fd",
        ],
    );
    crate::support::with_host_root_at_fd_9(&mut cmd);
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    // ls's own listing is the one descriptor beyond stdio.
    assert_eq!(stdout(&o), "0\n1\n2\n3\n", "{}", stderr(&o));
}
