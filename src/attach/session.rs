//! Running a session in a target. The host side copies the toolbox's store and the trees to
//! show (a profile, a private home) as detached mount trees, opens the target's namespaces,
//! reads the bounds of its main process (`bounds`), forks the session process, learns through
//! a pipe whether its setup worked, then only waits and forwards signals. The session process
//! joins the target's cgroups and namespaces (its PID namespace for its children), grafts the
//! copies into its own copy of the target's mount namespace, becomes the user within the
//! target's bounds, and only then forks the shell's process into the target's PID namespace:
//! nothing the target runs can see, trace or signal a process that holds more than its own.
//! The first process stays outside, as the shell's parent, and passes on its exit code.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{fork, pipe2, ForkResult, Gid, Uid};

use super::bounds::{enter_bounds, limit_capabilities, read_bounds, undumpable, Bounds};
use super::cgroups::{join_cgroups, target_cgroups};
use super::facts::{Namespace, TargetFacts};
use super::graft::{apply_graft, plan_graft, GraftPlan};
use super::mountapi::{LinuxMountApi, MountApi, TreeFd};
use super::places::{Spot, TreeGraft};
use super::script::SCRIPT_FD;
use super::target::Target;
use super::terminal::{self, MasterChannel, SessionTerminal};
use super::user::{unmapped, SessionUser, UNMAPPED_HINT};
use crate::compute::linux::read_setup_error;
use crate::diag::Diagnostic;
use crate::guest::init::report_error;
use crate::guest::launch::Launch;
use crate::guest::syscall::LinuxSyscall;
use crate::process::{block_supervised_signals, reset_signals_for_exec, supervise, Reap};

/// Everything decided before the session starts.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub target: Target,
    /// The target's namespaces that are not ours.
    pub foreign: Vec<Namespace>,
    pub graft: GraftPlan,
    /// The toolbox's store on this machine: `/nix/store`, or a dispatch host's content cache.
    pub store: PathBuf,
    pub user: SessionUser,
    /// The target's `cgroup.procs` files to join.
    pub cgroups: Vec<PathBuf>,
    pub launch: Launch,
    /// A terminal of the session's own, and how it is relayed (see `terminal`).
    pub terminal: Option<SessionTerminal>,
}

impl SessionPlan {
    /// The plan for a session in `target`, whose facts are `facts`, with `trees` grafted and
    /// the toolbox's store taken from `store`.
    pub fn new(
        target: Target,
        facts: &TargetFacts,
        trees: Vec<(TreeGraft, Spot)>,
        store: PathBuf,
        user: SessionUser,
        launch: Launch,
    ) -> Self {
        SessionPlan {
            graft: plan_graft(&facts.root, &facts.nix, trees),
            store,
            foreign: facts.foreign.clone(),
            cgroups: target_cgroups(target.pid),
            user,
            launch,
            target,
            terminal: terminal::interactive_if_wanted(),
        }
    }
}

/// The order the session process joins namespaces in: those only the host's root may join
/// (while it still is; the PID namespace only for its children), then the mount namespace,
/// where the graft is made in a private copy, then the user namespace (after which it is root
/// there), where that copy is copied once more: into a less privileged user namespace, so
/// every mount of it is locked (nothing in the target can remount the toolbox read-write or
/// unmount what covers the target's own tree).
pub fn join_order(foreign: &[Namespace]) -> Vec<Namespace> {
    let mut order: Vec<Namespace> = [
        Namespace::Pid,
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
    ]
    .into_iter()
    .filter(|ns| foreign.contains(ns))
    .collect();
    order.push(Namespace::Mount);
    if foreign.contains(&Namespace::User) {
        order.push(Namespace::User);
    }
    order
}

fn open_namespace(pid: i32, ns: Namespace) -> Result<(Namespace, File)> {
    let path = format!("/proc/{pid}/ns/{}", ns.file());
    let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    Ok((ns, file))
}

/// Runs the session described by `plan`; returns the exit code of its shell or command.
pub fn run_session(plan: &SessionPlan) -> Result<i32> {
    let api = LinuxMountApi;
    let toolbox = plan.graft.copy_toolbox(&plan.store, &api)?;
    let trees = copy_trees(plan, &api)?;
    let pid = plan.target.pid;
    let joins = join_order(&plan.foreign)
        .into_iter()
        .map(|ns| open_namespace(pid, ns))
        .collect::<Result<Vec<_>>>()?;
    let bounds = read_bounds(&plan.target)?;
    // The namespaces are held open now; make sure they and the bounds are the target's, not
    // a PID reuser's.
    if !plan.target.still_running() {
        return Err(Diagnostic::new(format!(
            "{} exited while agentenv was attaching",
            plan.target.label
        ))
        .into());
    }

    block_supervised_signals()?;
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let channel = match plan.terminal {
        Some(_) => Some(MasterChannel::new()?),
        None => None,
    };
    // SAFETY: agentenv is single-threaded here (its CLI calls have finished and it runs no
    // helper threads), so the child may run ordinary code until it execs or exits.
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(read_end);
            let channel = channel.map(|c| c.session);
            let code = session_main(
                plan,
                &bounds,
                toolbox.as_ref(),
                &trees,
                joins,
                write_end,
                channel.as_ref(),
            );
            // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            drop(toolbox);
            drop(trees);
            if let Some(diag) = read_setup_error(read_end)? {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(diag.into());
            }
            let master = match channel {
                Some(c) => terminal::receive_master(&c.host)?,
                None => None,
            };
            match (master, plan.terminal) {
                (Some(master), Some(kind)) => terminal::relay(master, child, kind),
                _ => supervise(child, Reap::Child),
            }
        }
    }
}

/// Copies the host trees of the graft. In a target with its own user namespace they are
/// idmapped through it, so that what the host's root owns (the private home, a root-owned
/// profile) belongs to the target's root, and a `--user` session owns its home as well.
fn copy_trees(plan: &SessionPlan, api: &LinuxMountApi) -> Result<Vec<TreeFd>> {
    let trees = &plan.graft.trees;
    let userns = match plan.foreign.contains(&Namespace::User) && !trees.is_empty() {
        true => Some(open_namespace(plan.target.pid, Namespace::User)?.1),
        false => None,
    };
    trees
        .iter()
        .map(|t| copy_tree(t, userns.as_ref(), api))
        .collect()
}

fn copy_tree(t: &TreeGraft, userns: Option<&File>, api: &LinuxMountApi) -> Result<TreeFd> {
    let tree = api.clone_tree(&t.source)?;
    if let Some(ns) = userns {
        match api.share_tree(&tree, t.read_only, Some(ns.as_fd())) {
            Ok(()) => return Ok(tree),
            // mount_setattr changes all of a tree or nothing: it is still a plain copy.
            Err(e) => tracing::warn!(
                "{e:#}; its files keep their owners on the host, which the session's user may \
                 not be allowed to read or write"
            ),
        }
    }
    api.share_tree(&tree, t.read_only, None)?;
    Ok(tree)
}

/// The session process: sets up and drops to the target's bounds, then forks the shell's
/// process into the target's PID namespace and waits for it. Returns the exit code to leave
/// with: the shell's, or 1 when setting up failed.
#[allow(clippy::too_many_arguments)]
fn session_main(
    plan: &SessionPlan,
    bounds: &Bounds,
    toolbox: Option<&TreeFd>,
    trees: &[TreeFd],
    joins: Vec<(Namespace, File)>,
    error_pipe: OwnedFd,
    master_channel: Option<&OwnedFd>,
) -> i32 {
    let prepared = (|| -> Result<(Exec, Option<OwnedFd>)> {
        // Only the host's root may trace it while it holds the host's descriptors.
        undumpable()?;
        join_cgroups(&plan.cgroups);
        for (ns, file) in &joins {
            setns(file.as_fd(), ns.flag()).with_context(|| {
                format!(
                    "cannot join the {} namespace of {}",
                    ns.file(),
                    plan.target.label
                )
            })?;
            match ns {
                Namespace::Mount => {
                    make_private_copy()?;
                    apply_graft(&plan.graft, toolbox, trees, &LinuxSyscall, &LinuxMountApi)?;
                }
                Namespace::User => {
                    become_root_in_user_namespace()?;
                    unshare(CloneFlags::CLONE_NEWNS).context("cannot lock the session's mounts")?;
                }
                _ => {}
            }
        }
        drop(joins);
        if nix::unistd::chdir(&plan.launch.cwd).is_err() {
            tracing::debug!("{} is gone; starting in /", plan.launch.cwd.display());
            nix::unistd::chdir("/").context("cannot enter /")?;
        }
        let mut slave = None;
        if let (Some(channel), Some(kind)) = (master_channel, plan.terminal) {
            match terminal::open_private_pty(plan.user.uid, plan.user.gid, kind) {
                Ok(Some((master, s))) => {
                    terminal::send_master(channel, &master)?;
                    slave = Some(s);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{e:#}; the session uses your terminal directly"),
            }
        }
        pass_script(&plan.launch.script)?;
        let exec = Exec::of(&plan.launch)?;
        enter_bounds(bounds)?;
        become_user(&plan.user)?;
        limit_capabilities(bounds)?;
        // Set last: a change of identity clears it.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .context("cannot set the parent-death signal")?;
        Ok((exec, slave))
    })();
    let (exec, slave) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            report_error(&error_pipe, &e);
            return 1;
        }
    };
    // SAFETY: single-threaded, as its parent was; the child only sets up its terminal and execs.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code = shell_main(plan, &exec, slave, &error_pipe);
            // SAFETY: _exit leaves without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(slave);
            drop(error_pipe);
            supervise(child, Reap::Child).unwrap_or(1)
        }
        Err(e) => {
            let e = anyhow::Error::from(e).context("cannot fork the session's shell");
            report_error(&error_pipe, &e);
            1
        }
    }
}

/// The shell's process, born in the target's PID namespace within its bounds: keeps only what
/// the shell needs, takes its terminal and execs.
fn shell_main(
    plan: &SessionPlan,
    exec: &Exec,
    slave: Option<OwnedFd>,
    error_pipe: &OwnedFd,
) -> i32 {
    let started = (|| -> Result<()> {
        keep_only_fds(&[
            std::os::fd::AsRawFd::as_raw_fd(error_pipe),
            slave.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd),
            SCRIPT_FD,
        ])?;
        if let Some(slave) = slave {
            terminal::take_terminal(slave)?;
        }
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .context("cannot set the parent-death signal")
    })();
    if let Err(e) = started {
        report_error(error_pipe, &e);
        return 1;
    }
    reset_signals_for_exec();
    let err = nix::unistd::execve(&exec.program, &exec.argv, &exec.env).unwrap_err();
    let e = anyhow::Error::from(
        Diagnostic::new(format!(
            "cannot run the toolbox's shell {}: {err}",
            plan.launch.program.display()
        ))
        .hint("its store path is gone; run `agentenv attach --refresh ...`"),
    );
    report_error(error_pipe, &e);
    127
}

/// Closes every descriptor above stderr but `keep`: what a process in the target could reach
/// through this one is then only what the shell gets.
fn keep_only_fds(keep: &[i32]) -> Result<()> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .context("cannot list the session's descriptors")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closes a descriptor of this process about to exec; nothing in it uses
            // the ones closed (the listing's own is closed already, and EBADF is harmless).
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// After joining a user namespace the process keeps its host ids, which that namespace may
/// not map (files it made would be refused): become the namespace's root.
fn become_root_in_user_namespace() -> Result<()> {
    // Refused where the namespace's setgroups is "deny"; the groups then stay as they are.
    let _ = nix::unistd::setgroups(&[]);
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .context("the target's user namespace maps no root group")?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .context("the target's user namespace maps no root user")
}

/// Replaces the joined mount namespace by a private copy, so that nothing mounted from here
/// on reaches the target, and nothing the target mounts reaches the session.
fn make_private_copy() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("cannot copy the target's mount namespace")?;
    crate::guest::rootfs::make_mounts_private(&LinuxSyscall)
}

/// Puts the script in an in-memory file at fd `SCRIPT_FD`, where bash reads it.
fn pass_script(script: &[u8]) -> Result<()> {
    let memfd = rustix::fs::memfd_create("agentenv-attach", rustix::fs::MemfdFlags::CLOEXEC)
        .context("cannot create an in-memory file for the start-up script")?;
    let mut file = File::from(memfd);
    file.write_all(script)
        .context("cannot write the start-up script")?;
    // SAFETY: dup2 on an fd this process owns (`file`, alive for the call) onto SCRIPT_FD, a
    // number nothing of agentenv uses; the copy is deliberately unowned: it must outlive this
    // process image and reach the shell. dup2 gives it no close-on-exec flag.
    let rc = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), SCRIPT_FD) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot pass the start-up script");
    }
    Ok(())
}

fn become_user(user: &SessionUser) -> Result<()> {
    use nix::errno::Errno;
    // EINVAL: an id the target's user namespace does not map (checked before, unless the map
    // could not be read).
    let refused = |e: Errno, what: &str, id: u32, doing: String| match e {
        Errno::EINVAL => anyhow::Error::from(unmapped(what, id)),
        e => anyhow::Error::from(e).context(doing),
    };
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    match nix::unistd::setgroups(&groups) {
        // A user namespace whose setgroups is "deny" keeps the groups it has.
        Ok(()) | Err(Errno::EPERM) => {}
        Err(Errno::EINVAL) => {
            let list: Vec<String> = user.groups.iter().map(u32::to_string).collect();
            return Err(Diagnostic::new(format!(
                "a group of the session ({}) is not mapped in the target's user namespace",
                list.join(", ")
            ))
            .hint(UNMAPPED_HINT)
            .into());
        }
        Err(e) => return Err(e).context("cannot set the session's groups"),
    }
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| {
        refused(
            e,
            "gid",
            user.gid,
            format!("cannot become group {} in the target", user.gid),
        )
    })?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| {
        refused(
            e,
            "uid",
            user.uid,
            format!("cannot become user {} in the target", user.uid),
        )
    })
}

/// execve's arguments, made before the identity changes.
struct Exec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Exec {
    fn of(launch: &Launch) -> Result<Self> {
        let c = |b: &[u8]| CString::new(b).context("an argument or variable contains a NUL byte");
        Ok(Self {
            program: c(launch.program.as_os_str().as_bytes())?,
            argv: launch
                .argv
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<Result<_>>()?,
            env: launch
                .env_pairs()
                .iter()
                .map(|kv| c(kv))
                .collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_namespace_first_then_the_mount_namespace_and_the_user_namespace_last() {
        let all = Namespace::ALL.to_vec();
        assert_eq!(
            join_order(&all),
            vec![
                Namespace::Pid,
                Namespace::Cgroup,
                Namespace::Ipc,
                Namespace::Uts,
                Namespace::Net,
                Namespace::Mount,
                Namespace::User,
            ]
        );
        assert_eq!(join_order(&[]), vec![Namespace::Mount]);
        assert_eq!(
            join_order(&[Namespace::Net, Namespace::Pid]),
            vec![Namespace::Pid, Namespace::Net, Namespace::Mount]
        );
    }
}
