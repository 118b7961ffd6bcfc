//! dispatch against real sshd hosts: Docker containers on a private network, a minimal Debian
//! with only sshd (scripts/test-hosts.sh), no nix, no git; the user `dev` with key auth.
//! agentenv sends its static build (AGENTENV_DISPATCH_BINARY, set by scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::support::{repo_root, run, stderr, stdout, Fixture};

const IMAGE: &str = "agentenv-test-sshd:1";
const LABEL: &str = "agentenv-test-host";
/// The pid of the test process that made a host or network.
const PID_LABEL: &str = "agentenv-test-pid";

fn pid_label() -> String {
    format!("{PID_LABEL}={}", std::process::id())
}

pub(crate) fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker")
}

/// Why the dispatch tests cannot run here, if they cannot.
pub(crate) fn prerequisites() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            if std::env::var_os("AGENTENV_DISPATCH_BINARY").is_none() {
                return Err("AGENTENV_DISPATCH_BINARY is not set (scripts/test.sh builds a static agentenv and sets it)".into());
            }
            if !docker(&["version"]).status.success() {
                return Err("docker does not answer".into());
            }
            if !docker(&["image", "inspect", IMAGE]).status.success() {
                let ok = Command::new(repo_root().join("scripts/test-hosts.sh"))
                    .arg("image")
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!("cannot build {IMAGE} (scripts/test-hosts.sh image)"));
                }
            }
            Ok(())
        })
        .clone()
}

macro_rules! host_fixture {
    ($test:expr) => {
        match $crate::dispatch::prerequisites() {
            Ok(()) => {}
            Err(reason) => {
                $crate::support::skip(concat!(module_path!(), "::", $test), &reason);
                return;
            }
        }
    };
}
pub(crate) use host_fixture;

/// A private network and an ssh key, shared by the hosts of one test.
pub(crate) struct Lab {
    pub network: String,
    key: PathBuf,
    _keydir: tempfile::TempDir,
    hosts: Vec<String>,
}

/// A host: a container with sshd.
pub(crate) struct Host {
    pub name: String,
    pub ip: String,
}

/// Removes hosts and networks of earlier runs whose test process is gone (a run killed
/// half-way); those of a live run, another's included, stay.
fn sweep_dead_runs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let format = format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
        for kind in ["container", "network"] {
            let filter = format!("label={LABEL}");
            let mut args = vec![kind, "ls", "--filter", &filter, "--format", &format];
            if kind == "container" {
                args.push("-a");
            }
            let o = docker(&args);
            for line in stdout(&o).lines() {
                let mut it = line.split_whitespace();
                let (Some(id), pid) = (it.next(), it.next().and_then(|p| p.parse::<i32>().ok()))
                else {
                    continue;
                };
                let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    let _ = match kind {
                        "container" => docker(&["rm", "-f", id]),
                        _ => docker(&["network", "rm", id]),
                    };
                }
            }
        }
    });
}

/// The address a container has on its network now.
pub(crate) fn container_ip(name: &str) -> String {
    let o = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ]);
    stdout(&o).trim().to_string()
}

impl Lab {
    pub(crate) fn new(test: &str) -> Self {
        sweep_dead_runs();
        let network = format!("agentenv-test-{test}-{}", std::process::id());
        let o = docker(&[
            "network",
            "create",
            "--label",
            LABEL,
            "--label",
            &pid_label(),
            &network,
        ]);
        assert!(o.status.success(), "network: {}", stderr(&o));
        let keydir = tempfile::tempdir().unwrap();
        let key = keydir.path().join("id_ed25519");
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "agentenv-test", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
        Lab {
            network,
            key,
            _keydir: keydir,
            hosts: Vec::new(),
        }
    }

    /// Starts a host; `extra` are more `docker run` options.
    pub(crate) fn host(&mut self, extra: &[&str]) -> Host {
        // User namespaces inside a container need these (environment.md).
        self.host_with_seccomp("unconfined", extra)
    }

    /// Starts a host whose syscalls `seccomp` filters (`unconfined`, or a profile's path).
    pub(crate) fn host_with_seccomp(&mut self, seccomp: &str, extra: &[&str]) -> Host {
        self.start_host(seccomp, extra, &[])
    }

    /// Starts a host that runs containers: it sees the processes of this machine's (its PID
    /// namespace and cgroups are the machine's), root may attach (the capabilities attach
    /// needs) and root logs in with the key, beside `dev`.
    pub(crate) fn container_host(&mut self) -> Host {
        let start = "ssh-keygen -A >/dev/null; for u in root dev; do printf '%s\n' \"$AUTHORIZED_KEY\" > /etc/ssh/authorized/$u; done; chmod 644 /etc/ssh/authorized/*; exec /usr/sbin/sshd -D -e -o PermitRootLogin=prohibit-password";
        let extra = [
            "--pid=host",
            "--cgroupns=host",
            "--cap-add=SYS_ADMIN",
            "--cap-add=SYS_PTRACE",
            "--security-opt",
            "apparmor=unconfined",
        ];
        self.start_host("unconfined", &extra, &["sh", "-c", start])
    }

    /// Starts a container on the lab's network that is no host (no sshd): `command` in the
    /// image, with more `docker run` options `extra`; returns its full id. Removed with the lab.
    pub(crate) fn container(&mut self, extra: &[&str], command: &[&str]) -> String {
        let (o, _) = self.run_container(extra, command);
        stdout(&o).trim().to_string()
    }

    /// `docker run -d` of the image on the lab's network, labelled for the sweep, recorded
    /// for removal; returns docker's output and the container's name.
    fn run_container(&mut self, extra: &[&str], command: &[&str]) -> (Output, String) {
        let name = format!("{}-{}", self.network, self.hosts.len());
        let pid = pid_label();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            LABEL,
            "--label",
            &pid,
            "--network",
            &self.network,
        ];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(command);
        let o = docker(&args);
        assert!(o.status.success(), "docker run: {}", stderr(&o));
        self.hosts.push(name.clone());
        (o, name)
    }

    fn start_host(&mut self, seccomp: &str, extra: &[&str], command: &[&str]) -> Host {
        let pubkey = std::fs::read_to_string(self.key.with_extension("pub")).unwrap();
        let seccomp = format!("seccomp={seccomp}");
        let env = format!("AUTHORIZED_KEY={}", pubkey.trim());
        let mut args = vec![
            "--security-opt",
            &seccomp,
            "--security-opt",
            "systempaths=unconfined",
            "-e",
            &env,
        ];
        args.extend_from_slice(extra);
        let (_, name) = self.run_container(&args, command);
        let ip = container_ip(&name);
        let host = Host { name, ip };
        // sshd is up when it answers.
        for _ in 0..100 {
            if self.ssh(&host, "true").status.success() {
                return host;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("sshd in {} did not come up", host.name);
    }

    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.key.display()
        )
    }

    pub(crate) fn ssh(&self, host: &Host, cmd: &str) -> Output {
        self.ssh_as("dev", host, cmd)
    }

    pub(crate) fn ssh_as(&self, user: &str, host: &Host, cmd: &str) -> Output {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "{} {user}@{} {}",
            self.ssh_command(),
            host.ip,
            shell_quote(cmd)
        ));
        run(c)
    }

    /// `agentenv ARGS...` from the fixture's flake, with ssh set up for the lab.
    pub(crate) fn agentenv(&self, f: &Fixture, args: &[&str]) -> Command {
        let mut c = f.agentenv();
        c.env("AGENTENV_SSH", self.ssh_command()).args(args);
        c
    }

    /// `agentenv dispatch ARGS... dev@HOST -- CMD...` from the fixture's flake.
    pub(crate) fn dispatch(&self, f: &Fixture, host: &Host, args: &[&str], cmd: &[&str]) -> Output {
        self.dispatch_as("dev", f, host, args, cmd)
    }

    /// `agentenv dispatch ARGS... USER@HOST -- CMD...` from the fixture's flake.
    pub(crate) fn dispatch_as(
        &self,
        user: &str,
        f: &Fixture,
        host: &Host,
        args: &[&str],
        cmd: &[&str],
    ) -> Output {
        let mut c = self.agentenv(f, &["dispatch"]);
        c.args(args).arg(format!("{user}@{}", host.ip));
        if !cmd.is_empty() {
            c.arg("--").args(cmd);
        }
        run(c)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = docker(&["rm", "-f", h]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Everything on the host that a session could change: its mount table as the ssh user sees
/// it, the files outside agentenv's directory, the user's processes.
fn host_state(lab: &Lab, host: &Host, agentenv_dir: &str) -> (String, String) {
    let mounts = lab.ssh(host, "cat /proc/self/mountinfo | cut -d' ' -f5 | sort");
    let files = lab.ssh(
        host,
        &format!(
            "find / -xdev -path {agentenv_dir} -prune -o -path /proc -prune -o -path /sys -prune -o -print 2>/dev/null | sort"
        ),
    );
    (stdout(&mounts), stdout(&files))
}

#[test]
fn dispatch_runs_on_the_host_with_the_toolbox_and_carries_exit_codes() {
    host_fixture!("dispatch_runs_on_the_host_with_the_toolbox_and_carries_exit_codes");
    let f = crate::fixture!();
    let mut lab = Lab::new("run");
    let host = lab.host(&[]);
    assert!(
        !lab.ssh(&host, "test -e /nix").status.success(),
        "the host has no nix"
    );

    // The host's own files, the toolbox's variables and tools, the host's PATH first.
    let o = lab.dispatch(
        &f,
        &host,
        &[],
        &[
            "sh",
            "-c",
            "cat /etc/hostname; echo \"$GREETING\"; command -v hello; ls /nix/store | grep -c busybox; exit 7",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("hello from the agentenv example"), "{out}");
    assert!(
        out.contains("/nix/store/"),
        "the toolbox's hello is on PATH: {out}"
    );

    // A command killed by a signal is 128+N, not ssh's 255.
    let o = lab.dispatch(&f, &host, &[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
}

#[test]
fn dispatch_leaves_only_its_cache_and_sends_nothing_twice() {
    host_fixture!("dispatch_leaves_only_its_cache_and_sends_nothing_twice");
    let f = crate::fixture!();
    let mut lab = Lab::new("clean");
    let host = lab.host(&[]);
    let dir = "/home/dev/.agentenv";
    // A build sent by an earlier agentenv: replaced, not kept beside the new one.
    let o = lab.ssh(
        &host,
        &format!("mkdir -m 700 -p {dir}/bin && printf '#!/bin/sh\\n' > {dir}/bin/agentenv-0ld && chmod 700 {dir}/bin/agentenv-0ld"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = host_state(&lab, &host, dir);

    let o = lab.dispatch(
        &f,
        &host,
        &["-v"],
        &["sh", "-c", "echo inside > ~/note; sleep 30 & true"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let first = stderr(&o);

    let after = host_state(&lab, &host, dir);
    assert_eq!(before.0, after.0, "the host's mount table is unchanged");
    assert_eq!(
        before.1, after.1,
        "no file outside agentenv's directory changed"
    );
    let left = lab.ssh(&host, &format!("ls -A {dir}"));
    assert_eq!(
        stdout(&left).split_whitespace().collect::<Vec<_>>(),
        ["bin", "nix"],
        "only the caches remain"
    );
    let bins = stdout(&lab.ssh(&host, &format!("ls {dir}/bin")));
    assert_eq!(bins.lines().count(), 1, "one build of agentenv: {bins}");
    assert!(!bins.contains("0ld"), "{bins}");
    let procs = lab.ssh(&host, "ps -u dev -o comm=");
    let ours: Vec<String> = stdout(&procs)
        .lines()
        .map(str::trim)
        .filter(|c| *c == "sleep" || c.starts_with("agentenv"))
        .map(str::to_string)
        .collect();
    assert!(
        ours.is_empty(),
        "no process of the session is left: {ours:?}"
    );

    // Second time: the binary and every store path are there already.
    let o = lab.dispatch(&f, &host, &["-v"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let second = stderr(&o);
    assert!(first.contains("sent agentenv"), "{first}");
    assert!(second.contains("agentenv is on the host"), "{second}");
    assert!(second.contains("sent 0 of"), "{second}");
}

#[test]
fn dispatch_finds_a_directory_when_tmp_is_noexec_and_home_read_only() {
    host_fixture!("dispatch_finds_a_directory_when_tmp_is_noexec_and_home_read_only");
    let f = crate::fixture!();
    let mut lab = Lab::new("noexec");
    // The home is root's and read-only to dev; every temporary directory is noexec.
    let host = lab.host(&[
        "--mount",
        "type=tmpfs,dst=/home/dev,tmpfs-mode=0555",
        "--tmpfs",
        "/tmp:rw,noexec,nosuid",
        "--tmpfs",
        "/var/tmp:rw,noexec,nosuid",
        "--tmpfs",
        "/srv/work:rw,exec,uid=1000",
    ]);
    let o = lab.dispatch(&f, &host, &[], &["true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("found no directory"), "{err}");
    assert!(
        err.contains("/tmp/agentenv-1000"),
        "what was tried is named: {err}"
    );
    assert!(err.contains("--remote-dir"), "{err}");

    let o = lab.dispatch(
        &f,
        &host,
        &["--remote-dir", "/srv/work/ae"],
        &["sh", "-c", "echo ok"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ok");

    // A directory another user made (and may write) is never used: what it holds would run
    // as dev. Here root planted one with a program under agentenv's own name.
    let planted = "/srv/work/planted";
    let plant = format!(
        "mkdir -p {planted}/bin && cp -a /srv/work/ae/bin/. {planted}/bin/ && chown -R root {planted} && chmod 777 {planted}"
    );
    let o = docker(&["exec", &host.name, "sh", "-c", &plant]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lab.dispatch(&f, &host, &["--remote-dir", planted], &["true"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("not yours alone"), "{err}");
}

#[test]
fn dispatch_to_an_unreachable_host_says_so() {
    host_fixture!("dispatch_to_an_unreachable_host_says_so");
    let f = crate::fixture!();
    let lab = Lab::new("unreachable");
    // A closed port on loopback: refused at once, and no traffic leaves the machine.
    let o = run(lab.agentenv(&f, &["dispatch", "dev@127.0.0.1:1", "--", "true"]));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot connect to dev@127.0.0.1:1"), "{err}");
}

/// Plain git on an agent's memory.
/// `agentenv agent new NAME [--profile DIR]`, which must succeed.
pub(crate) fn new_agent(f: &Fixture, name: &str, profile: Option<&Path>) {
    let mut c = f.agentenv();
    c.args(["agent", "new", name]);
    if let Some(p) = profile {
        c.arg("--profile").arg(p);
    }
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
}

pub(crate) fn memory_git(f: &Fixture, agent: &str, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("--git-dir")
        .arg(f.state.join(format!("data/agents/{agent}/memory.git")))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn dispatch_brings_the_agents_learnings_back_and_merges_them_with_local_ones() {
    host_fixture!("dispatch_brings_the_agents_learnings_back_and_merges_them_with_local_ones");
    let f = crate::fixture!();
    let mut lab = Lab::new("memory");
    let host = lab.host(&[]);
    new_agent(&f, "scout", None);
    // A first local session writes two lines the next sessions start from.
    let o = f.run_in_with(
        &["--agent", "scout"],
        &[
            "sh",
            "-c",
            "printf 'line one\\nkeep a\\nkeep b\\nkeep c\\nline two\\n' > ~/.claude/CLAUDE.md",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // The dispatched session changes line one while a local one, begun and ended during it,
    // changes line two (apart from it: changes to touching lines are a conflict): both land,
    // merged.
    let o = dispatch_beside_local(
        &f,
        &lab,
        &host,
        "cat ~/.claude/CLAUDE.md && sed -i 's/line one/line one, learned on the host/' ~/.claude/CLAUDE.md && echo note > ~/.agent-memory/host.md",
        "s=$(sed 's/line two/line two, local/' ~/.claude/CLAUDE.md) && printf '%s\\n' \"$s\" > ~/.claude/CLAUDE.md",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("line two"),
        "the memory went along: {}",
        stdout(&o)
    );
    let claude = memory_git(&f, "scout", &["show", "main:.claude/CLAUDE.md"]);
    assert_eq!(
        claude,
        "line one, learned on the host\nkeep a\nkeep b\nkeep c\nline two, local\n"
    );
    assert_eq!(
        memory_git(&f, "scout", &["show", "main:.agent-memory/host.md"]),
        "note\n"
    );
    let log = memory_git(&f, "scout", &["log", "--format=%B", "main"]);
    assert!(
        log.contains(&host.ip),
        "the host is named in the provenance: {log}"
    );
    assert!(log.contains("dispatch"), "{log}");

    // The same line changed on both sides at once: both kept, no conflict markers.
    let o = dispatch_beside_local(
        &f,
        &lab,
        &host,
        "sed -i 's/line two.*/line two, remote/' ~/.claude/CLAUDE.md",
        "s=$(sed 's/line two.*/line two, local again/' ~/.claude/CLAUDE.md) && printf '%s\\n' \"$s\" > ~/.claude/CLAUDE.md",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let tree = memory_git(&f, "scout", &["ls-tree", "-r", "--name-only", "main"]);
    let claude = memory_git(&f, "scout", &["show", "main:.claude/CLAUDE.md"]);
    assert!(
        !claude.contains("<<<<<<<") && !claude.contains(">>>>>>>"),
        "{claude}"
    );
    let sides: String = tree
        .lines()
        .filter(|p| p.starts_with(".claude/CLAUDE.md"))
        .map(|p| memory_git(&f, "scout", &["show", &format!("main:{p}")]))
        .collect();
    assert!(sides.contains("line two, local again"), "{tree}\n{sides}");
    assert!(sides.contains("line two, remote"), "{tree}\n{sides}");
}

/// Dispatches `remote` as the agent scout, and while it runs (its memory session begun) runs
/// `local` in a local session of scout to its end.
fn dispatch_beside_local(f: &Fixture, lab: &Lab, host: &Host, remote: &str, local: &str) -> Output {
    let sessions = f.state.join("data/agents/scout/sessions");
    let count = || std::fs::read_dir(&sessions).map(|d| d.count()).unwrap_or(0);
    let before = count();
    let mut c = lab.agentenv(f, &["dispatch", "--agent", "scout"]);
    c.arg(format!("dev@{}", host.ip))
        .args(["--", "sh", "-c"])
        .arg(format!("sleep 8; {remote}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let start = std::time::Instant::now();
    while count() <= before && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = f.run_in_with(&["--agent", "scout"], &["sh", "-c", local]);
    assert!(o.status.success(), "{}", stderr(&o));
    crate::support::wait_output(child)
}
