//! One multiplexed OpenSSH connection to a target: the user's own `ssh` (its config, agent and
//! keys) as a ControlMaster, and every later command over it. `AGENTENV_SSH` replaces the ssh
//! command, as `GIT_SSH_COMMAND` does for git. What runs remotely is a POSIX `sh` script sent on
//! stdin, so the remote login shell (fish, say) parses only one fixed line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::target::Target;
use crate::diag::Diagnostic;

/// How often the link is checked, and how many missed answers end it: a cut link is noticed
/// within about `INTERVAL * COUNT` seconds.
const ALIVE_INTERVAL_SECS: u32 = 2;
const ALIVE_COUNT: u32 = 3;

/// How long the first connection may take (a password prompt is impossible: BatchMode).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// An open ControlMaster connection; closed when dropped.
pub struct SshConnection {
    program: Vec<String>,
    target: Target,
    control: PathBuf,
    master: Child,
    /// Keeps the first script's session (which waits for its end) open.
    first_stdin: Option<std::process::ChildStdin>,
    /// Holds the control socket's directory.
    _dir: tempfile::TempDir,
}

/// `s` quoted as one word for the host's `sh` (the scripts dispatch sends).
pub fn quote(s: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|_| Diagnostic::new(format!("a remote path holds a NUL byte: {s:?}")).into())
}

/// The ssh command: `AGENTENV_SSH` split as a shell would, else `ssh`.
pub fn ssh_program() -> Result<Vec<String>> {
    match std::env::var("AGENTENV_SSH") {
        Ok(s) if !s.trim().is_empty() => {
            let words = shlex::split(&s).ok_or_else(|| {
                Diagnostic::new(format!("AGENTENV_SSH cannot be split into words: {s}"))
                    .hint("quote it as you would for sh, e.g. AGENTENV_SSH='ssh -F ~/my config'")
            })?;
            Ok(words)
        }
        _ => Ok(vec!["ssh".to_string()]),
    }
}

/// The line `open_running`'s script is followed by, that ends what it printed.
const FIRST_DONE: &str = "agentenv-first-script-done";

impl SshConnection {
    /// Connects to `target` and keeps the connection as a master for later commands.
    pub fn open(target: &Target) -> Result<Self> {
        let mut conn = Self::spawn_master(target, None)?;
        conn.wait_until_up()?;
        tracing::debug!(target = %conn.target, "ssh connection up");
        Ok(conn)
    }

    /// Connects to `target`, running `script` (POSIX sh) in the connection's own session, and
    /// keeps the connection as a master for later commands; returns what the script printed.
    /// The first round trip is the connection's: nothing waits for a second one.
    pub fn open_running(target: &Target, script: &str) -> Result<(Self, Vec<u8>)> {
        use std::io::BufRead;
        let script = format!("{script}\necho\necho {FIRST_DONE}\nexec cat >/dev/null\n");
        let mut conn = Self::spawn_master(target, Some(&script))?;
        let stdout = conn.master.stdout.take().context("ssh has no stdout")?;
        let mut lines = std::io::BufReader::new(stdout);
        let mut out = Vec::new();
        let mut done = false;
        loop {
            let mut line = Vec::new();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.strip_suffix(b"\n") == Some(FIRST_DONE.as_bytes()) => {
                    done = true;
                    break;
                }
                Ok(_) => out.extend_from_slice(&line),
            }
        }
        if !done {
            let status = conn.master.wait().context("cannot wait for ssh")?;
            let mut err = String::new();
            if let Some(mut e) = conn.master.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(connect_failed(&conn.target, status.code(), &err).into());
        }
        // ssh listens on the control socket once the connection is up, before the session.
        let start = Instant::now();
        while !conn.control.exists() {
            if start.elapsed() > CONNECT_TIMEOUT || conn.master.try_wait()?.is_some() {
                return Err(Diagnostic::new(format!(
                    "the connection to {} took no further commands",
                    conn.target
                ))
                .into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        tracing::debug!(target = %conn.target, "ssh connection up");
        Ok((conn, out))
    }

    /// Starts the master: with `script`, run in its own session (its stdin held open until
    /// the connection is dropped), else none (`-N`).
    fn spawn_master(target: &Target, script: Option<&str>) -> Result<Self> {
        let program = ssh_program()?;
        // A control socket's path must fit in sun_path: a short private directory.
        let dir = tempfile::Builder::new()
            .prefix("agentenv-ssh-")
            .tempdir_in(std::env::temp_dir())
            .context("cannot create a directory for the ssh control socket")?;
        let control = dir.path().join("c");
        let mut cmd = base_command(&program, &control);
        cmd.args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no"]);
        let script = script.map(with_log_level).transpose()?;
        match &script {
            Some(script) => cmd
                .arg("-T")
                .args(target.ssh_args())
                .arg(read_script_command(script))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
            None => cmd
                .arg("-N")
                .args(target.ssh_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        };
        cmd.stderr(Stdio::piped());
        let mut master = cmd.spawn().map_err(|e| {
            Diagnostic::new(format!("cannot run `{}`: {e}", program[0]))
                .hint("install OpenSSH's client, or point AGENTENV_SSH at your ssh command")
        })?;
        let first_stdin = match &script {
            Some(script) => {
                let mut stdin = master.stdin.take().context("ssh has no stdin")?;
                // Failing here means ssh has ended: its status says why, later.
                let _ = stdin.write_all(script.as_bytes());
                Some(stdin)
            }
            None => None,
        };
        Ok(Self {
            program,
            target: target.clone(),
            control,
            master,
            first_stdin,
            _dir: dir,
        })
    }

    /// Waits for the master's socket to answer, or for the master to give up.
    fn wait_until_up(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.master.try_wait().context("cannot wait for ssh")? {
                let mut err = String::new();
                if let Some(mut e) = self.master.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(connect_failed(&self.target, status.code(), &err).into());
            }
            if self.control.exists() && self.check() {
                return Ok(());
            }
            if start.elapsed() > CONNECT_TIMEOUT {
                let _ = self.master.kill();
                return Err(Diagnostic::new(format!(
                    "cannot connect to {}: no answer within {} s",
                    self.target,
                    CONNECT_TIMEOUT.as_secs()
                ))
                .hint(format!("check that `ssh {}` works", self.target))
                .into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the master still answers.
    pub fn check(&self) -> bool {
        let mut cmd = base_command(&self.program, &self.control);
        cmd.args(["-O", "check"])
            .args(self.target.ssh_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }

    /// Starts `script` on the target with sh (see `read_script_command`), its stdin, stdout
    /// and stderr piped; the script has been written to stdin, and what the caller writes next
    /// is the script's own stdin.
    pub fn spawn_script(&self, script: &str) -> Result<Child> {
        let script = with_log_level(script)?;
        let mut cmd = base_command(&self.program, &self.control);
        cmd.args(["-o", "ControlMaster=no", "-T"]);
        cmd.args(self.target.ssh_args());
        cmd.arg(read_script_command(&script));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ssh")?;
        let stdin = child.stdin.as_mut().context("ssh has no stdin")?;
        stdin
            .write_all(script.as_bytes())
            .with_context(|| format!("cannot send a script to {}", self.target))?;
        Ok(child)
    }

    /// Runs `script` on the target with sh and returns what it printed; a non-zero exit is
    /// an error carrying its stderr.
    pub fn run_script(&self, script: &str) -> Result<Output> {
        self.run_script_with_input(script, &mut std::io::empty())
    }

    /// `run_script`, with `input` as the script's stdin.
    pub fn run_script_with_input(&self, script: &str, input: &mut dyn Read) -> Result<Output> {
        let mut child = self.spawn_script(script)?;
        {
            let mut stdin = child.stdin.take().context("ssh has no stdin")?;
            std::io::copy(input, &mut stdin)
                .with_context(|| format!("cannot send data to {}", self.target))?;
        }
        let out = child.wait_with_output().context("cannot wait for ssh")?;
        if out.status.success() {
            return Ok(out);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(Diagnostic::new(format!(
            "a command on {} failed ({})",
            self.target,
            exit_description(out.status.code())
        ))
        .detail(err.trim_end().to_string())
        .into())
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn control_path(&self) -> &Path {
        &self.control
    }
}

/// `script`, telling agentenv on the host to log as much as this one was asked to.
fn with_log_level(script: &str) -> Result<String> {
    Ok(match std::env::var("RUST_LOG") {
        Ok(level) if !level.is_empty() => format!("export RUST_LOG={}\n{script}", quote(&level)?),
        _ => script.to_string(),
    })
}

/// The one fixed line the remote login shell runs: sh reads exactly `script`'s bytes from
/// stdin with `dd bs=1` (a shell reading a script from a pipe would take some of what
/// follows), then evaluates it. Any login shell (fish too) parses it the same.
fn read_script_command(script: &str) -> String {
    format!(
        "exec sh -c 'eval \"$(dd bs=1 count={} 2>/dev/null)\"'",
        script.len()
    )
}

impl Drop for SshConnection {
    fn drop(&mut self) {
        // The first script's session ends when its stdin closes, and with it the master, once
        // no other session is open: asking it to exit as well would cost another ssh.
        if self.first_stdin.take().is_some() && exits_within(&mut self.master, MASTER_EXIT) {
            return;
        }
        let mut cmd = base_command(&self.program, &self.control);
        cmd.args(["-O", "exit"])
            .args(self.target.ssh_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = cmd.status();
        // A master that ignored the request (a stuck link) is killed: ssh may ignore SIGTERM.
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// How long a master whose first session has ended may take to exit by itself.
const MASTER_EXIT: Duration = Duration::from_millis(500);

/// Whether `child` exits within `limit`.
pub fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return false,
        }
    }
    false
}

/// Reads `child`'s stderr to its end in a thread: what agentenv on the host says about
/// itself, for the caller to show or put in an error.
pub fn collect_stderr(child: &mut Child) -> Result<std::thread::JoinHandle<String>> {
    let mut stderr = child.stderr.take().context("ssh has no stderr")?;
    Ok(std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    }))
}

/// `d` with each line agentenv on the host said, as details.
pub fn host_said(d: Diagnostic, said: &str) -> Diagnostic {
    said.lines()
        .filter(|l| !l.trim().is_empty())
        .fold(d, |d, line| d.detail(format!("host: {line}")))
}

/// ssh with the options every use of the connection shares.
fn base_command(program: &[String], control: &Path) -> Command {
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..]);
    cmd.arg("-o")
        .arg(format!("ControlPath={}", control.display()));
    cmd.args([
        "-o",
        "BatchMode=yes",
        "-o",
        &format!("ServerAliveInterval={ALIVE_INTERVAL_SECS}"),
        "-o",
        &format!("ServerAliveCountMax={ALIVE_COUNT}"),
        "-o",
        &format!("ConnectTimeout={}", CONNECT_TIMEOUT.as_secs()),
    ]);
    cmd
}

fn exit_description(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => "killed".to_string(),
    }
}

fn connect_failed(target: &Target, code: Option<i32>, stderr: &str) -> Diagnostic {
    let mut d = Diagnostic::new(format!(
        "cannot connect to {target} ({})",
        exit_description(code)
    ));
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        d = d.detail(format!("ssh: {line}"));
    }
    d.hint(format!(
        "agentenv uses your own ssh without prompts (BatchMode): check that `ssh {target} true` works without a password"
    ))
}
