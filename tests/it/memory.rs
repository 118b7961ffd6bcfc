//! `--agent`: an agent's memory writable in real sandboxes, committed to a real git repository
//! when the session ends, merged three-way when sessions overlap, and landed after a kill.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::containers::{Image, Runtime};
use crate::support::{run, spawn_until_ready, stderr, stdout, wait_output, Fixture};
use crate::{fixture, runtime};

/// A copy of examples/profile without `tools` (their flake needs nixpkgs), with a CLAUDE.md
/// the agent's memory starts from.
fn profile_copy(f: &Fixture) -> PathBuf {
    let dir = f.profile_copy_without_tools();
    std::fs::create_dir_all(dir.join("home/.claude")).unwrap();
    std::fs::write(dir.join("home/.claude/CLAUDE.md"), "# from the profile\n").unwrap();
    let _ = std::fs::remove_file(dir.join("activate.sh"));
    dir
}

fn agentenv(f: &Fixture, args: &[&str]) -> Output {
    let mut c = f.agentenv();
    c.args(args);
    run(c)
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

fn new_agent(f: &Fixture, profile: Option<&Path>) {
    let mut args = vec!["agent", "new", "ana"];
    let p;
    if let Some(dir) = profile {
        p = dir.to_string_lossy().into_owned();
        args.extend(["--profile", &p]);
    }
    ok(agentenv(f, &args));
}

/// Plain git on the agent's memory, as a user would read it.
fn git(f: &Fixture, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("--git-dir")
        .arg(f.state.join("data/agents/ana/memory.git"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn in_sandbox(f: &Fixture, script: &str) -> Output {
    f.run_in_with(&["--agent", "ana"], &["sh", "-c", script])
}

fn commits(f: &Fixture) -> usize {
    git(f, &["rev-list", "--count", "main"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_session_that_appends_to_claude_md_and_writes_a_skill_is_one_commit_with_provenance() {
    let f = fixture!();
    let p = profile_copy(&f);
    new_agent(&f, Some(&p));
    let script = "cat ~/.claude/CLAUDE.md; echo 'run make check first' >> ~/.claude/CLAUDE.md; \
                  mkdir -p ~/.claude/skills/deploy; printf -- '---\\nname: deploy\\n---\\n' > ~/.claude/skills/deploy/SKILL.md; \
                  ls ~/.claude/skills; echo note > ~/.agent-memory/n.md";
    let out = ok(in_sandbox(&f, script));
    // The memory started from the profile's CLAUDE.md; the profile's skill is there beside
    // the agent's.
    assert_eq!(out, "# from the profile\ncommit-message\ndeploy\n");
    assert_eq!(commits(&f), 2, "the seed, then one commit for the session");
    assert_eq!(
        git(&f, &["show", "main:.claude/CLAUDE.md"]),
        "# from the profile\nrun make check first\n"
    );
    let files = git(&f, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(
        files, ".agent-memory/n.md\n.claude/CLAUDE.md\n.claude/skills/deploy/SKILL.md\n",
        "the profile's skill is the profile's, not the memory's"
    );
    let trailers = git(&f, &["log", "-1", "--format=%(trailers)", "main"]);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    for want in [
        "Agent: ana".to_string(),
        format!("Host: {host}"),
        format!("Project: {}", f.flake.display()),
        "Backend: linux".into(),
        "Command: sh -c".into(),
        "Started: 20".into(),
        "Ended: 20".into(),
    ] {
        assert!(trailers.contains(&want), "{want} in {trailers}");
    }
    // The project's own home (without the agent) has none of it.
    let bare = f.run_in(&["sh", "-c", "ls ~/.agent-memory 2>&1; true"]);
    assert!(!stdout(&bare).contains("n.md"), "{}", stdout(&bare));
    // A session that changes nothing adds no commit.
    ok(in_sandbox(&f, "cat ~/.agent-memory/n.md"));
    assert_eq!(commits(&f), 2);
}

/// Starts a session that runs `first`, says ready, and waits for `go` in the project.
fn parallel_session(f: &Fixture, first: &str) -> std::process::Child {
    let script = format!("{first}; echo ready; while [ ! -e go ]; do sleep 0.05; done");
    let mut c = f.agentenv();
    c.args(["--agent", "ana", ".", "--", "sh", "-c", &script]);
    spawn_until_ready(c).0
}

#[test]
fn overlapping_sessions_merge_cleanly_or_keep_a_conflict_without_markers() {
    let f = fixture!();
    new_agent(&f, None);
    ok(in_sandbox(
        &f,
        "printf 'one\\ntwo\\nthree\\nfour\\nfive\\n' > ~/.agent-memory/notes.md; echo 'tabs' > ~/.codex/AGENTS.md",
    ));
    // Different lines of one file: merged.
    let a = parallel_session(&f, "sed -i s/one/ONE/ ~/.agent-memory/notes.md");
    ok(in_sandbox(
        &f,
        "sed -i s/five/FIVE/ ~/.agent-memory/notes.md",
    ));
    std::fs::write(f.flake.join("go"), "").unwrap();
    let o = wait_output(a);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(f.flake.join("go")).unwrap();
    assert_eq!(
        git(&f, &["show", "main:.agent-memory/notes.md"]),
        "ONE\ntwo\nthree\nfour\nFIVE\n"
    );
    // The same line: the file keeps the side that landed first, the other is kept beside it.
    let a = parallel_session(&f, "echo 'spaces' > ~/.codex/AGENTS.md");
    ok(in_sandbox(&f, "echo 'two tabs' > ~/.codex/AGENTS.md"));
    std::fs::write(f.flake.join("go"), "").unwrap();
    let o = wait_output(a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("memory status ana"), "{}", stderr(&o));
    assert_eq!(git(&f, &["show", "main:.codex/AGENTS.md"]), "two tabs\n");
    let files = git(&f, &["ls-tree", "-r", "--name-only", "main"]);
    let beside = files
        .lines()
        .find(|l| l.starts_with(".codex/AGENTS.md.conflict-"))
        .unwrap_or_else(|| panic!("the other side is kept: {files}"));
    assert_eq!(git(&f, &["show", &format!("main:{beside}")]), "spaces\n");
    for file in files.lines() {
        let text = git(&f, &["show", &format!("main:{file}")]);
        assert!(
            !text.contains("<<<<<<<") && !text.contains(">>>>>>>"),
            "{file}: {text}"
        );
    }
    let status = ok(agentenv(&f, &["memory", "status", "ana"]));
    assert!(status.contains(&format!("~/{beside}")), "{status}");
    // The next session sees the live memory's side.
    assert_eq!(ok(in_sandbox(&f, "cat ~/.codex/AGENTS.md")), "two tabs\n");
    ok(agentenv(
        &f,
        &[
            "memory",
            "resolve",
            "ana",
            ".codex/AGENTS.md",
            "--take",
            "other",
        ],
    ));
    assert_eq!(git(&f, &["show", "main:.codex/AGENTS.md"]), "spaces\n");
    let status = ok(agentenv(&f, &["memory", "status", "ana"]));
    assert!(status.contains("no conflicts"), "{status}");
}

#[test]
fn revert_restores_what_a_session_changed() {
    let f = fixture!();
    new_agent(&f, None);
    ok(in_sandbox(&f, "echo keep > ~/.agent-memory/a.md"));
    ok(in_sandbox(
        &f,
        "echo wrong > ~/.agent-memory/b.md; echo changed > ~/.agent-memory/a.md",
    ));
    let bad = git(&f, &["rev-parse", "main"]);
    ok(in_sandbox(&f, "echo later > ~/.agent-memory/c.md"));
    ok(agentenv(&f, &["memory", "revert", "ana", bad.trim()]));
    assert_eq!(
        git(&f, &["ls-tree", "-r", "--name-only", "main"]),
        ".agent-memory/a.md\n.agent-memory/c.md\n"
    );
    assert_eq!(git(&f, &["show", "main:.agent-memory/a.md"]), "keep\n");
    let log = ok(agentenv(&f, &["memory", "log", "ana"]));
    assert!(log.contains("revert "), "{log}");
}

/// The sandbox's PID 1 among the children of `parent`: the one that is 1 in its namespace.
fn pid1_under(parent: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:\t"));
            let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:\t"));
            if ppid == Some(&parent.to_string()) && nspid.is_some_and(|n| n.ends_with("\t1")) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no PID 1 under {parent}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_killed_session_loses_nothing_it_wrote() {
    let f = fixture!();
    new_agent(&f, None);
    let script = "echo learned > ~/.agent-memory/k.md; echo ready; exec sleep 60";
    // kill -9 of agentenv: its sandbox dies with it; the next command on the agent lands it.
    let mut c = f.agentenv();
    c.args(["--agent", "ana", ".", "--", "sh", "-c", script]);
    let (session, _) = spawn_until_ready(c);
    kill9(session.id() as i32);
    let _ = wait_output(session);
    ok(agentenv(&f, &["agent", "show", "ana"]));
    assert_eq!(git(&f, &["show", "main:.agent-memory/k.md"]), "learned\n");

    // kill -9 of the sandbox's PID 1: agentenv lands it as it ends.
    let script = "echo also > ~/.agent-memory/p.md; echo ready; exec sleep 60";
    let mut c = f.agentenv();
    c.args(["--agent", "ana", ".", "--", "sh", "-c", script]);
    let (session, _) = spawn_until_ready(c);
    kill9(pid1_under(session.id()));
    let o = wait_output(session);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_eq!(git(&f, &["show", "main:.agent-memory/p.md"]), "also\n");

    // kill -9 of a persistent environment's PID 1: landed by the next command.
    let id = f.up(&["--agent", "ana"]);
    let o = f.exec(&id, &["sh", "-c", "echo from-exec > ~/.agent-memory/e.md"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Each exec lands what it changed.
    assert_eq!(git(&f, &["show", "main:.agent-memory/e.md"]), "from-exec\n");
    let o = f.exec(
        &id,
        &[
            "sh",
            "-c",
            "(echo unlanded > ~/.agent-memory/u.md; sleep 60) >/dev/null 2>&1 &",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(300));
    let state = std::fs::read_to_string(f.state.join("run").join(&id).join("state.json")).unwrap();
    let pid = serde_json::from_str::<serde_json::Value>(&state).unwrap()["pid"]
        .as_i64()
        .unwrap();
    kill9(pid as i32);
    std::thread::sleep(Duration::from_millis(300));
    ok(agentenv(&f, &["memory", "status", "ana"]));
    assert_eq!(git(&f, &["show", "main:.agent-memory/u.md"]), "unlanded\n");
    assert!(crate::support::list(&f.state.join("data/agents/ana/sessions")).is_empty());
}

#[test]
fn a_planted_link_in_the_memory_is_kept_as_a_link_and_never_followed() {
    let f = fixture!();
    new_agent(&f, None);
    let secret = f.tmp.path().join("host-secret");
    std::fs::write(&secret, "host only\n").unwrap();
    let script = format!(
        "ln -s {} ~/.agent-memory/leak; mkdir -p ~/.agent-memory/d && ln -s / ~/.agent-memory/d/root",
        secret.display()
    );
    ok(in_sandbox(&f, &script));
    let tree = git(&f, &["ls-tree", "-r", "main"]);
    assert!(tree.contains("120000 blob"), "{tree}");
    assert_eq!(
        git(&f, &["cat-file", "-p", "main:.agent-memory/leak"]),
        secret.display().to_string()
    );
    assert!(!git(&f, &["log", "-p", "main"]).contains("host only"));

    // A link planted in the agent's home where a place's mount point goes is not followed by
    // the next session's set-up on the host.
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let plant = format!(
        "mv ~/.codex ~/.codex-old && ln -s {} ~/.codex",
        outside.display()
    );
    ok(in_sandbox(&f, &plant));
    ok(in_sandbox(&f, "echo fine > ~/.codex/AGENTS.md"));
    assert!(
        crate::support::list(&outside).is_empty(),
        "nothing is made through the link"
    );
    assert_eq!(git(&f, &["show", "main:.codex/AGENTS.md"]), "fine\n");
}

#[test]
fn attach_with_an_agent_leaves_no_trace_in_the_target() {
    let rt = runtime!("attach_memory", Runtime::podman());
    let f = fixture!();
    let p = profile_copy(&f);
    new_agent(&f, Some(&p));
    let c = rt.start(
        Image::Busybox,
        &["--label", "agentenv.test=memory"],
        &["/bin/sleep", "1000"],
    );
    let before = c.snapshot();
    let script = "echo 'the target logs to /var/log/app' >> ~/.claude/CLAUDE.md; \
                  mkdir -p ~/.claude/skills/logs && echo logs > ~/.claude/skills/logs/SKILL.md; \
                  ls ~/.claude/skills; echo ready; exec sleep 60";
    let cmd = f.attach_cmd(&c.name, &["--agent", "ana"], &["sh", "-c", script]);
    let (session, out) = spawn_until_ready(cmd);
    assert_eq!(out, "commit-message\nlogs\n");
    let root = PathBuf::from(format!("/proc/{}/root", c.pid));
    assert!(!root.join("root/.claude").exists());
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.pid)).unwrap();
    assert!(!mountinfo.contains("agents/ana"), "{mountinfo}");
    assert_eq!(c.snapshot(), before, "nothing changes while a session runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(session.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = wait_output(session);
    assert_eq!(c.snapshot(), before, "the target is exactly as before");
    assert!(c.is_running());
    assert_eq!(
        git(&f, &["show", "main:.claude/CLAUDE.md"]),
        "# from the profile\nthe target logs to /var/log/app\n"
    );
    assert_eq!(
        git(&f, &["show", "main:.claude/skills/logs/SKILL.md"]),
        "logs\n"
    );
    let trailers = git(&f, &["log", "-1", "--format=%(trailers)", "main"]);
    assert!(trailers.contains("Backend: attach"), "{trailers}");
}
