//! The host's side of dispatch: what agentenv does when it runs there, as `agentenv __remote
//! VERB`, started over ssh by the dispatching agentenv. `facts` tells what the session will
//! see, `unpack-store` takes store paths, `session` serves one session's agent on stdio in the
//! view it is told (the host view, the isolated sandbox, a container's runner, or none),
//! `clean` removes a session's directory and says what, if anything, remains.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::layout;
use crate::diag::Diagnostic;

/// What the dispatching side needs to know of the host, as its ssh session sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteFacts {
    /// The ssh session's environment, in order.
    pub env: Vec<(String, String)>,
    pub home: String,
    /// Why the host refuses user namespaces, if it does.
    pub userns_refused: Option<Diagnostic>,
    /// Store paths the content cache holds.
    pub store: Vec<String>,
    /// Profiles the content cache holds.
    pub profiles: Vec<String>,
    /// The capabilities attaching to a container needs that the ssh session lacks.
    #[serde(default)]
    pub attach_missing: Vec<String>,
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `__remote facts DIR`: prints `RemoteFacts` as JSON.
pub fn facts(dir: &Path) -> Result<i32> {
    let env = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let facts = RemoteFacts {
        env,
        home: std::env::var("HOME").unwrap_or_default(),
        userns_refused: userns_refusal(),
        store: names_in(&dir.join(layout::STORE)),
        profiles: names_in(&dir.join(layout::PROFILES)),
        attach_missing: attach_missing(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &facts)?;
    out.write_all(b"\n")?;
    Ok(0)
}

fn attach_missing() -> Vec<String> {
    crate::attach::caps::missing_here()
        .into_iter()
        .map(String::from)
        .collect()
}

/// Tries a user and mount namespace in a child, as a session will make them.
#[cfg(target_os = "linux")]
fn userns_refusal() -> Option<Diagnostic> {
    use crate::compute::linux::userns::{unshare_refused, write_id_maps, IdMode};
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    // SAFETY: this process runs no other thread (a short-lived `__remote facts`), so the child
    // may run ordinary code until it exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = match unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
                Ok(()) if write_id_maps(uid, gid).is_ok() => 0,
                Ok(()) => 2,
                Err(e) => 10 + e as i32,
            };
            // SAFETY: _exit leaves without running the parent's destructors.
            unsafe { libc::_exit(code.min(255)) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => None,
            Ok(WaitStatus::Exited(_, c)) if c >= 10 => Some(unshare_refused(
                nix::errno::Errno::from_raw(c - 10),
                IdMode::UserNamespace { uid, gid },
            )),
            _ => Some(Diagnostic::new(
                "the host made a user namespace but refused its id maps",
            )),
        },
        Err(e) => Some(Diagnostic::new(format!("cannot fork on the host: {e}"))),
    }
}

#[cfg(not(target_os = "linux"))]
fn userns_refusal() -> Option<Diagnostic> {
    Some(Diagnostic::new("dispatch hosts must run Linux"))
}

/// `__remote unpack-store DIR`: store paths from a tar stream on stdin into `DIR/nix/store`.
pub fn unpack_store(dir: &Path) -> Result<i32> {
    let input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin());
    let n = super::store_sync::unpack_store(&dir.join(layout::STORE), input)?;
    tracing::debug!(paths = n, "store paths unpacked");
    Ok(0)
}

/// What remains of a session after `clean`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CleanReport {
    /// Entries of the agentenv directory that are not content caches (with `--all`: any).
    pub stray_entries: Vec<String>,
    /// Processes still running from the session's directory.
    pub processes: Vec<i32>,
    /// With `--all`: the sessions whose directories kept the caches there (running, or holding
    /// learnings not yet collected).
    #[serde(default)]
    pub other_sessions: Vec<String>,
}

/// `__remote clean DIR ID [--all]`: removes the session's directory (whatever the session left
/// in its private home goes with it: the learnings came back before), with `all` the content
/// caches and agentenv's directory too unless another session is there, then reports what is
/// left.
pub fn clean(dir: &Path, id: &str, all: bool) -> Result<i32> {
    if !crate::util::is_plain_id(id) {
        anyhow::bail!("not a session id: {id:?}");
    }
    let sessions = dir.join(layout::SESSIONS);
    let session = sessions.join(id);
    // A session cut off from its connection may still run: it ends now.
    super::away::stop(&session);
    let processes = processes_using(&session);
    if session.exists() {
        super::store_sync::make_writable(&session);
        crate::util::remove_tree(&session)
            .with_context(|| format!("cannot remove {}", session.display()))?;
    }
    // An empty sessions directory is not a cache: it goes too. Other sessions (running, or
    // holding learnings not yet collected) are theirs, not this one's leftovers.
    let _ = std::fs::remove_dir(&sessions);
    let other_sessions = names_in(&sessions);
    if all && other_sessions.is_empty() {
        for cache in layout::CACHES {
            let path = dir.join(cache);
            if path.exists() {
                super::store_sync::make_writable(&path);
                crate::util::remove_tree(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        // The directory itself, if nothing else is in it (it may be the user's --remote-dir).
        let _ = std::fs::remove_dir(dir);
    }
    let stray_entries = names_in(dir)
        .into_iter()
        .filter(|n| {
            n != layout::SESSIONS
                && (!layout::CACHES.contains(&n.as_str()) || (all && other_sessions.is_empty()))
        })
        .collect();
    let report = CleanReport {
        stray_entries,
        processes,
        other_sessions: if all { other_sessions } else { Vec::new() },
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    out.write_all(b"\n")?;
    Ok(0)
}

/// Processes whose working directory or executable lies in `dir`.
fn processes_using(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let inside = |link: &str| {
            std::fs::read_link(format!("/proc/{pid}/{link}"))
                .map(|p: PathBuf| p.starts_with(dir))
                .unwrap_or(false)
        };
        if inside("cwd") || inside("exe") {
            pids.push(pid);
        }
    }
    pids
}

/// What `__remote session` is told, as a JSON file in the session's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSpec {
    pub view: SessionView,
    /// A profile to activate into the session's private home before the view is entered.
    #[serde(default)]
    pub profile: Option<SessionProfile>,
}

/// A profile for the session: its copy on the host, and the paths of the home (an agent's
/// memory places) it makes no link in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionProfile {
    pub dir: PathBuf,
    pub except: Vec<PathBuf>,
}

/// Where the profile engine keeps its state for the session's home (not in the view).
const PROFILE_STATE: &str = "profile-state";

/// Activates the session's profile, if it has one, into its private home. Its links name the
/// profile's path on the host, which the view shows at that same path; `activate.sh` is run
/// by the session's start-up script, inside.
pub fn activate_profile(spec: &SessionSpec, session: &Path) -> Result<()> {
    let Some(p) = &spec.profile else {
        return Ok(());
    };
    let done = crate::profile::activate_except(
        &p.dir,
        &session.join("home"),
        &session.join(PROFILE_STATE),
        crate::profile::HookRun::ByCaller,
        &p.except,
    )?;
    for w in &done.warnings {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// What the session sees of the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionView {
    /// The host as it is, with the toolbox at `/nix` and a private home (the default).
    Host(super::host_view::HostViewSpec),
    /// The namespace sandbox of `agentenv .` (`--isolated`).
    Isolated(super::isolated::IsolatedSpec),
    /// No namespace at all (`--no-namespaces`): the toolbox only on PATH. The agent keeps its
    /// start-up scripts in `scratch`, a directory of the session.
    Bare { scratch: PathBuf },
    /// A container on the host (`--container`): the agent runs on the host, each command in
    /// the container through `__remote attach`.
    Container(Box<super::container::ContainerSpec>),
}

/// Reads and checks a session spec; returns it with the session's directory.
pub fn read_spec(spec_path: &Path) -> Result<(SessionSpec, PathBuf)> {
    let data =
        std::fs::read(spec_path).with_context(|| format!("cannot read {}", spec_path.display()))?;
    let spec: SessionSpec = serde_json::from_slice(&data)
        .with_context(|| format!("{} is not a session spec", spec_path.display()))?;
    let dir = spec_path
        .parent()
        .filter(|d| d.is_absolute())
        .with_context(|| format!("{} is not in a session directory", spec_path.display()))?;
    Ok((spec, dir.to_path_buf()))
}

/// `__remote session SPEC`: serves the guest agent on stdin and stdout in the view the spec
/// names. In the host view it runs as PID 1 of a PID namespace of its own, so that everything
/// the session starts ends with it (the host's own processes stay visible through the host's
/// `/proc`); the isolated sandbox has its own PID 1.
pub fn session(spec_path: &Path) -> Result<i32> {
    let (spec, dir) = read_spec(spec_path)?;
    // Before the view: agentenv's directory may be below the home the view replaces.
    super::away::write_pid(&dir)?;
    activate_profile(&spec, &dir)?;
    if let SessionView::Isolated(isolated) = &spec.view {
        return super::isolated::serve(isolated);
    }
    enter_session(&spec)?;
    run_session_agent(crate::transport::OneConnection::stdio, || {})
}

/// Enters what the session sees (the host view, or nothing), and makes the PID namespace its
/// agent will be PID 1 of. The isolated sandbox is entered by `isolated::serve` instead.
pub fn enter_session(spec: &SessionSpec) -> Result<()> {
    use nix::sched::{unshare, CloneFlags};
    match &spec.view {
        SessionView::Isolated(_) => {
            return Err(Diagnostic::new("this session's sandbox is entered by its agent").into())
        }
        SessionView::Host(view) => super::host_view::enter_host_view(view)?,
        // Single-threaded here: nothing else reads the environment. The commands get theirs
        // from the exec request, not this one.
        SessionView::Bare { scratch } => std::env::set_var("TMPDIR", scratch),
        // Attaching is privileged: `__remote attach` checks, for each command.
        SessionView::Container(c) => std::env::set_var("TMPDIR", &c.scratch),
    }
    crate::process::block_supervised_signals()?;
    if let SessionView::Host(_) = spec.view {
        unshare(CloneFlags::CLONE_NEWPID).context("cannot make a PID namespace")?;
    }
    Ok(())
}

/// Forks the session's agent, serving the connections `listen` makes, and waits for it while
/// passing on the signals this process gets; returns its exit code.
pub fn run_session_agent<A: crate::transport::Accept>(
    listen: impl FnOnce() -> std::io::Result<A>,
    ready: impl FnOnce(),
) -> Result<i32> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: single-threaded here (no runtime has started yet), so the child may run
    // ordinary code.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            let code = crate::guest::agent::run_agent(listen, ready);
            // SAFETY: _exit leaves without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(ready);
            crate::process::supervise(child, crate::process::Reap::Child)
        }
    }
}
