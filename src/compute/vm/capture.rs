//! Running a command in a VM's guest and keeping its output: for what the host needs to read
//! back (nix's evaluation of the dev environment, checks).

use anyhow::{Context, Result};

use crate::proto::frame::handshake;
use crate::proto::message::{ExecSpec, Request, Response};
use crate::proto::{read_frame, write_frame, Frame};
use crate::transport::AgentAddress;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `spec` (its stdin closed) on the agent at `agent` and collects its output.
pub fn capture(agent: &AgentAddress, mut spec: ExecSpec) -> Result<Captured> {
    spec.passed_stdio = false;
    spec.tty = None;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let mut s = agent
            .connect()
            .await
            .with_context(|| format!("cannot reach the guest agent ({agent})"))?;
        handshake(&mut s).await?;
        write_frame(&mut s, &Frame::Request(Request::Exec(spec))).await?;
        write_frame(&mut s, &Frame::StdinClose).await?;
        let mut out = Captured {
            code: -1,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        loop {
            match read_frame(&mut s).await? {
                Some(Frame::Response(Response::Error { message })) => {
                    anyhow::bail!("the guest refused to run it: {message}")
                }
                Some(Frame::Stdout(d)) => out.stdout.extend_from_slice(&d),
                Some(Frame::Stderr(d)) => out.stderr.extend_from_slice(&d),
                Some(Frame::Exit(status)) => {
                    out.code = status.code;
                    return Ok(out);
                }
                Some(_) => {}
                None => anyhow::bail!(
                    "the guest's agent closed the connection before the command ended"
                ),
            }
        }
    })
}
