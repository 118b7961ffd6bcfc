//! Isolation: the sandbox sees the store, the project and its own home; nothing else of the
//! host; and what it writes outside the project never reaches the host.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::fixture;
use crate::support::{run, stderr, stdout};

#[test]
fn host_files_outside_the_project_are_invisible() {
    let f = fixture!();
    let secret = f.tmp.path().join("outside/secret.txt");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "host secret").unwrap();
    let script = format!(
        "cat '{}' 2>/dev/null && echo LEAK-secret; \
         ls /etc/shadow /home /var /usr/lib /sys /boot 2>/dev/null && echo LEAK-dirs; \
         ls /usr/bin; ls -A \"$HOME\"; echo done",
        secret.display()
    );
    let o = f.run_in(&["sh", "-c", &script]);
    let out = stdout(&o);
    assert!(!out.contains("LEAK"), "{out}");
    assert_eq!(
        out,
        "env\ndone\n",
        "only /usr/bin/env, and an empty private home: {}",
        stderr(&o)
    );
}

#[test]
fn root_directory_holds_only_the_sandbox_skeleton() {
    let f = fixture!();
    let o = f.run_in(&["ls", "-A", "/"]);
    let listing = stdout(&o);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    // /tmp holds the project here, since the fixture lives in the host's /tmp.
    let home_top = std::env::var("HOME").unwrap();
    let home_top = Path::new(&home_top)
        .iter()
        .nth(1)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut expected = vec!["bin", "dev", "etc", "nix", "proc", "run", "tmp", "usr"];
    if !expected.contains(&home_top.as_str()) {
        expected.push(&home_top);
    }
    expected.sort();
    assert_eq!(names, expected, "{}", stderr(&o));
}

#[test]
fn writes_outside_the_project_never_reach_the_host() {
    let f = fixture!();
    let host_tmp_probe = f.tmp.path().join("written-from-inside");
    let script = format!(
        "echo x > /tmp/inside-tmp && echo x > \"$HOME/inside-home\" && \
         (echo x > /etc/inside-etc) 2>/dev/null; (echo x > /inside-root) 2>/dev/null; \
         (echo x > '{}') 2>/dev/null; echo ok",
        host_tmp_probe.display()
    );
    let o = f.run_in(&["sh", "-c", &script]);
    assert_eq!(stdout(&o), "ok\n", "{}", stderr(&o));
    assert!(!Path::new("/inside-root").exists());
    assert!(!Path::new("/etc/inside-etc").exists());
    let real_home = std::env::var("HOME").unwrap();
    assert!(!Path::new(&real_home).join("inside-home").exists());
    // The fixture's directory (outside the project) was visible only as a mount point path
    // inside the private /tmp, so the host copy is untouched.
    assert!(!host_tmp_probe.exists());
    // The private home persists, in agentenv's state.
    let env = &f.envs()[0];
    assert!(env.join("home/inside-home").exists());
    let o = f.run_in(&["cat", "/tmp/inside-tmp"]);
    assert!(!o.status.success(), "/tmp is fresh each time");
}

#[test]
fn writes_to_nix_stay_in_the_environment() {
    let f = fixture!();
    if !crate::support::is_root() {
        crate::support::skip(module_path!(), "the store is writable only by root");
        return;
    }
    let marker = format!("/nix/store/agentenv-test-marker-{}", std::process::id());
    let o = f.run_in(&[
        "sh",
        "-c",
        &format!("echo inside > {marker} && cat {marker}"),
    ]);
    assert_eq!(stdout(&o), "inside\n", "{}", stderr(&o));
    assert!(
        !Path::new(&marker).exists(),
        "the write reached the host store"
    );
    // The environment keeps its own layer between runs.
    let o = f.run_in(&["cat", &marker]);
    assert_eq!(stdout(&o), "inside\n");
    let layer = f.envs()[0].join("store/upper/store");
    assert!(layer.join(Path::new(&marker).file_name().unwrap()).exists());
}

#[test]
fn a_run_beside_another_sees_its_store_and_keeps_its_own_writes_apart() {
    let f = fixture!();
    if !crate::support::is_root() {
        crate::support::skip(module_path!(), "the store is writable only by root");
        return;
    }
    // The first run writes to /nix, then holds the environment until the second is done.
    let mut first = f.agentenv();
    first.args([
        ".",
        "--",
        "sh",
        "-c",
        "echo a > /nix/store/from-first && touch first-ready && \
         while [ ! -e second-done ]; do sleep 0.05; done",
    ]);
    let mut first = first.spawn().unwrap();
    let ready = f.flake.join("first-ready");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = f.run_in(&[
        "sh",
        "-c",
        "cat /nix/store/from-first && echo b > /nix/store/from-second && cat /nix/store/from-second; touch second-done",
    ]);
    assert_eq!(stdout(&o), "a\nb\n", "{}", stderr(&o));
    assert!(first.wait().unwrap().success());
    let env = &f.envs()[0];
    assert!(
        crate::support::list(&env.join("scratch")).is_empty(),
        "the second run's scratch layer is gone"
    );
    // The environment keeps what its owner wrote, not what the run beside it wrote.
    let o = f.run_in(&[
        "sh",
        "-c",
        "cat /nix/store/from-first; [ -e /nix/store/from-second ] && echo leaked || echo dropped",
    ]);
    assert_eq!(stdout(&o), "a\ndropped\n", "{}", stderr(&o));
    assert!(!env.join("store/upper/store/from-second").exists());
}

#[test]
fn a_run_beside_a_persistent_environment_keeps_its_writes_apart() {
    let f = fixture!();
    if !crate::support::is_root() {
        crate::support::skip(module_path!(), "the store is writable only by root");
        return;
    }
    let id = f.up(&[]);
    // `up` has exited: its environment's PID 1 still owns the layer. A run with another
    // network does not use that environment, and must not write its layer.
    let o = f.run_in_with(
        &["--network", "none"],
        &[
            "sh",
            "-c",
            "echo side > /nix/store/from-beside && cat /nix/store/from-beside",
        ],
    );
    assert_eq!(stdout(&o), "side\n", "{}", stderr(&o));
    let env = &f.envs()[0];
    assert!(!env.join("store/upper/store/from-beside").exists());
    let o = f.exec(
        &id,
        &[
            "sh",
            "-c",
            "[ -e /nix/store/from-beside ] && echo seen || echo apart",
        ],
    );
    assert_eq!(stdout(&o), "apart\n");
    f.down(&id);
}

#[test]
fn descriptors_of_the_caller_beyond_stdio_do_not_reach_inside() {
    let f = fixture!();
    let probe = "ls /proc/self/fd/9/ >/dev/null 2>&1 && echo leaked-to-command; \
                 for fd in /proc/1/fd/*; do [ -d \"$fd/\" ] && echo leaked-to-pid-1; done; echo checked";
    let mut c = f.agentenv();
    c.args([".", "--", "sh", "-c", probe]);
    crate::support::with_host_root_at_fd_9(&mut c);
    let o = run(c);
    assert_eq!(stdout(&o), "checked\n", "{}", stderr(&o));

    // A persistent environment started with it holds nothing of the caller's either.
    let mut up = f.agentenv();
    up.arg("up");
    crate::support::with_host_root_at_fd_9(&mut up);
    let o = run(up);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).lines().last().unwrap().to_string();
    let mut exec = f.agentenv();
    exec.args(["exec", &id, "--", "sh", "-c", probe]);
    crate::support::with_host_root_at_fd_9(&mut exec);
    let o = run(exec);
    assert_eq!(stdout(&o), "checked\n", "{}", stderr(&o));
    f.down(&id);
}

#[test]
fn project_files_belong_to_the_caller() {
    let f = fixture!();
    let o = f.run_in(&["sh", "-c", "echo made > made-inside && mkdir -p sub/dir"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = std::fs::metadata(f.flake.join("made-inside")).unwrap();
    assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(m.gid(), nix::unistd::getegid().as_raw());
    assert_eq!(
        std::fs::read_to_string(f.flake.join("made-inside")).unwrap(),
        "made\n"
    );
}

#[test]
fn pid_1_is_agentenv_and_orphans_are_reaped() {
    let f = fixture!();
    let script = "cat /proc/1/comm; echo $$; (sleep 0.1 &) ; sleep 0.4; \
                  grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
    let o = f.run_in(&["sh", "-c", script]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "agentenv", "{out}");
    assert_eq!(lines[1], "2", "the command is PID 2, under agentenv's init");
    assert_eq!(lines[2].trim(), "0", "no zombies: {out}");
}

#[test]
fn network_none_leaves_only_loopback() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args(["--network", "none", ".", "--", "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1; cat /sys/class/net/lo/operstate 2>/dev/null; ls /etc/resolv.conf 2>&1"]);
    let o = crate::support::run(c);
    let out = stdout(&o);
    let ifaces: Vec<&str> = out
        .lines()
        .take_while(|l| !l.contains("resolv"))
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}{}", stderr(&o));
    let shared = f.run_in(&["sh", "-c", "tail -n +3 /proc/net/dev | wc -l"]);
    assert!(stdout(&shared).trim().parse::<u32>().unwrap() >= 1);
}

#[test]
fn hostname_and_identity_are_the_sandboxs() {
    let f = fixture!();
    let o = f.run_in(&["sh", "-c", "hostname; id -u; cat /etc/hostname"]);
    let uid = nix::unistd::geteuid().as_raw().to_string();
    assert_eq!(
        stdout(&o),
        format!("agentenv\n{uid}\nagentenv\n"),
        "{}",
        stderr(&o)
    );
}
