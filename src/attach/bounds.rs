//! The session is never more privileged than the target's own processes: before anything runs
//! in it, the session process takes the capability sets, `no_new_privs` and seccomp filters of
//! the target's main process (a smaller set where its own is smaller already). The target's
//! filters are read from the host through ptrace; where they cannot be read (another tracer, a
//! frozen target, seccomp's strict mode), the session gets the default filter of
//! `guest::seccomp`, no weaker than Docker's, with `no_new_privs`. What the target's status
//! says is `facts`' to read.

use std::os::raw::c_void;

use anyhow::{Context, Result};
use caps::{CapSet, CapsHashSet};
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::facts::{read_privileges, Privileges};
use super::target::Target;

/// `PTRACE_SECCOMP_GET_FILTER` of ptrace(2), from `<linux/ptrace.h>`.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// `SECCOMP_SET_MODE_FILTER` of seccomp(2).
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;

/// One classic BPF program as seccomp runs it.
pub type Filter = Vec<libc::sock_filter>;

/// What a session takes from its target.
#[derive(Clone)]
pub struct Bounds {
    pub privileges: Privileges,
    pub seccomp: SessionFilter,
}

/// The seccomp filters a session runs under.
#[derive(Clone)]
pub enum SessionFilter {
    /// The target's, oldest first (installed in that order); none where it has none.
    Target(Vec<Filter>),
    /// The default filter, for a target whose own cannot be read.
    Default,
}

impl std::fmt::Debug for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seccomp = match &self.seccomp {
            SessionFilter::Target(filters) => {
                format!("{:?}", filters.iter().map(Vec::len).collect::<Vec<_>>())
            }
            SessionFilter::Default => "default".into(),
        };
        f.debug_struct("Bounds")
            .field("privileges", &self.privileges)
            .field("seccomp", &seccomp)
            .finish()
    }
}

/// Reads the bounds of `target`'s main process. Its seccomp filters are read by stopping it
/// for a moment as a ptrace tracer (it notices nothing else).
pub fn read_bounds(target: &Target) -> Result<Bounds> {
    let privileges = read_privileges(target.pid)?;
    let seccomp = match privileges.seccomp {
        0 => SessionFilter::Target(Vec::new()),
        2 => match read_filters(target.pid) {
            Ok(filters) => SessionFilter::Target(filters),
            Err(e) => {
                tracing::warn!(
                    "cannot read the seccomp filter of {}: {e:#}; the session gets agentenv's default filter, with no_new_privs (setuid programs do not gain privileges in it)",
                    target.label
                );
                SessionFilter::Default
            }
        },
        _ => SessionFilter::Default,
    };
    Ok(Bounds {
        privileges,
        seccomp,
    })
}

/// The filters of process `pid`, oldest first.
fn read_filters(pid: i32) -> Result<Vec<Filter>> {
    let tracee = Pid::from_raw(pid);
    ptrace::seize(tracee, ptrace::Options::empty()).context("cannot trace it")?;
    let read = stopped(tracee).and_then(|()| filters_of_stopped(pid));
    // Detaching resumes it. A tracee that did not stop (a frozen cgroup) stays seized until
    // agentenv exits, which detaches it; it stops at most once, when it thaws.
    let _ = ptrace::detach(tracee, None);
    read
}

/// Interrupts the seized `tracee` and waits (a bounded while) for it to stop.
fn stopped(tracee: Pid) -> Result<()> {
    ptrace::interrupt(tracee).context("cannot stop it")?;
    // It stops as soon as it runs: yield the CPU to it first, then wait in short sleeps.
    for round in 0..600 {
        match waitpid(tracee, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if round < 100 => std::thread::yield_now(),
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_micros(200)),
            Ok(WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)) => return Ok(()),
            Ok(other) => anyhow::bail!("it did not stop ({other:?})"),
            Err(e) => return Err(e).context("cannot wait for it to stop"),
        }
    }
    anyhow::bail!("it did not stop within 100 ms (is it frozen?)")
}

fn filters_of_stopped(pid: i32) -> Result<Vec<Filter>> {
    let mut filters = Vec::new();
    for index in 0usize.. {
        // SAFETY: with a null buffer the kernel only returns the filter's length.
        let len = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                pid,
                index as *mut c_void,
                std::ptr::null_mut::<c_void>(),
            )
        };
        if len < 0 {
            let err = std::io::Error::last_os_error();
            // ENOENT: past the first filter installed.
            if err.raw_os_error() == Some(libc::ENOENT) && index > 0 {
                break;
            }
            return Err(err).context("cannot read its seccomp filter");
        }
        let mut filter = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            };
            len as usize
        ];
        // SAFETY: the buffer holds `len` instructions, as many as the kernel just said the
        // filter has; filters cannot change once installed.
        let got = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                pid,
                index as *mut c_void,
                filter.as_mut_ptr() as *mut c_void,
            )
        };
        if got != len {
            return Err(std::io::Error::last_os_error()).context("cannot read its seccomp filter");
        }
        filters.push(filter);
    }
    // Index 0 is the newest.
    filters.reverse();
    Ok(filters)
}

/// The part of the drop done while the session process is still root where it runs: the
/// bounding set, `no_new_privs` and the seccomp filters (installing one without
/// `no_new_privs` takes CAP_SYS_ADMIN, which the capability drop may take away).
pub fn enter_bounds(bounds: &Bounds) -> Result<()> {
    let p = &bounds.privileges;
    for cap in caps::all() {
        if p.bounding & cap.bitmask() == 0 {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("cannot drop {cap} from the session's bounding set"))?;
        }
    }
    if gains_at_exec(p) {
        // Root's exec would fill the permitted set from the bounding set: a root session of
        // a target whose processes hold less keeps only what it has.
        let bits = libc::SECBIT_NOROOT | libc::SECBIT_NOROOT_LOCKED;
        // SAFETY: PR_SET_SECUREBITS takes its flags by value.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) } < 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot keep the session's root from gaining capabilities at exec");
        }
    }
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().context("cannot set the session's no_new_privs")?;
    }
    match &bounds.seccomp {
        SessionFilter::Target(filters) => filters.iter().try_for_each(install_filter)?,
        SessionFilter::Default => crate::guest::seccomp::install_default_filter()?,
    }
    Ok(())
}

/// Whether a root session would hold more than the target's main process after an exec: its
/// bounding set holds capabilities its permitted set lacks (it runs as another user, or dropped
/// them itself).
pub fn gains_at_exec(p: &Privileges) -> bool {
    p.bounding & !p.permitted != 0
}

/// The rest of the drop, once the session has its user: its permitted, effective, inheritable
/// and ambient sets within the target's (a change to a user other than root cleared them).
pub fn limit_capabilities(bounds: &Bounds) -> Result<()> {
    let p = &bounds.privileges;
    let within = |set: CapSet, mask: u64| -> Result<CapsHashSet> {
        let now = caps::read(None, set).context("cannot read the session's capabilities")?;
        Ok(now
            .into_iter()
            .filter(|c| mask & c.bitmask() != 0)
            .collect())
    };
    let set = |set: CapSet, value: &CapsHashSet| {
        caps::set(None, set, value)
            .with_context(|| format!("cannot limit the session's {set:?} capabilities"))
    };
    caps::clear(None, CapSet::Ambient)
        .context("cannot clear the session's ambient capabilities")?;
    set(CapSet::Effective, &within(CapSet::Effective, p.effective)?)?;
    set(CapSet::Permitted, &within(CapSet::Permitted, p.permitted)?)?;
    // What may be inherited: what the target may, of what the session may.
    let may = within(CapSet::Permitted, p.inheritable & p.bounding)?;
    let inheritable: CapsHashSet = within(CapSet::Inheritable, p.inheritable)?
        .union(&may)
        .copied()
        .collect();
    set(CapSet::Inheritable, &inheritable)?;
    for cap in inheritable.intersection(&within(CapSet::Permitted, p.ambient)?) {
        caps::raise(None, CapSet::Ambient, *cap)
            .with_context(|| format!("cannot raise {cap} in the session's ambient set"))?;
    }
    Ok(())
}

/// Installs one classic BPF filter as the target's runtime did (no flags).
fn install_filter(filter: &Filter) -> Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(2) reads `prog` and the `len` instructions it points to, all alive for
    // the call; the kernel copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot install the target's seccomp filter in the session");
    }
    Ok(())
}

/// Makes this process undumpable: only the host's root may trace it or read its memory and
/// descriptors, until it execs (which sets dumpability from the new program and its user).
pub fn undumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).context("cannot make the session process undumpable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn privileges(bounding: u64, permitted: u64) -> Privileges {
        Privileges {
            bounding,
            permitted,
            effective: permitted,
            inheritable: 0,
            ambient: 0,
            no_new_privs: false,
            seccomp: 0,
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    #[test]
    fn root_gains_at_exec_only_where_the_target_holds_less_than_its_bounding_set() {
        let docker = 0xa80425fb;
        assert!(!gains_at_exec(&privileges(docker, docker)));
        // Docker's `--user 1000`: nothing permitted, the default bounding set.
        assert!(gains_at_exec(&privileges(docker, 0)));
        assert!(!gains_at_exec(&privileges(0, 0)));
    }

    #[test]
    fn this_process_has_bounds() {
        let me = Target::of_pid(std::process::id() as i32).unwrap();
        let b = read_bounds(&me).unwrap();
        assert_eq!(b.privileges.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(b.privileges.effective & !b.privileges.permitted, 0);
    }
}
