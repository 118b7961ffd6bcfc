//! Persistent environments: `up`, `exec`, `ps`, `down`, the guest agent's reliability, and the
//! protocol spoken to a live agent.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture;
use crate::support::{run, stderr, stdout, wait_output, Fixture, Pty};

/// A running environment of a fixture, stopped when dropped.
struct Running<'a> {
    f: &'a Fixture,
    id: String,
}

impl<'a> Running<'a> {
    fn up(f: &'a Fixture) -> Self {
        let mut c = f.agentenv();
        c.arg("up");
        let o = run(c);
        assert!(o.status.success(), "up: {}", stderr(&o));
        let id = stdout(&o)
            .lines()
            .last()
            .expect("up prints the id")
            .to_string();
        Running { f, id }
    }

    fn state(&self) -> serde_json::Value {
        let path = self.f.state.join("run").join(&self.id).join("state.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn agent_pid(&self) -> i32 {
        self.state()["pid"].as_i64().unwrap() as i32
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.f.agentenv();
        c.args(["exec", &self.id, "--"]).args(args);
        run(c)
    }

    fn down(&self) -> std::process::Output {
        let mut c = self.f.agentenv();
        c.args(["down", &self.id]);
        run(c)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn up_exec_ps_down_round_trip() {
    let f = fixture!();
    let env = Running::up(&f);
    assert!(env.id.starts_with("hello-"), "{}", env.id);

    let o = env.exec(&["sh", "-c", "echo $GREETING; echo oops >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the agentenv example\n");
    assert_eq!(stderr(&o), "oops\n");

    let o = env.exec(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143));

    // State persists between execs: the same /tmp, the same processes.
    assert!(env
        .exec(&[
            "sh",
            "-c",
            "echo kept > /tmp/state; sleep 60 >/dev/null 2>&1 &"
        ])
        .status
        .success());
    assert_eq!(stdout(&env.exec(&["cat", "/tmp/state"])), "kept\n");

    let mut c = f.agentenv();
    c.args(["ps", "--json"]);
    let ps: serde_json::Value = serde_json::from_slice(&run(c).stdout).unwrap();
    let me = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == env.id.as_str())
        .expect("listed");
    assert_eq!(me["project"], f.flake.display().to_string());
    let procs = me["processes"].as_array().unwrap();
    assert!(
        procs
            .iter()
            .any(|p| p["command"].as_str().unwrap().contains("sleep 60")),
        "{me}"
    );

    let pid = env.agent_pid();
    let o = env.down();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!alive(pid), "the agent is gone");
    // No process is left in the environment's namespaces, so no mount either.
    let left = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "grep -l {} /proc/[0-9]*/mountinfo 2>/dev/null | wc -l",
            f.envs()[0].display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "0",
        "a mount of the environment is left"
    );
    let o = env.exec(&["true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no running environment"),
        "{}",
        stderr(&o)
    );
    // Home and store layer stay for next time.
    assert!(f.envs()[0].join("home").exists());
}

#[test]
fn exec_passes_stdin_with_i_and_gives_a_terminal_with_t() {
    let f = fixture!();
    let env = Running::up(&f);
    let mut c = f.agentenv();
    c.args(["exec", "-i", &env.id, "--", "sh", "-c", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(&vec![b'x'; 3_000_000]).unwrap());
    let o = wait_output(child);
    assert_eq!(stdout(&o).trim(), "3000000", "{}", stderr(&o));

    // Without -i the command's stdin is empty.
    let mut c = f.agentenv();
    c.args(["exec", &env.id, "--", "sh", "-c", "cat; echo end"])
        .stdin(Stdio::piped());
    let o = wait_output(
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(stdout(&o), "end\n");

    let o = env.exec(&["tty"]);
    assert!(
        !o.status.success(),
        "no terminal without -t: {}",
        stdout(&o)
    );
    let mut c = f.agentenv();
    c.args(["exec", "-t", &env.id, "--", "sh", "-c", "tty; stty size"]);
    let o = run(c);
    let out = stdout(&o);
    assert!(out.starts_with("/dev/pts/"), "{out}");
    assert!(out.contains("24 80"), "{out}");
}

#[test]
fn exec_forwards_signals_and_window_size() {
    let f = fixture!();
    let env = Running::up(&f);
    let mut c = f.agentenv();
    c.args([
        "exec",
        &env.id,
        "--",
        "sh",
        "-c",
        "trap 'echo got-TERM; exit 9' TERM; echo ready; while :; do sleep 0.1; done",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.stdout = Some(out);
    let o = wait_output(child);
    assert_eq!(stdout(&o), "got-TERM\n", "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(9));

    let mut c = f.agentenv();
    c.args(["exec", &env.id, "--", "sh", "-c", "trap 'stty size' WINCH; echo ready; i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done"]);
    let pty = Pty::spawn(c);
    pty.expect("ready");
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 111,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives across the call.
    unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(pty.master()),
            libc::TIOCSWINSZ,
            &ws,
        )
    };
    pty.expect("33 111");
    drop(pty);
}

#[test]
fn killing_the_client_leaves_the_environment_running() {
    let f = fixture!();
    let env = Running::up(&f);
    let mut c = f.agentenv();
    c.args([
        "exec",
        &env.id,
        "--",
        "sh",
        "-c",
        "echo started; sleep 2; echo survived > /tmp/after",
    ])
    .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 8];
    out.read_exact(&mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(out);
    wait_until("the command to finish after its client died", || {
        stdout(&env.exec(&["cat", "/tmp/after"])) == "survived\n"
    });
}

#[test]
fn killing_the_agent_ends_every_process_and_leaves_no_stale_state() {
    let f = fixture!();
    let env = Running::up(&f);
    let o = env.exec(&["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"]);
    assert!(o.status.success());
    let agent = env.agent_pid();
    let children = || -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    };
    let sleeper = children();
    assert_eq!(sleeper.len(), 1, "the orphaned sleep is the agent's child");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the environment's processes to die", || {
        !alive(agent) && !alive(sleeper[0])
    });

    // The socket and state left behind are detected as stale and removed.
    let mut c = f.agentenv();
    c.args(["ps", "--json"]);
    assert_eq!(stdout(&run(c)).trim(), "[]");
    assert!(!f.state.join("run").join(&env.id).exists());
    // And the environment can start again.
    let again = Running::up(&f);
    assert_eq!(stdout(&again.exec(&["echo", "back"])), "back\n");
    std::mem::forget(env);
}

#[test]
fn agentenv_path_uses_the_running_environment() {
    let f = fixture!();
    let env = Running::up(&f);
    assert!(env
        .exec(&["sh", "-c", "echo from-running > /tmp/marker"])
        .status
        .success());
    let o = f.run_in(&["cat", "/tmp/marker"]);
    assert_eq!(stdout(&o), "from-running\n", "{}", stderr(&o));
    let o = f.run_in(&["sh", "-c", "exit 5"]);
    assert_eq!(o.status.code(), Some(5));
    drop(env);
    let o = f.run_in(&["cat", "/tmp/marker"]);
    assert!(!o.status.success(), "a fresh sandbox once it is down");
}

#[test]
fn fifty_concurrent_execs_work() {
    let f = fixture!();
    let env = Running::up(&f);
    let children: Vec<_> = (0..50)
        .map(|i| {
            let mut c = f.agentenv();
            c.args([
                "exec",
                &env.id,
                "--",
                "sh",
                "-c",
                &format!("sleep 0.2; echo n{i}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            (i, c.spawn().unwrap())
        })
        .collect();
    for (i, child) in children {
        let o = wait_output(child);
        assert_eq!(stdout(&o), format!("n{i}\n"), "{}", stderr(&o));
    }
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_thousand_sequential_execs_leave_no_growth() {
    let f = fixture!();
    let env = Running::up(&f);
    let agent = env.agent_pid();
    // Warm up allocator arenas and runtime structures first.
    for _ in 0..50 {
        assert!(env.exec(&["true"]).status.success());
    }
    let (fds, rss) = (fd_count(agent), rss_kb(agent));
    for i in 0..1000 {
        let o = env.exec(&["true"]);
        assert!(o.status.success(), "exec {i}: {}", stderr(&o));
    }
    assert_eq!(fd_count(agent), fds, "the agent leaks file descriptors");
    let grown = rss_kb(agent).saturating_sub(rss);
    assert!(
        grown < 256,
        "the agent's memory grew by {grown} KiB over 1,000 execs"
    );
}

#[test]
fn only_the_owner_may_talk_to_the_agent() {
    let f = fixture!();
    let env = Running::up(&f);
    let dir = f.state.join("run").join(&env.id);
    let socket = dir.join("agent.sock");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    if crate::support::is_root() {
        // Even with the directory opened up, another uid is turned away by its credentials.
        let open = |p: &PathBuf, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        open(&f.state.join("run"), 0o755);
        open(&dir, 0o755);
        open(&socket, 0o666);
        let client = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
sys.stdout.write(s.recv(4096).decode(errors='replace'))\n";
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                client,
            ])
            .arg(&socket)
            .output()
            .unwrap();
        let reply = stdout(&o);
        assert!(
            reply.contains("uid 65534 may not use this environment"),
            "{reply}{}",
            stderr(&o)
        );
        assert_eq!(stdout(&env.exec(&["echo", "still-mine"])), "still-mine\n");
    }
}

#[test]
fn garbage_and_wrong_versions_are_refused_without_harm() {
    let f = fixture!();
    let env = Running::up(&f);
    let socket = f.state.join("run").join(&env.id).join("agent.sock");
    let talk = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        reply
    };
    talk(b"GET / HTTP/1.1\r\n\r\n");
    talk(&[0xff, 0xff, 0xff, 0xff]);
    talk(&[0, 0, 0, 1, 42]);
    let mut hello = Vec::new();
    let body = br#"{"version":999,"software":"agentenv 99"}"#;
    hello.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
    hello.push(1);
    hello.extend_from_slice(body);
    let reply = talk(&hello);
    assert!(
        String::from_utf8_lossy(&reply).contains("\"version\":1"),
        "the agent states its version"
    );
    // Still serving.
    assert_eq!(stdout(&env.exec(&["echo", "alive"])), "alive\n");
}

#[test]
fn framed_streams_carry_stdio_with_backpressure() {
    let f = fixture!();
    let env = Running::up(&f);
    let framed = |args: &[&str]| {
        let mut c = f.agentenv();
        c.env("AGENTENV_EXEC_STREAM", "framed")
            .args(["exec", "-i", &env.id, "--"])
            .args(args);
        c
    };
    // stdin in, stdout and stderr apart, the exit code back.
    let mut c = framed(&["sh", "-c", "wc -c; echo to-err >&2; exit 6"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(&vec![b'y'; 5_000_000]).unwrap());
    let o = wait_output(child);
    assert_eq!(o.status.code(), Some(6));
    assert_eq!(stdout(&o).trim(), "5000000");
    assert_eq!(stderr(&o), "to-err\n");

    // A reader that does not read holds the process back: the agent does not buffer it all.
    let agent = env.agent_pid();
    let before = rss_kb(agent);
    let mut c = framed(&["dd", "if=/dev/zero", "bs=1M", "count=200"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let held = rss_kb(agent).saturating_sub(before);
    assert!(
        held < 16 * 1024,
        "the agent buffered {held} KiB for a stalled reader"
    );
    let mut total = 0usize;
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match out.read(&mut buf).unwrap() {
            0 => break,
            n => total += n,
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(total, 200 << 20);
}

#[test]
fn up_refuses_what_it_would_ignore_and_env_arguments_that_match_by_accident() {
    let f = fixture!();
    let agentenv = |args: &[&str]| {
        let mut c = f.agentenv();
        c.args(args);
        run(c)
    };
    for bad in ["", "/tmp/x", "a b", ".."] {
        let o = agentenv(&["up", "--name", bad]);
        assert_eq!(o.status.code(), Some(2), "--name {bad:?}: {}", stderr(&o));
    }
    let o = agentenv(&["up", "--name", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let env = Running {
        f: &f,
        id: stdout(&o).lines().last().unwrap().to_string(),
    };
    // An empty ENV (say, an unset variable) is bad usage, not a prefix of every id.
    for verb in [&["down", ""][..], &["exec", "", "--", "true"]] {
        let o = agentenv(verb);
        assert_eq!(o.status.code(), Some(2), "{verb:?}: {}", stderr(&o));
    }
    // The same again prints its id; other options are refused, not ignored.
    let o = agentenv(&["up", "--name", "web"]);
    assert_eq!(stdout(&o).trim(), env.id, "{}", stderr(&o));
    for (args, says) in [
        (&["up", "--name", "web2"][..], "with the name 'web'"),
        (
            &["up", "--name", "web", "--network", "none"],
            "with --network host",
        ),
    ] {
        let o = agentenv(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(stdout(&env.exec(&["echo", "still-up"])), "still-up\n");
    let o = agentenv(&["exec", "web", "--cwd", "/nonexistent", "--", "pwd"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no such directory inside the environment: /nonexistent"),
        "{}",
        stderr(&o)
    );
}
