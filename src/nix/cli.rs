//! The user's own `nix` command: finding it, identifying its version cheaply, and running it
//! with progress on stderr. Knows nothing of flakes or dev shells.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::diag::Diagnostic;
use crate::util::find_executable;

/// A `nix` binary found on PATH.
#[derive(Debug, Clone)]
pub struct NixCli {
    pub program: PathBuf,
}

/// What a finished nix command printed.
#[derive(Debug)]
pub struct NixOutput {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl NixCli {
    /// Finds `nix` on PATH, or says how to install it.
    pub fn find() -> Result<Self> {
        match find_executable("nix") {
            Some(program) => Ok(Self { program }),
            None => Err(Diagnostic::new("nix is not installed: no `nix` command on PATH")
                .hint("install it: `sh <(curl -L https://nixos.org/nix/install) --daemon`, or on Debian `sudo apt-get install nix-bin`")
                .hint("then enable flakes: add `experimental-features = nix-command flakes` to ~/.config/nix/nix.conf")
                .into()),
        }
    }

    /// A cheap fingerprint of this nix (its resolved path, size and mtime): changes when nix is
    /// upgraded, without running it.
    pub fn identity(&self) -> String {
        let real = std::fs::canonicalize(&self.program).unwrap_or_else(|_| self.program.clone());
        match std::fs::metadata(&real) {
            Ok(m) => format!("{}:{}:{}", real.display(), m.len(), m.mtime()),
            Err(_) => real.display().to_string(),
        }
    }

    /// `nix --version`, e.g. "nix (Nix) 2.8.0".
    pub fn version(&self) -> Result<String> {
        let out = Command::new(&self.program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A `nix` command with the flake features enabled whatever the user's config says.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["--extra-experimental-features", "nix-command flakes"]);
        cmd
    }

    /// Runs a nix command to completion, capturing stdout and stderr; while it runs, its progress
    /// (`label` and nix's latest line) is shown on stderr (see `progress`).
    pub fn run(&self, mut cmd: Command, label: &str) -> Result<NixOutput> {
        tracing::debug!(?cmd, "running nix");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        let mut stdout = child.stdout.take().context("nix stdout")?;
        let mut stderr = child.stderr.take().context("nix stderr")?;

        let mut progress = crate::progress::Progress::start(label);
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        let mut latest = None;
        let (mut out_open, mut err_open) = (true, true);
        let mut chunk = [0u8; 16384];
        while out_open || err_open {
            let mut fds = Vec::with_capacity(2);
            if out_open {
                fds.push(PollFd::new(stdout.as_fd(), PollFlags::POLLIN));
            }
            if err_open {
                fds.push(PollFd::new(stderr.as_fd(), PollFlags::POLLIN));
            }
            let ready = match poll(&mut fds, PollTimeout::from(100u8)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(e).context("cannot wait for nix's output"),
            };
            let revents: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready == 0 {
                progress.tick(latest.as_deref());
                continue;
            }
            let mut idx = 0;
            if out_open {
                if revents[idx] {
                    let n = stdout
                        .read(&mut chunk)
                        .context("cannot read nix's output")?;
                    if n == 0 {
                        out_open = false;
                    }
                    out_buf.extend_from_slice(&chunk[..n]);
                }
                idx += 1;
            }
            if err_open && revents[idx] {
                let n = stderr
                    .read(&mut chunk)
                    .context("cannot read nix's output")?;
                if n == 0 {
                    err_open = false;
                }
                err_buf.extend_from_slice(&chunk[..n]);
                latest = last_line(&err_buf);
            }
            progress.tick(latest.as_deref());
        }
        let status = child.wait().context("cannot wait for nix")?;
        progress.finish(status.success());
        Ok(NixOutput {
            success: status.success(),
            stdout: out_buf,
            stderr: String::from_utf8_lossy(&err_buf).into_owned(),
        })
    }
}

fn last_line(buf: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buf);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !is_noise(l))
        .map(|l| l.chars().take(120).collect())
}

/// nix's stderr without its noise (dirty-tree warnings), as detail lines for a Diagnostic.
pub fn stderr_details(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !is_noise(l))
        .map(|l| format!("| {l}"))
        .collect()
}

/// A line of nix's that tells the user nothing about their problem.
fn is_noise(line: &str) -> bool {
    line.starts_with("warning: Git tree") && line.ends_with("is dirty")
}

/// The fix when nix's stderr says this user may not reach nix-daemon's socket: the socket's
/// group (`nix-users` on Debian), which takes effect at the next login.
pub fn daemon_access_fix(stderr: &str) -> Option<String> {
    let denied = stderr
        .lines()
        .any(|l| l.contains("daemon-socket") && l.contains("Permission denied"));
    if !denied || nix::unistd::geteuid().is_root() {
        return None;
    }
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata("/nix/var/nix/daemon-socket")
        .map(|m| m.gid())
        .ok()?;
    let group = nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| "nix-users".into());
    Some(format!(
        "nix-daemon lets only the group {group} in: `sudo usermod -aG {group} $USER`, then log in again (a new login has the group; `newgrp {group}` gives it to this shell only)"
    ))
}

/// True if `path` is inside the nix store.
pub fn in_store(path: &Path) -> bool {
    path.starts_with("/nix/store/")
}
