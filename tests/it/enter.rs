//! Running one command: exit codes, signals, stdio and the working directory.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixture;
use crate::support::{run, stderr, stdout, wait_output};

#[test]
fn exit_code_of_command_is_returned() {
    let f = fixture!();
    for code in [0, 1, 3, 42, 255] {
        let o = f.run_in(&["sh", "-c", &format!("exit {code}")]);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    }
}

#[test]
fn death_by_signal_gives_128_plus_the_signal() {
    let f = fixture!();
    let o = f.run_in(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    let o = f.run_in(&["sh", "-c", "kill -KILL $$"]);
    assert_eq!(o.status.code(), Some(128 + 9));
}

#[test]
fn a_command_that_is_not_found_is_named_with_127() {
    let f = fixture!();
    let o = f.run_in(&["agentenv-no-such-command", "x"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "agentenv: agentenv-no-such-command: command not found\n"
    );
}

#[test]
fn stdin_stdout_and_stderr_pass_straight_through() {
    let f = fixture!();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = f.agentenv();
    c.args([".", "--", "sh", "-c", "cat; echo to-stderr >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let o = wait_output(child);
    writer.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout == data,
        "stdout differs from stdin ({} bytes vs {})",
        o.stdout.len(),
        data.len()
    );
    assert!(stderr(&o).contains("to-stderr\n"));
}

#[test]
fn working_directory_is_the_callers() {
    let f = fixture!();
    std::fs::create_dir_all(f.flake.join("src/deep")).unwrap();
    let mut c = f.agentenv();
    c.current_dir(f.flake.join("src/deep"))
        .args(["..", "--", "pwd"]);
    let o = run(c);
    assert_eq!(
        stdout(&o).trim(),
        f.flake.join("src/deep").display().to_string(),
        "{}",
        stderr(&o)
    );
}

#[test]
fn script_on_stdin_runs_in_the_environment_without_a_terminal() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.arg(".")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello_greet\nexit 5\n")
        .unwrap();
    let o = wait_output(child);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the agentenv example\n");
}

/// Starts `agentenv . -- sh` with a trap for `sig`, sends `sig` to agentenv itself, and
/// checks that the command ran its trap exactly once.
fn signal_reaches_command(sig: nix::sys::signal::Signal) {
    let f = fixture!();
    // Warm the cache first so the signal does not arrive during evaluation.
    assert!(f.run_in(&["true"]).status.success());
    let name = sig.as_str().trim_start_matches("SIG").to_string();
    let script = format!(
        "trap 'echo got-{name}; n=$((n+1))' {name}; n=0; echo ready; i=0; \
         while [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); [ $n -gt 0 ] && break; done; sleep 0.3; exit $((10+n))"
    );
    let mut c: Command = f.agentenv();
    crate::support::with_default_signals(&mut c);
    c.args([".", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
    child.stdout = Some(out);
    let o = wait_output(child);
    assert_eq!(stdout(&o), format!("got-{name}\n"), "{}", stderr(&o));
    assert_eq!(
        o.status.code(),
        Some(11),
        "the trap ran once: {}",
        stderr(&o)
    );
}

#[test]
fn sigterm_reaches_the_command() {
    signal_reaches_command(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn sigint_reaches_the_command() {
    signal_reaches_command(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sighup_reaches_the_command() {
    signal_reaches_command(nix::sys::signal::Signal::SIGHUP);
}

#[test]
fn window_size_changes_reach_the_command() {
    let f = fixture!();
    assert!(f.run_in(&["true"]).status.success());
    let mut c = f.agentenv();
    c.args([".", "--", "sh", "-c", "trap 'echo winch' WINCH; echo ready; i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done"]);
    let mut pty = crate::support::Pty::spawn(c);
    pty.expect("ready");
    // A resize of the terminal: the kernel signals its foreground process group.
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives across the call.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(pty.master()),
            libc::TIOCSWINSZ,
            &ws,
        )
    };
    assert_eq!(r, 0);
    pty.expect("winch");
    // And one sent to agentenv by another process is passed on.
    let pid = nix::unistd::Pid::from_raw(pty.child.id() as i32);
    std::thread::sleep(Duration::from_millis(50));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    let start = std::time::Instant::now();
    while pty.text().matches("winch").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", pty.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    pty.child.kill().ok();
}

#[test]
fn verbose_may_come_before_a_verb_and_other_options_may_not() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args(["-v", "ps", "--json"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "[]");
    let mut c = f.agentenv();
    c.args(["--no-profile", "ps"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("put options after the verb"),
        "{}",
        stderr(&o)
    );
}
