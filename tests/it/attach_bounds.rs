//! A session is never more privileged than its target's own processes, tried as a hostile
//! container would: its capability sets, no_new_privs and seccomp filters are within those of
//! the target's main process (docker, podman, rootless podman; as root, `--user`, dropped
//! capabilities); the target's own `/bin/id`, replaced by a probe, can neither open the host's
//! files by handle nor mount; a container allowed to ptrace cannot make the session remount
//! the toolbox read-write, and sees no process holding more than its own; what a session
//! leaves running, and the profile's activate.sh, hold no more either; a rootless container
//! with CAP_SYS_ADMIN cannot remount the session's toolbox; the toolbox shows no `/nix/var`.
//! Needs root, gcc and a static libc (for the probe).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::containers::{Container, Engine, Image, Runtime};
use crate::support::{run, skip, stderr, stdout, Fixture};
use crate::{fixture, runtime};

/// Marks what these tests start, so that it is known whose it is.
const LABEL: [&str; 2] = ["--label", "agentenv-test=sec-attach"];

/// A rootless container's state is the test user's: it is attached by its PID.
fn attach(f: &Fixture, c: &Container, opts: &[&str], cmd: &[&str]) -> Output {
    let target = match c.runtime.engine {
        Engine::RootlessPodman { .. } => format!("pid:{}", c.pid),
        _ => c.name.clone(),
    };
    run(f.attach_cmd(&target, opts, cmd))
}

/// The fields of a `/proc/PID/status`.
fn fields(status: &str) -> BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn status_of(pid: i32) -> BTreeMap<String, String> {
    fields(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
}

fn number(f: &BTreeMap<String, String>, key: &str, hex: bool) -> u64 {
    let v = f.get(key).map(String::as_str).unwrap_or("0");
    match hex {
        true => u64::from_str_radix(v, 16).unwrap(),
        false => v.parse().unwrap(),
    }
}

/// Every capability set of `session` within the target's, its no_new_privs and seccomp at
/// least the target's.
fn assert_within(
    session: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
    what: &str,
) {
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let (s, t) = (number(session, set, true), number(target, set, true));
        assert_eq!(
            s & !t,
            0,
            "{what}: {set} {s:016x} holds more than the target's {t:016x}"
        );
    }
    for key in ["NoNewPrivs", "Seccomp", "Seccomp_filters"] {
        let (s, t) = (number(session, key, false), number(target, key, false));
        assert!(s >= t, "{what}: {key} {s} is below the target's {t}");
    }
}

/// The probe of tests/it/probes/privileged.c, built once.
fn probe() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir()
                .join(format!("agentenv-sec-attach-probe-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            let out = dir.join("probe");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/probes/privileged.c");
            let o = Command::new("gcc")
                .args(["-static", "-O1", "-o"])
                .arg(&out)
                .arg(&src)
                .output()
                .map_err(|e| format!("gcc is not installed ({e})"))?;
            match o.status.success() {
                true => Ok(out),
                false => Err(format!(
                    "gcc -static cannot build the probe (libc6-dev?): {}",
                    String::from_utf8_lossy(&o.stderr)
                )),
            }
        })
        .clone()
}

/// Puts the probe in the container at `at` (replacing what is there).
fn install_probe(c: &Container, probe: &Path, at: &str) {
    let _ = c.exec(&["/bin/busybox", "rm", "-f", at]);
    let mut cp = c.runtime.cli();
    cp.arg("cp").arg(probe).arg(format!("{}:{at}", c.id));
    let o = run(cp);
    assert!(o.status.success(), "cp: {}", stderr(&o));
}

/// The host PIDs of the processes in `c`'s PID namespace.
fn processes_of(c: &Container) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", c.pid)).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns))
        .collect()
}

/// What a session's `cat /proc/self/status; ls /nix` prints, checked against its target.
fn check_session(f: &Fixture, c: &Container, opts: &[&str], what: &str) {
    let o = attach(
        f,
        c,
        opts,
        &["sh", "-c", "cat /proc/self/status; echo NIX; ls /nix"],
    );
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    let out = stdout(&o);
    let (status, nix) = out.split_once("NIX\n").unwrap();
    let session = fields(status);
    let target = status_of(c.pid);
    assert_within(&session, &target, what);
    assert_eq!(
        nix, "store\n",
        "{what}: only the toolbox's store is at /nix"
    );
    let rootless = matches!(c.runtime.engine, Engine::RootlessPodman { .. });
    if opts.is_empty() && !rootless {
        let euid =
            |f: &BTreeMap<String, String>| f["Uid"].split_whitespace().nth(1).map(String::from);
        assert_eq!(
            euid(&session),
            euid(&target),
            "{what}: the target's own user"
        );
    }
}

fn bounds_in(rt: &Runtime, f: &Fixture, configs: &[&[&str]]) {
    for config in configs {
        let mut opts = LABEL.to_vec();
        if matches!(rt.engine, Engine::RootlessPodman { .. }) {
            // No tun device for slirp4netns here.
            opts.extend(["--network", "none"]);
        }
        opts.extend_from_slice(config);
        let c = rt.start(Image::Busybox, &opts, &["/bin/sleep", "1000"]);
        let what = format!("{:?} {config:?}", rt.engine);
        check_session(f, &c, &[], &what);
        check_session(f, &c, &["--user", "ana"], &format!("{what} --user ana"));
    }
}

const CONFIGS: [&[&str]; 3] = [
    &[],
    &["--user", "1000:1000"],
    &[
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "--security-opt",
        "no-new-privileges",
    ],
];

#[test]
fn docker_session_is_within_its_targets_capabilities_no_new_privs_and_seccomp() {
    let rt = runtime!("docker_session_is_within", Runtime::docker());
    let f = fixture!();
    bounds_in(&rt, &f, &CONFIGS);
}

#[test]
fn podman_session_is_within_its_targets_capabilities_no_new_privs_and_seccomp() {
    let rt = runtime!("podman_session_is_within", Runtime::podman());
    let f = fixture!();
    bounds_in(&rt, &f, &CONFIGS);
}

#[test]
fn rootless_podman_session_is_within_its_targets_capabilities_and_seccomp() {
    let rt = runtime!(
        "rootless_podman_session_is_within",
        Runtime::rootless_podman()
    );
    let f = fixture!();
    bounds_in(&rt, &f, &CONFIGS[..2]);
}

fn replaced_id_cannot_reach_the_host(rt: &Runtime) {
    let probe = match probe() {
        Ok(p) => p,
        Err(reason) => return skip("attach_bounds::replaced_id", &reason),
    };
    let f = fixture!();
    let c = rt.start(Image::Busybox, &LABEL, &["/bin/sleep", "1000"]);
    install_probe(&c, &probe, "/bin/id");
    let o = attach(&f, &c, &[], &["id"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("handle: refused"),
        "the target's /bin/id opened the host's root by handle:\n{out}"
    );
    assert!(
        out.contains("mount: refused"),
        "the target's /bin/id mounted:\n{out}"
    );
}

#[test]
fn a_replaced_bin_id_runs_with_no_more_than_the_docker_targets_privileges() {
    let rt = runtime!("replaced_id_docker", Runtime::docker());
    replaced_id_cannot_reach_the_host(&rt);
}

#[test]
fn a_replaced_bin_id_runs_with_no_more_than_the_podman_targets_privileges() {
    let rt = runtime!("replaced_id_podman", Runtime::podman());
    replaced_id_cannot_reach_the_host(&rt);
}

/// The host PID of the session's `sleep` in `c`, and its PID inside, once it runs.
fn session_sleep(c: &Container) -> (i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for pid in processes_of(c) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let in_session = Path::new(&format!("/proc/{pid}/root/nix/store")).exists();
            if comm.trim() == "sleep" && in_session && pid != c.pid {
                let inside = status_of(pid)["NSpid"]
                    .split_whitespace()
                    .last()
                    .unwrap()
                    .parse()
                    .unwrap();
                return (pid, inside);
            }
        }
        assert!(Instant::now() < deadline, "the session's sleep never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tracing_container_cannot_use_the_session(rt: &Runtime) {
    let probe = match probe() {
        Ok(p) => p,
        Err(reason) => return skip("attach_bounds::tracing_container", &reason),
    };
    let f = fixture!();
    let mut opts = LABEL.to_vec();
    opts.extend(["--cap-add", "SYS_PTRACE"]);
    let c = rt.start(Image::Busybox, &opts, &["/bin/sleep", "1000"]);
    install_probe(&c, &probe, "/bin/probe");
    let mut session = f.attach_cmd(&c.name, &[], &["sleep", "60"]);
    let mut session = session
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, inside) = session_sleep(&c);
    let target = status_of(c.pid);
    let statuses: Vec<_> = processes_of(&c)
        .into_iter()
        .map(|p| (p, status_of(p)))
        .collect();
    let o = c.exec(&["/bin/probe", "inject", &inside.to_string()]);
    let _ = session.kill();
    let _ = session.wait();
    let out = stdout(&o);
    assert!(
        out.contains("trace: ok"),
        "the container traces its own processes: {out}{}",
        stderr(&o)
    );
    assert!(
        out.contains("remount: refused"),
        "a tracing container remounted the toolbox read-write:\n{out}"
    );
    for (pid, status) in statuses {
        assert_within(&status, &target, &format!("process {pid} in the container"));
    }
}

#[test]
fn a_docker_container_allowed_to_ptrace_cannot_make_the_session_remount_the_toolbox() {
    let rt = runtime!("tracing_container_docker", Runtime::docker());
    tracing_container_cannot_use_the_session(&rt);
}

#[test]
fn a_podman_container_allowed_to_ptrace_cannot_make_the_session_remount_the_toolbox() {
    let rt = runtime!("tracing_container_podman", Runtime::podman());
    tracing_container_cannot_use_the_session(&rt);
}

#[test]
fn what_a_session_leaves_running_holds_no_more_than_the_target() {
    let rt = runtime!("leftover", Runtime::docker());
    let f = fixture!();
    let c = rt.start(Image::Busybox, &LABEL, &["/bin/sleep", "1000"]);
    let script = "sleep 999 </dev/null >/dev/null 2>&1 & echo started";
    let o = attach(&f, &c, &[], &["sh", "-c", script]);
    assert_eq!(stdout(&o), "started\n", "{}", stderr(&o));
    let target = status_of(c.pid);
    let left: Vec<i32> = processes_of(&c)
        .into_iter()
        .filter(|p| *p != c.pid)
        .collect();
    assert!(!left.is_empty(), "the session left its sleep running");
    for pid in left {
        assert_within(
            &status_of(pid),
            &target,
            &format!("left-over process {pid}"),
        );
        let nix = std::fs::read_dir(format!("/proc/{pid}/root/nix")).unwrap();
        let names: Vec<_> = nix.flatten().map(|e| e.file_name()).collect();
        assert_eq!(
            names,
            vec!["store"],
            "left-over process {pid} sees {names:?} at /nix"
        );
    }
}

#[test]
fn a_target_whose_filter_cannot_be_read_gives_the_session_the_default_filter() {
    let rt = runtime!("unreadable_filter", Runtime::podman());
    let probe = match probe() {
        Ok(p) => p,
        Err(reason) => return skip("attach_bounds::unreadable_filter", &reason),
    };
    let f = fixture!();
    let c = rt.start(Image::Busybox, &LABEL, &["/bin/sleep", "1000"]);
    install_probe(&c, &probe, "/bin/id");
    // A tracer of its own (as a debugger would be) keeps agentenv from reading its filter.
    let tracee = nix::unistd::Pid::from_raw(c.pid);
    nix::sys::ptrace::seize(tracee, nix::sys::ptrace::Options::empty()).unwrap();
    let _traced = Traced(tracee);
    let o = attach(&f, &c, &[], &["sh", "-c", "cat /proc/self/status; /bin/id"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let session = fields(&out);
    assert_eq!(session["Seccomp"], "2", "{out}");
    assert_eq!(session["NoNewPrivs"], "1", "{out}");
    assert_within(&session, &status_of(c.pid), "under the default filter");
    assert!(out.contains("handle: refused"), "{out}");
    assert!(out.contains("mount: refused"), "{out}");
}

/// A tracee this thread seized; stopped and detached on drop (before its container is
/// removed), so that its parent learns of its end.
struct Traced(nix::unistd::Pid);

impl Drop for Traced {
    fn drop(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        if nix::sys::ptrace::interrupt(self.0).is_ok() {
            let _ = waitpid(self.0, Some(WaitPidFlag::__WALL));
            let _ = nix::sys::ptrace::detach(self.0, None);
        }
    }
}

#[test]
fn a_target_without_seccomp_gives_a_session_without_it() {
    let rt = runtime!("no_seccomp", Runtime::docker());
    let f = fixture!();
    let mut opts = LABEL.to_vec();
    opts.extend(["--security-opt", "seccomp=unconfined"]);
    let c = rt.start(Image::Busybox, &opts, &["/bin/sleep", "1000"]);
    let o = attach(&f, &c, &[], &["cat", "/proc/self/status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let session = fields(&stdout(&o));
    assert_eq!(session["Seccomp"], "0");
    assert_within(&session, &status_of(c.pid), "unconfined");
}

#[test]
fn a_rootless_container_with_cap_sys_admin_cannot_remount_the_sessions_toolbox() {
    let rt = runtime!("locked_toolbox", Runtime::rootless_podman());
    let probe = match probe() {
        Ok(p) => p,
        Err(reason) => return skip("attach_bounds::locked_toolbox", &reason),
    };
    let f = fixture!();
    let mut opts = LABEL.to_vec();
    opts.extend(["--network", "none", "--cap-add", "SYS_ADMIN"]);
    let c = rt.start(Image::Busybox, &opts, &["/bin/sleep", "1000"]);
    install_probe(&c, &probe, "/bin/probe");
    let mut session = f.attach_cmd(&format!("pid:{}", c.pid), &[], &["sleep", "60"]);
    let mut session = session
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, inside) = session_sleep(&c);
    let o = c.exec(&["/bin/probe", "enter", &inside.to_string()]);
    let _ = session.kill();
    let _ = session.wait();
    let out = stdout(&o);
    assert!(
        out.contains("enter: ok"),
        "the container may join its own processes' namespaces: {out}{}",
        stderr(&o)
    );
    assert!(
        out.contains("remount: refused"),
        "a container remounted the session's toolbox read-write:\n{out}"
    );
}

#[test]
fn the_profiles_activate_sh_runs_within_the_targets_bounds() {
    let rt = runtime!("activate_sh", Runtime::docker());
    let probe = match probe() {
        Ok(p) => p,
        Err(reason) => return skip("attach_bounds::activate_sh", &reason),
    };
    let f = fixture!();
    let p = f.profile_copy();
    std::fs::write(
        p.join("activate.sh"),
        "#!/bin/sh\ncat /proc/self/status\n/bin/id\n",
    )
    .unwrap();
    // Its tools' flake needs nixpkgs, which is not here.
    let manifest = p.join("agentenv.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("tools =")).collect();
    std::fs::write(&manifest, kept.join("\n")).unwrap();
    let c = rt.start(Image::Busybox, &LABEL, &["/bin/sleep", "1000"]);
    install_probe(&c, &probe, "/bin/id");
    let mut cmd = f.attach_cmd(&c.name, &[], &["true"]);
    cmd.env("AGENTENV_PROFILE", &p);
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_within(&fields(&err), &status_of(c.pid), "activate.sh");
    assert!(err.contains("handle: refused"), "{err}");
    assert!(err.contains("mount: refused"), "{err}");
}
