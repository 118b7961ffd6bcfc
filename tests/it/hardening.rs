//! The sandbox holds as root as it does rootless: each way out that root once had (file
//! handles, global sysctls, a fresh sysfs, device nodes, PID 1's descriptors, another
//! environment's socket) tried by a small static probe, as root and as the unprivileged test
//! user; and the agent under a flood of descriptors and garbage.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::fixture;
use crate::rootless::unprivileged;
use crate::support::{is_root, repo_root, run, skip, stderr, stdout, Fixture};

/// The probe built once per test run (tests/it/probe/escape.c), or why it cannot be.
fn probe_binary() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = repo_root().join("tests/it/probe/escape.c");
            let out = repo_root().join("target/hardening-escape-probe");
            let o = Command::new("gcc")
                .args(["-static", "-O1", "-o"])
                .arg(&out)
                .arg(&src)
                .output()
                .map_err(|e| format!("gcc is not installed ({e}); scripts/test.sh installs it"))?;
            if !o.status.success() {
                return Err(format!(
                    "gcc -static failed (libc6-dev missing?): {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            Ok(out)
        })
        .clone()
}

/// A fixture with the probe at `<project>/escape`, or a loud skip.
fn fixture_with_probe(test: &str) -> Option<Fixture> {
    let f = match Fixture::hello() {
        Ok(f) => f,
        Err(reason) => {
            skip(test, &reason);
            return None;
        }
    };
    match probe_binary() {
        Ok(bin) => {
            let dest = f.flake.join("escape");
            std::fs::copy(bin, &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
            Some(f)
        }
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// Who runs agentenv in a test: root (when the tests run as root) and the unprivileged user.
enum Caller {
    Root,
    User,
}

/// Runs `agentenv . -- ./escape ARGS` as `who`; `None` if that caller is not available here.
fn attempt(f: &Fixture, who: &Caller, test: &str, args: &[&str]) -> Option<Output> {
    let mut cmd = match who {
        Caller::Root if is_root() => f.agentenv(),
        Caller::Root => {
            skip(test, "root's sandbox needs the tests to run as root");
            return None;
        }
        Caller::User => unprivileged(f, test)?.0(),
    };
    cmd.args([".", "--", "./escape"]).args(args);
    Some(run(cmd))
}

/// The probe ran and was refused.
fn assert_refused(o: &Output, who: &str, attack: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{attack} as {who}: expected a refusal\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(
        stdout(o).contains("refused"),
        "{attack} as {who}: {}",
        stdout(o)
    );
}

fn both(test: &str, body: impl Fn(&Caller, &str)) {
    body(&Caller::Root, &format!("{test} (root)"));
    body(&Caller::User, &format!("{test} (unprivileged)"));
}

/// The handle of `path` as the probe prints it on the host: "TYPE HEX".
fn handle_of(path: &Path) -> (String, String) {
    let mut c = Command::new(probe_binary().unwrap());
    c.arg("mkhandle").arg(path);
    let o = run(c);
    assert!(o.status.success(), "mkhandle: {}", stdout(&o));
    let text = stdout(&o);
    let (t, hex) = text.trim().split_once(' ').unwrap();
    (t.to_string(), hex.to_string())
}

#[test]
fn a_host_file_cannot_be_opened_by_handle() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        // Beside the project, on the same filesystem: outside the sandbox.
        let secret = f.tmp.path().join("host-secret");
        std::fs::write(&secret, "host secret\n").unwrap();
        let (t, hex) = handle_of(&secret);
        let project = f.flake.display().to_string();
        let Some(o) = attempt(&f, who, test, &["handle", &project, &t, &hex, "read"]) else {
            return;
        };
        assert!(
            !stdout(&o).contains("host secret"),
            "{test}: {}",
            stdout(&o)
        );
        assert_refused(&o, test, "open_by_handle_at");
    });
}

#[test]
fn global_sysctls_cannot_be_written() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        let Some(o) = attempt(
            &f,
            who,
            test,
            &["sysctl", "/proc/sys/kernel/printk_ratelimit"],
        ) else {
            return;
        };
        assert_refused(&o, test, "writing /proc/sys/kernel/printk_ratelimit");
    });
}

#[test]
fn a_fresh_sysfs_cannot_be_mounted() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        let Some(o) = attempt(&f, who, test, &["sysfs", "/tmp/sys"]) else {
            return;
        };
        assert_refused(&o, test, "mounting sysfs");
        // Not even with a network namespace of its own, which sysfs would otherwise accept.
        let mut cmd = match who {
            Caller::Root => f.agentenv(),
            Caller::User => unprivileged(&f, test).unwrap().0(),
        };
        cmd.args([
            "--network",
            "none",
            ".",
            "--",
            "./escape",
            "sysfs",
            "/tmp/sys",
        ]);
        assert_refused(&run(cmd), test, "mounting sysfs with --network none");
    });
}

#[test]
fn device_nodes_in_the_project_cannot_be_made() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        let node = f.flake.join("null-node").display().to_string();
        let Some(o) = attempt(&f, who, test, &["mknod", &node]) else {
            return;
        };
        assert_refused(&o, test, "mknod in the project");
    });
}

#[test]
fn device_nodes_in_the_project_do_not_work_inside() {
    if !is_root() {
        skip(
            module_path!(),
            "making a device node on the host needs root",
        );
        return;
    }
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        // A node that the host made (or that a checkout or archive brought along).
        let node = f.flake.join("null-node");
        let c_node = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: mknod with a valid path; makedev(1, 3) is /dev/null.
        let rc =
            unsafe { libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(
            rc,
            0,
            "mknod on the host: {}",
            std::io::Error::last_os_error()
        );
        let node = node.display().to_string();
        let Some(o) = attempt(&f, who, test, &["opendev", &node]) else {
            return;
        };
        assert_refused(&o, test, "opening a device node in the project");
    });
}

#[test]
fn descriptors_of_pid_1_are_out_of_reach() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        let Some(o) = attempt(&f, who, test, &["pid1fd"]) else {
            return;
        };
        assert_refused(&o, test, "writing through /proc/1/fd (one-shot run)");
        // The agent of a persistent environment is PID 1 there.
        let id = match who {
            Caller::Root => f.up(&[]),
            Caller::User => {
                let mut up = unprivileged(&f, test).unwrap().0();
                up.arg("up");
                let o = run(up);
                assert!(o.status.success(), "up: {}", stderr(&o));
                stdout(&o).lines().last().unwrap().to_string()
            }
        };
        let mut exec = match who {
            Caller::Root => f.agentenv(),
            Caller::User => unprivileged(&f, test).unwrap().0(),
        };
        exec.args(["exec", &id, "--", "./escape", "pid1fd"]);
        let o = run(exec);
        let mut down = match who {
            Caller::Root => f.agentenv(),
            Caller::User => unprivileged(&f, test).unwrap().0(),
        };
        down.args(["down", &id]);
        run(down);
        assert_refused(&o, test, "writing through /proc/1/fd (agent)");
    });
}

#[test]
fn another_environments_agent_socket_is_out_of_reach_by_handle() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        if matches!(who, Caller::Root) && !is_root() {
            skip(test, "root's sandbox needs the tests to run as root");
            return;
        }
        if matches!(who, Caller::User) && unprivileged(&f, test).is_none() {
            return;
        }
        let env = |f: &Fixture| -> Command {
            match who {
                Caller::Root => f.agentenv(),
                Caller::User => unprivileged(f, test).unwrap().0(),
            }
        };
        let mut up = env(&f);
        up.args(["up", "--name", "other"]);
        let o = run(up);
        assert!(o.status.success(), "up: {}", stderr(&o));
        let id = stdout(&o).lines().last().unwrap().to_string();
        let socket = f.state.join("run").join(&id).join("agent.sock");
        assert!(socket.exists(), "no socket at {}", socket.display());
        let (t, hex) = handle_of(&socket);
        let project = f.flake.display().to_string();
        let mut beside = env(&f);
        beside.args([
            ".", "--", "./escape", "handle", &project, &t, &hex, "connect",
        ]);
        let o = run(beside);
        let mut down = env(&f);
        down.args(["down", &id]);
        run(down);
        assert_refused(
            &o,
            test,
            "connecting to another environment's socket by handle",
        );
    });
}

/// Unmounts what a test mounted on the host, whatever the test's outcome.
struct HostMount(PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn mounts_under_the_project_are_nosuid_and_nodev_too() {
    if !is_root() {
        skip(
            module_path!(),
            "mounting under the project on the host needs root",
        );
        return;
    }
    let f = fixture!();
    let sub = f.flake.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "agentenv-sec-sandbox-test",
            sub.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success());
    let _guard = HostMount(sub.clone());
    let script = format!("grep ' {} ' /proc/self/mountinfo", sub.display());
    let o = f.run_in(&["sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    let options = line
        .split_whitespace()
        .nth(5)
        .unwrap_or_default()
        .to_string();
    for want in ["nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == want),
            "{want} missing: {line}"
        );
    }
}

#[test]
fn kernel_internals_in_proc_are_hidden() {
    both(module_path!(), |who, test| {
        let Some(f) = fixture_with_probe(test) else {
            return;
        };
        let mut cmd = match who {
            Caller::Root if is_root() => f.agentenv(),
            Caller::Root => return skip(test, "root's sandbox needs the tests to run as root"),
            Caller::User => match unprivileged(&f, test) {
                Some((make, _)) => make(),
                None => return,
            },
        };
        let script = "for p in /proc/timer_list /proc/keys /proc/sched_debug /proc/kcore; do \
            [ -e $p ] && echo \"$p $(cat $p 2>/dev/null | wc -c)\"; done; true";
        cmd.args([".", "--", "sh", "-c", script]);
        let o = run(cmd);
        assert!(o.status.success(), "{test}: {}", stderr(&o));
        for line in stdout(&o).lines() {
            assert!(line.ends_with(" 0"), "{test}: {line} has content inside");
        }
    });
}

#[test]
fn root_gets_a_user_namespace_no_new_privs_and_the_filter() {
    if !is_root() {
        skip(module_path!(), "needs the tests to run as root");
        return;
    }
    let f = fixture!();
    let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let o = f.run_in(&[
        "sh",
        "-c",
        "readlink /proc/self/ns/user; id -u; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(
        lines[0],
        host_ns.display().to_string(),
        "a user namespace of its own"
    );
    assert_eq!(lines[1], "0", "root inside");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

/// The agent's open descriptors, as the host sees them.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// One hostile client: connects, and sends what `kind` says.
async fn hostile_client(socket: &Path, kind: usize) {
    use agentenv::proto::frame::handshake;
    use agentenv::proto::message::{ExecSpec, Request};
    use agentenv::proto::{write_frame, Frame};
    use tokio::io::AsyncWriteExt;

    let Ok(mut s) = tokio::net::UnixStream::connect(socket).await else {
        return;
    };
    match kind {
        // Nothing at all.
        0 => {}
        // Garbage instead of a hello.
        1 => {
            let _ = s.write_all(&[0xff; 64]).await;
        }
        // An exec with passed stdio, then more descriptors than three, or none.
        _ => {
            if handshake(&mut s).await.is_err() {
                return;
            }
            let spec = ExecSpec {
                rc_script: String::new(),
                shell: "/bin/sh".into(),
                command: Some(vec!["true".into()]),
                cwd: "/".into(),
                env: vec![],
                prompt_name: "flood".into(),
                tty: None,
                stdin_script: false,
                passed_stdio: true,
            };
            let _ = write_frame(&mut s, &Frame::Request(Request::Exec(spec))).await;
            let null = std::fs::File::open("/dev/null").unwrap();
            let n = if kind == 2 { 8 } else { 0 };
            let fds = vec![null.as_raw_fd(); n];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let cmsg: &[_] = if n == 0 { &[] } else { &cmsg };
            let _ = s.writable().await;
            let _ = nix::sys::socket::sendmsg::<nix::sys::socket::UnixAddr>(
                s.as_raw_fd(),
                &[std::io::IoSlice::new(b"F")],
                cmsg,
                nix::sys::socket::MsgFlags::empty(),
                None,
            );
        }
    }
    // Wait for the agent to drop the connection.
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[test]
fn agent_frees_every_descriptor_under_a_flood_and_keeps_serving() {
    if !is_root() {
        skip(
            module_path!(),
            "reads the agent's /proc/PID/fd, which needs root",
        );
        return;
    }
    let f = fixture!();
    let id = f.up(&[]);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.state.join("run").join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let pid = state["pid"].as_i64().unwrap() as i32;
    let socket = f.state.join("run").join(&id).join("agent.sock");
    assert!(f.exec(&id, &["true"]).status.success());
    let before = fd_count(pid);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Silent clients hold connections open while the flood runs and an exec is served.
    let silent: Vec<std::os::unix::net::UnixStream> = (0..50)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
        .collect();
    rt.block_on(async {
        for round in 0..10 {
            let clients: Vec<_> = (0..100)
                .map(|i| {
                    let socket = socket.clone();
                    tokio::spawn(async move { hostile_client(&socket, (round + i) % 4).await })
                })
                .collect();
            for c in clients {
                let _ = c.await;
            }
        }
    });
    let started = Instant::now();
    let o = f.exec(&id, &["echo", "still serving"]);
    assert_eq!(stdout(&o), "still serving\n", "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an exec waited {:?} behind silent clients",
        started.elapsed()
    );
    drop(silent);

    // The agent closes what it held once the clients are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = fd_count(pid);
    while after > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = fd_count(pid);
    }
    f.down(&id);
    assert!(
        after <= before,
        "the agent held {before} descriptors before the flood and {after} after"
    );
}
