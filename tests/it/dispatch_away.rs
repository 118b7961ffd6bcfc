//! dispatch sessions that outlive their connection, against real sshd hosts (see dispatch.rs):
//! `--detach` then `--attach`, and a link cut mid-run (`docker network disconnect`) then
//! `--collect`; in both the agent's learnings come back and the host is left clean.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::dispatch::{container_ip, host_fixture, memory_git, new_agent, Host, Lab};
use crate::support::{self, run, stderr, stdout, Fixture};

const DIR: &str = "/home/dev/.agentenv";

/// `agentenv ARGS...` with `ssh` set up for the lab, through `config` when given (a Host
/// alias for the host).
fn agentenv(f: &Fixture, lab: &Lab, config: Option<&Path>, args: &[&str]) -> Command {
    let mut c = lab.agentenv(f, args);
    if let Some(cfg) = config {
        c.env(
            "AGENTENV_SSH",
            format!("{} -F {}", lab.ssh_command(), cfg.display()),
        );
    }
    c
}

/// What of the session is left on the host: agentenv's directory, and our processes.
fn leftovers(lab: &Lab, host: &Host) -> (Vec<String>, Vec<String>) {
    let left = lab.ssh(host, &format!("ls -A {DIR}"));
    let procs = lab.ssh(host, "ps -u dev -o comm=");
    let ours = stdout(&procs)
        .lines()
        .map(str::trim)
        .filter(|c| *c == "sleep" || c.starts_with("agentenv"))
        .map(str::to_string)
        .collect();
    (
        stdout(&left)
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        ours,
    )
}

fn dispatched_rows(f: &Fixture) -> Vec<serde_json::Value> {
    let mut c = f.agentenv();
    c.args(["ps", "--json"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    rows.into_iter()
        .filter(|r| r["backend"] == "dispatch")
        .collect()
}

#[test]
fn a_detached_command_runs_on_and_attach_follows_it_and_brings_its_learnings_back() {
    host_fixture!("a_detached_command_runs_on_and_attach_follows_it_and_brings_its_learnings_back");
    let f = crate::fixture!();
    let mut lab = Lab::new("detach");
    let host = lab.host(&[]);
    new_agent(&f, "runner", None);
    let target = format!("dev@{}", host.ip);
    let mut c = agentenv(
        &f,
        &lab,
        None,
        &["dispatch", "--agent", "runner", "--detach", &target, "--"],
    );
    c.args([
        "sh",
        "-c",
        "echo started; sleep 4; echo learned > ~/.agent-memory/detached.md; echo done >&2; exit 5",
    ]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
    assert!(stderr(&o).contains("--attach"), "{}", stderr(&o));

    // It runs without us: listed here, its process there.
    let rows = dispatched_rows(&f);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["dispatch"]["standing"], "detached");
    assert_eq!(rows[0]["dispatch"]["target"], target.as_str());
    let (_, procs) = leftovers(&lab, &host);
    assert!(procs.iter().any(|p| p == "sleep"), "{procs:?}");
    // Collecting leaves a command that still runs alone.
    let o = run(agentenv(
        &f,
        &lab,
        None,
        &["dispatch", "--collect", &target],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("still running"), "{}", stderr(&o));

    let o = run(agentenv(&f, &lab, None, &["dispatch", "--attach", &id]));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "started\ndone\n");
    assert_eq!(
        memory_git(&f, "runner", &["show", "main:.agent-memory/detached.md"]),
        "learned\n"
    );
    assert!(
        memory_git(&f, "runner", &["log", "--format=%B", "main"]).contains(&host.ip),
        "the host is named in the provenance"
    );
    let (files, procs) = leftovers(&lab, &host);
    assert_eq!(files, ["bin", "nix"], "only the caches remain");
    assert!(
        procs.is_empty(),
        "no process of the session is left: {procs:?}"
    );
    assert!(dispatched_rows(&f).is_empty());

    // Gone: attaching again says so.
    let o = run(agentenv(&f, &lab, None, &["dispatch", "--attach", &id]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no dispatched session"),
        "{}",
        stderr(&o)
    );
}

/// An ssh config naming the host `cut` at `ip`.
fn write_config(path: &Path, ip: &str) {
    std::fs::write(path, format!("Host cut\n  HostName {ip}\n")).unwrap();
}

#[test]
fn a_cut_link_is_noticed_and_collect_brings_the_learnings_back() {
    host_fixture!("a_cut_link_is_noticed_and_collect_brings_the_learnings_back");
    let f = crate::fixture!();
    let mut lab = Lab::new("cut");
    let host = lab.host(&[]);
    new_agent(&f, "wanderer", None);
    let config = f.tmp.path().join("ssh_config");
    write_config(&config, &host.ip);
    let mut c = agentenv(
        &f,
        &lab,
        Some(&config),
        &["dispatch", "--agent", "wanderer", "dev@cut", "--"],
    );
    c.args([
        "sh",
        "-c",
        "echo found it > ~/.agent-memory/cut.md; sleep 300",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = c.spawn().unwrap();

    // Once the learning is written on the host, the link goes.
    let written = format!("ls {DIR}/sessions/*/home/.agent-memory/cut.md");
    let start = Instant::now();
    while !lab.ssh(&host, &written).status.success() {
        assert!(start.elapsed() < Duration::from_secs(120), "never written");
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = Command::new("docker")
        .args(["network", "disconnect", &lab.network, &host.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o: Output = support::wait_output(child);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(err.contains("lost the connection to dev@cut"), "{err}");
    assert!(err.contains("--collect dev@cut"), "{err}");
    let tree = memory_git(&f, "wanderer", &["ls-tree", "-r", "--name-only", "main"]);
    assert!(!tree.contains("cut.md"), "nothing landed half-way: {tree}");
    let rows = dispatched_rows(&f);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["dispatch"]["standing"], "link-lost");

    // A local session of the agent meanwhile does not land the away session's tree.
    let o = f.run_in_with(&["--agent", "wanderer"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = Command::new("docker")
        .args(["network", "connect", &lab.network, &host.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let host = Host {
        name: host.name.clone(),
        ip: container_ip(&host.name),
    };
    write_config(&config, &host.ip);
    // Back on the network, the host answers once its route is up.
    let start = Instant::now();
    while !lab.ssh(&host, "true").status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the host did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = run(agentenv(
        &f,
        &lab,
        Some(&config),
        &["dispatch", "--collect", "dev@cut"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("learnings are back"), "{}", stderr(&o));
    assert_eq!(
        memory_git(&f, "wanderer", &["show", "main:.agent-memory/cut.md"]),
        "found it\n"
    );
    let (files, procs) = leftovers(&lab, &host);
    assert_eq!(files, ["bin", "nix"], "only the caches remain");
    assert!(
        procs.is_empty(),
        "no process of the session is left: {procs:?}"
    );
    assert!(dispatched_rows(&f).is_empty());
}
