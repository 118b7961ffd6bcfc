//! dispatch --container: a session in a container on the host, as `agentenv attach` there.
//! The host is a container with sshd that sees this machine's processes (as a machine running
//! containers sees its own); the target is a container on the same network, not changed by the
//! session: its files (`docker diff`) and mount table stay as they were.

use crate::dispatch::{docker, host_fixture, memory_git, new_agent, Lab};
use crate::support::{run, stderr, stdout};

/// The target's mount table and changed files, as docker sees them from outside.
fn target_state(id: &str) -> (String, String) {
    let pid = stdout(&docker(&["inspect", "-f", "{{.State.Pid}}", id]));
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim()))
        .expect("the target's mount table");
    (mounts, stdout(&docker(&["diff", id])))
}

#[test]
fn dispatch_runs_in_a_container_on_the_host_and_leaves_it_as_it_was() {
    host_fixture!("dispatch_runs_in_a_container_on_the_host_and_leaves_it_as_it_was");
    let f = crate::fixture!();
    let mut lab = Lab::new("container");
    let host = lab.container_host();
    let id = lab.container(&[], &["sleep", "infinity"]);
    let short = &id[..12];
    let before = target_state(&id);

    // The container's files (its hostname is its short id) and processes (its PID 1), the
    // toolbox's variables and tools; exit codes as in any dispatch.
    let look = "cat /etc/hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; echo \"$GREETING\"; \
                command -v hello; hello; exit 7";
    let o = lab.dispatch_as(
        "root",
        &f,
        &host,
        &["--container", short],
        &["sh", "-c", look],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("{short}\n")),
        "in the container: {out}"
    );
    assert!(out.contains("sleep infinity"), "its processes: {out}");
    assert!(out.contains("hello from the agentenv example"), "{out}");
    assert!(out.contains("/nix/store/"), "the toolbox's hello: {out}");
    assert!(
        !stderr(&o).contains("warning"),
        "the host was left clean: {}",
        stderr(&o)
    );
    let o = lab.dispatch_as(
        "root",
        &f,
        &host,
        &["--container", short],
        &["sh", "-c", "kill -TERM $$"],
    );
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));

    // By PID too; a shell script on stdin when no command is given.
    let pid = stdout(&docker(&["inspect", "-f", "{{.State.Pid}}", &id]));
    let pid_target = format!("pid:{}", pid.trim());
    let mut c = lab.agentenv(&f, &["dispatch", "--container", &pid_target]);
    c.arg(format!("root@{}", host.ip))
        .stdin(std::process::Stdio::piped());
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"cat /etc/hostname\nexit 3\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{short}\n"));

    // Detached: listed with its container, followed to its end.
    let o = lab.dispatch_as(
        "root",
        &f,
        &host,
        &["--detach", "--container", short],
        &["sh", "-c", "sleep 1; cat /etc/hostname; exit 5"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let session = stdout(&o).trim().to_string();
    let mut c = f.agentenv();
    c.arg("ps");
    let listed = stdout(&run(c));
    assert!(
        listed.contains(&format!("root@{} in {short}", host.ip)),
        "{listed}"
    );
    let o = run(lab.agentenv(&f, &["dispatch", "--attach", &session]));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{short}\n"));

    assert_eq!(target_state(&id), before, "the container is as it was");
    let left = lab.ssh_as("root", &host, "ls -A /root/.agentenv");
    assert_eq!(
        stdout(&left),
        "bin\nnix\n",
        "only the content cache is left"
    );

    // Attaching is root's: as another user, said before anything is sent.
    let o = lab.dispatch(&f, &host, &["--container", short], &["true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("needs CAP_SYS_ADMIN"), "{err}");
    assert!(err.contains(&format!("root@{}", host.ip)), "{err}");
    let o = lab.dispatch_as("root", &f, &host, &["--container", "nosuch"], &["true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("no running container matches 'nosuch'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dispatch_into_a_container_takes_the_agent_and_its_profile_to_its_user() {
    host_fixture!("dispatch_into_a_container_takes_the_agent_and_its_profile_to_its_user");
    let f = crate::fixture!();
    let mut lab = Lab::new("container-agent");
    let host = lab.container_host();
    // The image's user `dev` (uid 1000) runs the container.
    let id = lab.container(&["--user", "1000:1000"], &["sleep", "infinity"]);
    let short = &id[..12];
    let before = target_state(&id);
    let profile = f.profile_copy_without_tools();
    new_agent(&f, "scout", Some(&profile));

    // root's agentenv directory is in /root, which the container's user may not pass.
    let o = lab.dispatch_as(
        "root",
        &f,
        &host,
        &["--agent", "scout", "--container", short],
        &["true"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("out of reach of uid 1000"), "{err}");
    assert!(err.contains("--remote-dir"), "{err}");

    let look = "id -u; echo \"$HOME\"; readlink ~/.bashrc; hello-profile; \
                echo learned in the container > ~/.agent-memory/container.md";
    let o = lab.dispatch_as(
        "root",
        &f,
        &host,
        &[
            "--agent",
            "scout",
            "--remote-dir",
            "/var/tmp/agentenv-root",
            "--container",
            short,
        ],
        &["sh", "-c", look],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("1000\n/home/dev\n"),
        "as the container's user: {out}"
    );
    assert!(
        out.contains("/var/tmp/agentenv-root/profiles/profile-"),
        "linked to the profile's copy: {out}"
    );
    assert!(out.contains("hello from the profile"), "its bin/: {out}");
    assert_eq!(
        memory_git(&f, "scout", &["show", "main:.agent-memory/container.md"]),
        "learned in the container\n"
    );
    assert_eq!(target_state(&id), before, "the container is as it was");
}
