//! What the verbs do with `--agent`: the agent's profile (less the links its memory's places
//! take), its own home in the project, a session whose places are shown in that home, and the
//! landing of the session when it ends, done by a helper process forked before the sandbox
//! starts (so it runs in the host's namespaces, and lands even if agentenv is killed).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::places::Place;
use super::session::{Origin, Session};
use super::tree::ProfileLinks;
use super::Agent;
use crate::diag::Diagnostic;
use crate::paths::StateDirs;

/// The agent named by `--agent`, its killed sessions landed, checked against a `--profile`
/// given on the command line (the agent's own profile is the one used).
pub fn open_agent(name: &str, profile_arg: Option<&Path>) -> Result<Agent> {
    let state = StateDirs::from_env()?;
    let agent = Agent::open(&state, name)?;
    // $AGENTENV_PROFILE and config.toml give way to the agent's profile; a --profile does not.
    let from_env = std::env::var_os("AGENTENV_PROFILE").map(PathBuf::from);
    if let Some(p) = profile_arg.filter(|p| from_env.as_deref() != Some(*p)) {
        let given = crate::profile::Profile::load(p)?.root;
        if agent.record.profile.as_ref() != Some(&given) {
            return Err(Diagnostic::new(format!(
                "the agent {name} runs with {}, not {}",
                agent
                    .record
                    .profile
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no profile".into()),
                given.display()
            ))
            .hint("leave --profile out: an agent brings its own")
            .into());
        }
    }
    Ok(agent)
}

/// The places as paths relative to the home, for the profile to keep its links out of.
pub fn profile_except(agent: &Agent) -> Result<Vec<PathBuf>> {
    Ok(agent.places()?.into_iter().map(|p| p.path).collect())
}

/// The links the profile would make in the places (its skills): shown in the session's tree.
pub fn profile_links(agent: &Agent, home: &Path, profile_state: &Path) -> Result<ProfileLinks> {
    let Some(dir) = &agent.record.profile else {
        return Ok(ProfileLinks::new());
    };
    let profile = crate::profile::Profile::load(dir)?;
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let wanted = crate::profile::links::wanted_links(&profile, home, profile_state)?;
    let places = agent.places()?;
    Ok(wanted
        .links
        .into_iter()
        .filter(|l| places.iter().any(|p| p.dir && l.dest.starts_with(&p.path)))
        .map(|l| {
            (
                l.dest.as_os_str().as_bytes().to_vec(),
                l.target.as_os_str().as_bytes().to_vec(),
            )
        })
        .collect())
}

/// Starts a session of `agent` and makes its places' mount points in `home` (the host
/// directory shown as `$HOME`). Returns it with the mounts, at `home_inside`.
pub fn begin(
    agent: &Agent,
    origin: Origin,
    env: Option<&str>,
    home: &Path,
    profile_state: &Path,
    home_inside: &Path,
) -> Result<(Session, Vec<crate::compute::PlaceMount>)> {
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let links = profile_links(agent, home, profile_state)?;
    let session = Session::begin(agent, origin, env, links)?;
    make_mount_points(home, &session.record.places)?;
    let mounts = session
        .mounts()
        .into_iter()
        .map(|m| crate::compute::PlaceMount {
            source: m.source,
            path: home_inside.join(&m.rel),
            file: m.file,
        })
        .collect();
    Ok((session, mounts))
}

/// Makes each place's mount point in `home`, a directory its sessions write: nothing on the
/// way is followed; a link there (planted, or left) is removed, anything else in the way is
/// moved aside.
pub fn make_mount_points(home: &Path, places: &[Place]) -> Result<()> {
    let root = rustix::fs::open(
        home,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", home.display()))?;
    for place in places {
        let comps: Vec<&[u8]> = place
            .path
            .as_os_str()
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let Some((last, parents)) = comps.split_last() else {
            continue;
        };
        let mut dir = rustix::io::dup(&root)?;
        for c in parents {
            dir = ensure(dir.as_fd(), c, true, home)?.context("a mount point's directory")?;
        }
        ensure(dir.as_fd(), last, place.dir, home)?;
    }
    Ok(())
}

/// Makes `name` in `dir` a directory (returned open) or a regular file.
fn ensure(
    dir: BorrowedFd<'_>,
    name: &[u8],
    want_dir: bool,
    home: &Path,
) -> Result<Option<OwnedFd>> {
    let c = std::ffi::CString::new(name).context("a place's name holds a NUL")?;
    let shown = || {
        home.join(std::ffi::OsStr::from_bytes(name))
            .display()
            .to_string()
    };
    match rustix::fs::statat(dir, &c, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let ft = FileType::from_raw_mode(st.st_mode);
            let fits = match want_dir {
                true => ft == FileType::Directory,
                false => ft == FileType::RegularFile,
            };
            if !fits {
                if ft == FileType::Symlink {
                    rustix::fs::unlinkat(dir, &c, AtFlags::empty())
                        .with_context(|| format!("cannot remove the link {}", shown()))?;
                } else {
                    let mut aside = name.to_vec();
                    aside.extend(format!(".moved-{}", super::provenance::now()).as_bytes());
                    let aside = std::ffi::CString::new(aside)?;
                    rustix::fs::renameat(dir, &c, dir, &aside)
                        .with_context(|| format!("cannot move {} aside", shown()))?;
                    tracing::warn!("moved {} aside: the agent's memory goes there", shown());
                }
                create(dir, &c, want_dir).with_context(|| format!("cannot create {}", shown()))?;
            }
        }
        Err(rustix::io::Errno::NOENT) => {
            create(dir, &c, want_dir).with_context(|| format!("cannot create {}", shown()))?
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", shown())),
    }
    if !want_dir {
        return Ok(None);
    }
    let fd = rustix::fs::openat(
        dir,
        &c,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", shown()))?;
    Ok(Some(fd))
}

fn create(dir: BorrowedFd<'_>, name: &std::ffi::CStr, want_dir: bool) -> rustix::io::Result<()> {
    match want_dir {
        true => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)),
        false => rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    }
}

/// A helper process that lands a session once this process is done with it (or gone).
pub struct Lander {
    pid: Pid,
    go: OwnedFd,
}

impl Lander {
    /// Forks the helper, which holds the session (and its lock) from now on. Call it while
    /// this process is single-threaded and in the host's namespaces.
    pub fn spawn(agent: Agent, session: Session) -> Result<Self> {
        let (wait, go) = crate::util::cloexec_pipe()?;
        // SAFETY: agentenv is single-threaded here (git's writer threads have been joined), so
        // the child may run ordinary code until it exits.
        match unsafe { fork() }.context("cannot fork")? {
            ForkResult::Child => {
                drop(go);
                // Keys typed at the terminal reach the whole process group; this one must
                // outlive the session to land it.
                for sig in [
                    Signal::SIGINT,
                    Signal::SIGQUIT,
                    Signal::SIGHUP,
                    Signal::SIGTSTP,
                ] {
                    // SAFETY: ignoring a signal installs no handler code.
                    let _ = unsafe { signal(sig, SigHandler::SigIgn) };
                }
                let mut buf = [0u8; 1];
                // Returns at end of file: the parent closed its end, or is gone.
                while matches!(nix::unistd::read(wait.as_fd(), &mut buf), Ok(n) if n > 0) {}
                let code = match session.end(&agent) {
                    Ok(_) => 0,
                    Err(e) => {
                        eprint!("{}", crate::diag::render(&e.context(format!(
                            "cannot land the memory of this session of {}; the next command using the agent tries again",
                            agent.name()
                        ))));
                        1
                    }
                };
                // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(wait);
                // The helper holds the session now; this process's copy of its lock goes.
                drop(session);
                Ok(Self { pid: child, go })
            }
        }
    }

    /// Lets the helper land the session, and waits until it has.
    pub fn finish(self) -> Result<()> {
        drop(self.go);
        nix::sys::wait::waitpid(self.pid, None).context("cannot wait for the memory to land")?;
        Ok(())
    }
}

/// Lands what the persistent environment `env` of `agent` changed, after `command` ran there.
pub fn land_exec(agent_name: &str, env: &str, command: &[std::ffi::OsString], started: u64) {
    let done = StateDirs::from_env().and_then(|state| {
        let agent = Agent::load(&state, agent_name)?;
        super::session::commit_env(
            &agent,
            env,
            super::provenance::command_line(command),
            started,
        )
    });
    if let Err(e) = done {
        eprint!(
            "{}",
            crate::diag::render(&e.context(format!(
                "cannot land the memory of {agent_name} after this command; the next one tries again"
            )))
        );
    }
}

/// For `agentenv --agent NAME PATH` and `up --agent NAME`: the agent, with the workspace's home
/// moved to the agent's own home in the project and the profile kept out of its places.
pub fn for_workspace(
    ws: &mut crate::workspace::Workspace,
    name: &str,
    profile_arg: Option<&Path>,
) -> Result<Agent> {
    let agent = open_agent(name, profile_arg)?;
    ws.env_dirs = ws
        .env_dirs
        .clone()
        .with_home_in(agent.home_root(&ws.env_dirs.id));
    ws.profile_except = profile_except(&agent)?;
    Ok(agent)
}

/// For `agentenv PATH` and `up`: the agent `--agent` names (the workspace set up for it, see
/// `for_workspace`) and the profile to use, the agent's own where there is one; also whether the
/// environment may write the profile.
pub fn agent_and_profile(
    ws: &mut crate::workspace::Workspace,
    opts: &crate::cli::EnvOptions,
) -> Result<(Option<Agent>, Option<PathBuf>)> {
    let agent = match &opts.agent {
        Some(name) => Some(for_workspace(ws, name, opts.profile.as_deref())?),
        None => None,
    };
    let profile = match &agent {
        Some(a) => a.record.profile.clone(),
        None => ws.chosen_profile(opts.profile.as_deref(), opts.no_profile)?,
    };
    ws.profile_rw = ws.chosen_profile_rw(opts.profile_rw)?;
    Ok((agent, profile))
}

/// Starts the session of `agent` for the workspace (in the persistent environment `env`, if
/// it is one), its places added to the sandbox to be built.
pub fn begin_in_workspace(
    ws: &mut crate::workspace::Workspace,
    agent: &Agent,
    command: &[std::ffi::OsString],
    env: Option<&str>,
) -> Result<Session> {
    let origin = Origin {
        project: Some(ws.project.clone()),
        backend: "linux".into(),
        command: match env {
            Some(_) => "up".into(),
            None => super::provenance::command_line(command),
        },
    };
    let (session, mounts) = begin(
        agent,
        origin,
        env,
        &ws.env_dirs.home(),
        &ws.env_dirs.profile_state(),
        &ws.user.home,
    )?;
    ws.memory = mounts;
    Ok(session)
}

/// The error for a running environment whose agent is not the one asked for.
pub fn running_as_other(state: &crate::runtime::RunState, wanted: Option<&str>) -> anyhow::Error {
    let shown = |a: Option<&str>| match a {
        Some(a) => format!("the agent {a}"),
        None => "no agent".into(),
    };
    Diagnostic::new(format!(
        "{} is running with {}, not {}",
        state.id,
        shown(state.agent.as_deref()),
        shown(wanted)
    ))
    .hint(format!(
        "stop it first (`agentenv down {}`), or run with the same agent",
        state.id
    ))
    .into()
}

/// The agent's profile, for `attach` (whose private home needs one).
pub fn attach_profile(agent: &Agent) -> Result<PathBuf> {
    agent.record.profile.clone().ok_or_else(|| {
        Diagnostic::new(format!(
            "the agent {} has no profile, and attach keeps an agent's memory in the private home a profile gets",
            agent.name()
        ))
        .hint("create the agent with one: `agentenv agent new NAME --profile ~/config`")
        .into()
    })
}

/// An attached session of an agent.
#[cfg(target_os = "linux")]
pub struct Attached {
    pub session: Session,
    /// On the private home, held while the session runs.
    pub lock: nix::fcntl::Flock<std::fs::File>,
    /// The places, to graft after the home.
    pub trees: Vec<(
        crate::attach::places::TreeGraft,
        crate::attach::places::Spot,
    )>,
}

/// For `attach --agent`: a session whose places are grafted into the private `home` (seen at
/// `home_at`), and a lock on that home held while it runs, so that no other session of the
/// agent writes links into it while its mount points are made and used.
#[cfg(target_os = "linux")]
pub fn begin_attached(
    agent: &Agent,
    home: &crate::attach::home::AttachHome,
    home_at: &Path,
    project: &Path,
    command: &[std::ffi::OsString],
) -> Result<Attached> {
    let lock = crate::util::try_lock_file(&home.root.join("memory.lock"))?.map_err(|_| {
        Diagnostic::new(format!(
            "another session of the agent {} is attached to this target",
            agent.name()
        ))
        .hint("end that session first; one session of an agent per target at a time")
    })?;
    let origin = Origin {
        project: Some(project.to_path_buf()),
        backend: "attach".into(),
        command: super::provenance::command_line(command),
    };
    let (session, mounts) = begin(
        agent,
        origin,
        None,
        &home.home(),
        &home.profile_state(),
        home_at,
    )?;
    crate::attach::home::give_tree(&session.dir.join("tree"), home.uid, home.gid)?;
    let trees = mounts
        .into_iter()
        .map(|m| {
            (
                crate::attach::places::TreeGraft {
                    source: m.source,
                    at: m.path,
                    read_only: false,
                },
                crate::attach::places::Spot::Ready,
            )
        })
        .collect();
    Ok(Attached {
        session,
        lock,
        trees,
    })
}
