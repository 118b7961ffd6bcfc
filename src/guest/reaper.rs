//! Reaping, as PID 1 must: every child and every orphan is waited for on SIGCHLD, and the
//! exit code of a process someone waits on is handed to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::process::exit_code;

/// Who is waiting for which process.
#[derive(Clone, Default)]
pub struct Reaper {
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<i32>>>>,
}

impl Reaper {
    /// Registers interest in `pid`'s exit. Call right after spawning, before any await, so
    /// the exit cannot be reaped before it is registered.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(pid, tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<i32>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The processes someone waits for (started by the agent and not yet reaped).
    pub fn watched(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }

    /// Reaps everything that has exited.
    pub fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
                        if let Some(tx) = self.lock().remove(&pid.as_raw()) {
                            let _ = tx.send(code);
                        }
                    }
                }
            }
        }
    }

    /// Reaps on every SIGCHLD, forever.
    pub async fn run(self) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        loop {
            self.reap();
            if sigchld.recv().await.is_none() {
                return Ok(());
            }
        }
    }
}
