//! The backend seam: the backend is chosen in one place and recorded; an exec into a running
//! environment needs no nix; the guest program serves the protocol on its own stdio, as on a
//! remote host.

use std::process::{Command, Stdio};

use agentenv::proto::client::AgentClient;
use agentenv::proto::message::{ExecSpec, Response};
use agentenv::transport::Transport;

use crate::fixture;
use crate::support::{agentenv_bin, run, stderr, stdout};

#[test]
fn exec_needs_no_nix_and_gets_the_environment_up_started() {
    let f = fixture!();
    let id = f.up(&[]);
    f.edit_flake(
        "hello from the agentenv example",
        "edited after the environment started",
    );
    let mut c = f.agentenv();
    // No nix anywhere on PATH: the exec must not need it.
    c.env("PATH", "/nonexistent")
        .args(["exec", &id, "--", "sh", "-c", "echo $GREETING"]);
    let o = run(c);
    f.down(&id);
    assert!(o.status.success(), "exec: {}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the agentenv example\n");
}

#[test]
fn the_backend_is_chosen_by_flag_or_config_and_recorded() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args(["--backend", "teleport", ".", "--", "true"]);
    let o = run(c);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no backend called 'teleport'") && stderr(&o).contains("hint: "),
        "{}",
        stderr(&o)
    );

    std::fs::create_dir_all(f.state.join("config")).unwrap();
    std::fs::write(
        f.state.join("config/config.toml"),
        "backend = \"teleport\"\n",
    )
    .unwrap();
    let o = run({
        let mut c = f.agentenv();
        c.args([".", "--", "true"]);
        c
    });
    assert_eq!(o.status.code(), Some(1), "config.toml's backend is used");
    // The command line wins over config.toml.
    let id = f.up(&["--backend", "namespaces"]);
    let mut c = f.agentenv();
    c.args(["ps", "--json"]);
    let o = run(c);
    f.down(&id);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["backend"], "namespaces", "{rows:#}");
}

fn spec(command: &str, cwd: &std::path::Path) -> ExecSpec {
    ExecSpec {
        rc_script: String::new(),
        shell: "/bin/bash".into(),
        command: Some(vec!["sh".into(), "-c".into(), command.into()]),
        cwd: cwd.to_path_buf(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        prompt_name: "guest".into(),
        tty: None,
        stdin_script: false,
        passed_stdio: false,
    }
}

#[test]
fn the_guest_program_serves_the_protocol_on_its_stdio() {
    let tmp = tempfile::tempdir().unwrap();
    let spec_file = tmp.path().join("guest.json");
    std::fs::write(
        &spec_file,
        r#"{"work": {"type": "serve", "listen": {"kind": "stdio"}}}"#,
    )
    .unwrap();
    let mut child = Command::new(agentenv_bin())
        .arg("__guest")
        .arg("--spec")
        .arg(&spec_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let to_guest = std::os::fd::OwnedFd::from(child.stdin.take().unwrap());
    let from_guest = std::os::fd::OwnedFd::from(child.stdout.take().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let left = rt.block_on(async {
        let stream: Box<dyn Transport> = Box::new(tokio::io::join(
            tokio::net::unix::pipe::Receiver::from_owned_fd(from_guest).unwrap(),
            tokio::net::unix::pipe::Sender::from_owned_fd(to_guest).unwrap(),
        ));
        let mut client = AgentClient::over(stream).await.unwrap();
        let out = tmp.path().join("out");
        let cmd = format!("echo over pipes > {}; exit 5", out.display());
        assert_eq!(client.exec(spec(&cmd, tmp.path()), false).await.unwrap(), 5);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "over pipes\n");
        // One connection, several requests: what a transport with dear connections needs.
        let sleeper = client.exec(spec("sleep 30 & exit 0", tmp.path()), false);
        assert_eq!(sleeper.await.unwrap(), 0);
        let left = match client.ps().await.unwrap() {
            Response::Processes { processes, .. } => processes,
            other => panic!("{other:?}"),
        };
        assert!(
            left.iter().any(|p| p.command == "sleep 30"),
            "ps lists what an exec left running: {left:?}"
        );
        client.shutdown(200).await.unwrap();
        left
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the guest exits after a shutdown");
    for p in left {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "{} outlived the guest's shutdown",
            p.command
        );
    }
}
