//! PID 1 of an environment: it writes the start-up script, starts the shell or command, passes
//! signals on, reaps every process (orphans included), and exits with the command's code.
//! When it exits, the kernel ends every other process of the environment.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result};
use nix::unistd::{fork, ForkResult};

use super::launch::Launch;
use super::syscall::Syscall;
use crate::diag::Diagnostic;
use crate::process::{reset_signals_for_exec, supervise, Reap};

/// Sends a setup error to the host side through `pipe`.
pub fn report_error(pipe: &OwnedFd, err: &anyhow::Error) {
    let data = serde_json::to_vec(&Diagnostic::from_error(err)).unwrap_or_default();
    let _ = nix::unistd::write(pipe, &data);
}

fn cstring(bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).context("an argument or variable contains a NUL byte")
}

/// Starts `launch` and supervises it as PID 1. `error_pipe` is closed once the program runs,
/// which tells the host side that the start succeeded. Returns the exit code to exit with.
pub fn run_init(launch: &Launch, error_pipe: OwnedFd, sys: &dyn Syscall) -> i32 {
    let prepared = (|| -> Result<_> {
        if let Some(dir) = launch.script_path.parent() {
            sys.mkdir_all(dir, 0o755)?;
        }
        sys.write_file(&launch.script_path, &launch.script, 0o644)?;
        sys.chdir(&launch.cwd)?;
        let program = cstring(launch.program.as_os_str().as_bytes())?;
        let argv = launch
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<Vec<_>>>()?;
        let env = launch
            .env_pairs()
            .iter()
            .map(|kv| cstring(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok((program, argv, env))
    })();
    let (program, argv, env) = match prepared {
        Ok(p) => p,
        Err(e) => {
            report_error(&error_pipe, &e);
            return 1;
        }
    };

    // SAFETY: PID 1 is single-threaded (it was forked from a single-threaded agentenv), so the
    // child may allocate and run ordinary code before exec.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            reset_signals_for_exec();
            let err = nix::unistd::execve(&program, &argv, &env).unwrap_err();
            let e = anyhow::Error::from(
                Diagnostic::new(format!("cannot run {}: {err}", launch.program.display()))
                    .hint("the dev environment's shell is missing; run agentenv with --refresh"),
            );
            report_error(&error_pipe, &e);
            // SAFETY: _exit skips destructors and atexit handlers that belong to the parent.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(error_pipe);
            match supervise(child, Reap::All) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("agentenv: init: {e:#}");
                    1
                }
            }
        }
        Err(e) => {
            report_error(
                &error_pipe,
                &anyhow::Error::from(e).context("cannot start the shell"),
            );
            1
        }
    }
}
