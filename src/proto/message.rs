//! The typed payloads of control frames (JSON inside a frame): the handshake, requests and
//! their responses, an exec's description and its exit status.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// First frame in each direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// `agentenv <version>`, for messages.
    pub software: String,
    /// From the agent: a connection may carry another request after an exec session (the
    /// client ends the session with `Frame::End`). Without it, one exec per connection.
    #[serde(default)]
    pub reuse: bool,
}

/// What a client asks of the agent after the handshake: a `Ps` is answered and the connection
/// takes the next request; an exec session takes one when the agent says `reuse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Run a process in the environment and stream its stdio.
    Exec(ExecSpec),
    /// List the environment's processes.
    Ps,
    /// Stop every process (SIGTERM, then SIGKILL after `grace_ms`) and exit.
    Shutdown { grace_ms: u64 },
}

/// The shell of the environment and what to run in it: the guest builds the start-up script
/// from these exactly as a one-shot `agentenv PATH` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// nix's dev-env script, already adjusted to `cwd`.
    pub rc_script: String,
    /// The environment's bash.
    pub shell: PathBuf,
    /// `None` for an interactive shell; otherwise the command.
    pub command: Option<Vec<OsString>>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// Shown in the interactive prompt.
    pub prompt_name: String,
    /// A terminal of this size, or plain pipes.
    pub tty: Option<WinSize>,
    /// Without a command and without a terminal, run the script read from stdin.
    pub stdin_script: bool,
    /// The client sends its stdin, stdout and stderr right after this request (SCM_RIGHTS,
    /// where the transport passes descriptors); no stdio frames follow.
    #[serde(default)]
    pub passed_stdio: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The process runs; `pid` is inside the environment.
    Started {
        pid: i32,
    },
    Processes {
        uptime_secs: u64,
        processes: Vec<ProcInfo>,
    },
    ShuttingDown,
    Error {
        message: String,
    },
}

/// A process of the environment, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: i32,
    pub command: String,
}

/// How an exec'd process ended: `code` is what agentenv exits with (128+N for signal N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: i32,
}
