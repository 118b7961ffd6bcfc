//! The agent and the client over an in-memory stream: no descriptors pass and no peer is
//! named, so this is the path every transport but a unix socket takes.

use std::ffi::OsString;

use crate::proto::client::AgentClient;
use crate::proto::message::{ExecSpec, Response};
use crate::transport::{OneConnection, Transport};

fn spec(command: &str, cwd: &std::path::Path) -> ExecSpec {
    ExecSpec {
        rc_script: String::new(),
        shell: "/bin/bash".into(),
        command: Some(vec!["sh".into(), "-c".into(), OsString::from(command)]),
        cwd: cwd.to_path_buf(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        prompt_name: "test".into(),
        tty: None,
        stdin_script: false,
        passed_stdio: false,
    }
}

#[test]
fn the_protocol_runs_over_an_in_memory_stream_with_several_requests_per_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let agent = std::thread::spawn(move || {
        let theirs: Box<dyn Transport> = Box::new(theirs);
        super::run_agent(move || Ok(OneConnection::new(theirs)), || {})
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = AgentClient::over(Box::new(ours)).await.unwrap();
        let out = tmp.path().join("out");
        let write = format!("echo written > {}; exit 7", out.display());
        assert_eq!(
            client.exec(spec(&write, tmp.path()), false).await.unwrap(),
            7
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "written\n");
        // The same connection carries the next requests.
        assert_eq!(
            client
                .exec(spec("exit 0", tmp.path()), false)
                .await
                .unwrap(),
            0
        );
        match client.ps().await.unwrap() {
            Response::Processes { processes, .. } => assert!(processes.is_empty()),
            other => panic!("{other:?}"),
        }
        let missing = tmp.path().join("missing");
        let err = client
            .exec(spec("true", &missing), false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("no such directory"), "{err:#}");
        client.shutdown(100).await.unwrap();
    });
    assert_eq!(agent.join().unwrap(), 0, "the agent ends after a shutdown");
}
