//! Reaping, as PID 1 must: every child and every orphan is waited for on SIGCHLD, and the
//! exit code of a process someone waits on is handed to them. An agent that is not PID 1 (on
//! a remote host, in a test) reaps only its own processes, never another part's children.

use std::collections::{HashMap, HashSet};
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
    /// The process groups the watched processes lead (each exec leads one).
    groups: Arc<Mutex<HashSet<i32>>>,
}

impl Reaper {
    /// Registers interest in `pid`'s exit. Call right after spawning, before any await, so
    /// the exit cannot be reaped before it is registered.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(pid, tx);
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
        rx
    }

    /// The process groups of watched processes that still have a member: what an agent that
    /// is not PID 1 started, with whatever those processes left running.
    pub fn live_groups(&self) -> Vec<i32> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|&g| nix::sys::signal::kill(Pid::from_raw(-g), None).is_ok());
        groups.iter().copied().collect()
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
        if std::process::id() != 1 {
            for pid in self.watched() {
                if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    self.hand_over(status);
                }
            }
            return;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => self.hand_over(status),
            }
        }
    }

    /// Gives the exit code in `status` to whoever waits for that process.
    fn hand_over(&self, status: WaitStatus) {
        if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
            if let Some(tx) = self.lock().remove(&pid.as_raw()) {
                let _ = tx.send(code);
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
