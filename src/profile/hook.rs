//! Running a profile's `activate.sh` after its links are made, as the seed's activation did:
//! in the profile's directory, with `AGENTENV_PROFILE` and `HOME` set. Its output goes to
//! stderr (agentenv's stdout is for data).

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::diag::Diagnostic;

/// The command that runs `hook` inside an environment or a target: directly if it may be
/// executed, else (a profile on a noexec mount, as sshfs often is, gives 126) with sh.
pub fn hook_command(hook: &Path) -> Vec<std::ffi::OsString> {
    let run = "if [ -x \"$1\" ]; then \"$1\"; rc=$?; [ \"$rc\" -ne 126 ] && exit \"$rc\"; fi; exec sh \"$1\"";
    vec![
        "sh".into(),
        "-c".into(),
        run.into(),
        "activate.sh".into(),
        hook.as_os_str().to_owned(),
    ]
}

/// Put first in the script that runs `hook_command`: everything it and the set-up before it
/// print goes to stderr (stdout is the user's command's) and it reads nothing.
pub const OUTPUT_TO_STDERR: &str = "exec </dev/null >&2\n";

/// Runs `hook` for the profile at `profile` activated into `home`.
pub fn run_hook(hook: &Path, profile: &Path, home: &Path) -> Result<()> {
    let executable = std::fs::metadata(hook).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    let run = |direct: bool| {
        let mut cmd = if direct {
            Command::new(hook)
        } else {
            let mut sh = Command::new("sh");
            sh.arg(hook);
            sh
        };
        let stdout: Stdio = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::inherit());
        cmd.current_dir(profile)
            .env("AGENTENV_PROFILE", profile)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(stdout)
            .status()
    };
    let status = match run(executable) {
        // A profile on a noexec mount (sshfs often is): run the script with sh.
        Err(e) if executable && e.kind() == std::io::ErrorKind::PermissionDenied => run(false),
        other => other,
    }
    .with_context(|| format!("cannot run {}", hook.display()))?;
    if status.success() {
        return Ok(());
    }
    Err(hook_failed(
        hook,
        status.code(),
        "the profile's links are in place; fix the script, then run `agentenv profile activate` again (it runs the script again), or `agentenv profile deactivate`",
    ))
}

/// The error for `activate.sh` at `hook` having exited with `code` (`None`: killed by a
/// signal), with `hint` saying what to do.
pub fn hook_failed(hook: &Path, code: Option<i32>, hint: &str) -> anyhow::Error {
    // Run inside, a death by signal N comes back as 128+N, as a shell reports it.
    let how = match code {
        Some(code) if code > 128 => match nix::sys::signal::Signal::try_from(code - 128) {
            Ok(sig) => format!("was stopped by {sig}"),
            Err(_) => format!("exited with {code}"),
        },
        Some(code) => format!("exited with {code}"),
        None => "was killed by a signal".to_string(),
    };
    Diagnostic::new(format!("{} {how}", hook.display()))
        .hint(hint)
        .into()
}
