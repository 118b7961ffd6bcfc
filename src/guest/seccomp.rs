//! The syscall filter every process of an environment runs under: a list of denied calls
//! (plain data, printable by tests and the benchmark), compiled once with seccompiler, and
//! installed together with `no_new_privs` as the last step before exec. It does not decide
//! which processes get it: the code that starts them calls `install_default_filter` (a
//! namespace sandbox's PID 1 does, once its root is built, so everything it starts inherits
//! it), or, between fork and exec where nothing may allocate, `default_filter()` before the
//! fork and `SyscallFilter::install` in the child. A filter covers the calling thread and
//! what it starts from then on.
//!
//! The list covers what Docker's and Podman's default profiles refuse to a container without
//! extra capabilities: file handles, the keyring, bpf, perf, kernel modules and kexec, every
//! way of mounting (old and new mount API), namespaces, clocks, swap, reboot, accounting,
//! quotas, userfaultfd, io_uring, cross-process memory access, and most personalities. A
//! denied call fails with EPERM, as under Docker; clone3 fails with ENOSYS, so that libc falls
//! back to clone, whose flags a filter can read.

use std::sync::OnceLock;

use anyhow::{Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// When a listed call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always.
    Always,
    /// When argument `arg` has any of the bits of `mask` set.
    AnyBit { arg: u8, mask: u64 },
    /// When argument `arg` (its low 32 bits) is none of `allowed`.
    NoneOf { arg: u8, allowed: &'static [u64] },
    /// When argument `arg` (its low 32 bits) equals `value`.
    Equals { arg: u8, value: u64 },
}

/// One refused system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub name: &'static str,
    pub nr: i64,
    pub when: When,
    /// The errno the call fails with.
    pub errno: i32,
    /// What an environment could do with it.
    pub why: &'static str,
}

impl Denied {
    /// The call's name, as in its man page.
    pub fn syscall(&self) -> &'static str {
        self.name.trim_start_matches("SYS_")
    }
}

/// One line per denied call, then the filter's size: what tests and the benchmark print.
pub fn describe(list: &[Denied], filter: &SyscallFilter) -> String {
    let mut out = String::new();
    for d in list {
        let when = match d.when {
            When::Always => String::new(),
            When::AnyBit { arg, mask } => format!(" when arg{arg} & {mask:#x}"),
            When::NoneOf { arg, allowed } => format!(" when arg{arg} not in {allowed:x?}"),
            When::Equals { arg, value } => format!(" when arg{arg} == {value}"),
        };
        let errno = if d.errno == libc::ENOSYS {
            "ENOSYS"
        } else {
            "EPERM"
        };
        out.push_str(&format!("{}{when}: {errno} ({})\n", d.syscall(), d.why));
    }
    out.push_str(&format!(
        "{} calls denied, {} BPF instructions in {} programs\n",
        list.len(),
        filter.instructions(),
        filter.programs.len()
    ));
    out
}

/// Namespace flags of clone(2) and unshare(2).
pub const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
/// CLONE_NEWTIME shares its bit with clone's exit signal, so only unshare can mean it.
const CLONE_NEWTIME: u64 = 0x80;

/// The personalities Docker allows: Linux, 32-bit Linux, the 2.6 uname (with and without 32-bit),
/// and the query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const AF_VSOCK: u64 = libc::AF_VSOCK as u64;

macro_rules! deny {
    ($sys:ident, $why:expr) => {
        deny!($sys, When::Always, $why)
    };
    ($sys:ident, $when:expr, $why:expr) => {
        Denied {
            name: stringify!($sys),
            nr: libc::$sys as i64,
            when: $when,
            errno: libc::EPERM,
            why: $why,
        }
    };
}

/// Every call the default filter refuses, and when.
pub fn denied() -> Vec<Denied> {
    let list = vec![
        deny!(
            SYS_open_by_handle_at,
            "opens any inode of a mounted filesystem by handle, around the mount"
        ),
        deny!(SYS_name_to_handle_at, "makes handles for open_by_handle_at"),
        deny!(SYS_add_key, "the kernel keyring is not namespaced"),
        deny!(SYS_request_key, "the kernel keyring is not namespaced"),
        deny!(SYS_keyctl, "the kernel keyring is not namespaced"),
        deny!(SYS_bpf, "loads programs into the kernel"),
        deny!(
            SYS_perf_event_open,
            "reads kernel and other processes' events"
        ),
        deny!(SYS_init_module, "loads kernel modules"),
        deny!(SYS_finit_module, "loads kernel modules"),
        deny!(SYS_delete_module, "unloads kernel modules"),
        deny!(SYS_kexec_load, "replaces the running kernel"),
        deny!(SYS_kexec_file_load, "replaces the running kernel"),
        deny!(
            SYS_mount,
            "mounts (a fresh sysfs, proc, or a bind over the sandbox)"
        ),
        deny!(SYS_umount2, "uncovers what a mount hides"),
        deny!(SYS_fsopen, "new mount API"),
        deny!(SYS_fsconfig, "new mount API"),
        deny!(SYS_fsmount, "new mount API"),
        deny!(SYS_fspick, "new mount API: reconfigures an existing mount"),
        deny!(SYS_open_tree, "new mount API: detaches or clones a mount"),
        deny!(SYS_move_mount, "new mount API"),
        deny!(
            SYS_mount_setattr,
            "new mount API: clears read-only, nosuid, nodev"
        ),
        deny!(SYS_pivot_root, "changes the root of the mount namespace"),
        deny!(SYS_swapon, "host swap"),
        deny!(SYS_swapoff, "host swap"),
        deny!(SYS_reboot, "reboots the host or its PID namespace"),
        deny!(SYS_settimeofday, "the host's clock"),
        deny!(SYS_clock_settime, "the host's clock"),
        deny!(SYS_clock_adjtime, "the host's clock"),
        deny!(SYS_adjtimex, "the host's clock"),
        deny!(SYS_acct, "host process accounting"),
        deny!(SYS_quotactl, "filesystem quotas"),
        deny!(SYS_quotactl_fd, "filesystem quotas"),
        deny!(SYS_setns, "enters other namespaces"),
        deny!(
            SYS_unshare,
            When::AnyBit {
                arg: 0,
                mask: NAMESPACE_FLAGS | CLONE_NEWTIME
            },
            "new namespaces: a user namespace gives back every capability in it"
        ),
        deny!(
            SYS_clone,
            When::AnyBit {
                arg: CLONE_FLAGS_ARG,
                mask: NAMESPACE_FLAGS
            },
            "new namespaces: a user namespace gives back every capability in it"
        ),
        Denied {
            errno: libc::ENOSYS,
            ..deny!(
                SYS_clone3,
                "its flags live in memory a filter cannot read; ENOSYS makes libc use clone"
            )
        },
        deny!(
            SYS_userfaultfd,
            "stalls the kernel at will: a staple of kernel exploits"
        ),
        deny!(
            SYS_io_uring_setup,
            "bypasses this filter and is a large attack surface"
        ),
        deny!(
            SYS_io_uring_enter,
            "bypasses this filter and is a large attack surface"
        ),
        deny!(
            SYS_io_uring_register,
            "bypasses this filter and is a large attack surface"
        ),
        deny!(SYS_process_vm_readv, "reads other processes' memory"),
        deny!(SYS_process_vm_writev, "writes other processes' memory"),
        deny!(SYS_kcmp, "compares other processes' kernel objects"),
        deny!(SYS_lookup_dcookie, "kernel profiling"),
        deny!(SYS_syslog, "the host's kernel log"),
        deny!(SYS_vhangup, "hangs up terminals"),
        deny!(SYS_fanotify_init, "watches whole filesystems"),
        deny!(SYS_nfsservctl, "the kernel NFS server"),
        deny!(
            SYS_personality,
            When::NoneOf {
                arg: 0,
                allowed: PERSONALITIES
            },
            "turns off address-space randomisation, or other emulations"
        ),
        deny!(
            SYS_socket,
            When::Equals {
                arg: 0,
                value: AF_VSOCK
            },
            "reaches the hypervisor and other VMs"
        ),
    ];
    // Calls only x86_64 has.
    #[cfg(target_arch = "x86_64")]
    let list = [
        list,
        vec![
            deny!(SYS_iopl, "raw I/O ports"),
            deny!(SYS_ioperm, "raw I/O ports"),
            deny!(SYS_uselib, "obsolete loader with a history of bugs"),
            deny!(SYS_ustat, "obsolete"),
            deny!(SYS_sysfs, "obsolete"),
            deny!(SYS__sysctl, "obsolete sysctl interface"),
        ],
    ]
    .concat();
    list
}

/// clone(2)'s flags come first on x86_64 and aarch64 (second only on s390).
const CLONE_FLAGS_ARG: u8 = 0;

/// A compiled filter, ready to install in a child between fork and exec.
#[derive(Debug, Clone)]
pub struct SyscallFilter {
    /// Installed in order; the kernel runs all of them on every call.
    programs: Vec<BpfProgram>,
}

impl SyscallFilter {
    /// The filter of `denied()`, compiled for this architecture.
    pub fn compile(list: &[Denied]) -> Result<Self> {
        let arch = target_arch()?;
        let mut programs = Vec::new();
        #[cfg(target_arch = "x86_64")]
        programs.push(x32_guard());
        let mut errnos: Vec<i32> = list.iter().map(|d| d.errno).collect();
        errnos.sort();
        errnos.dedup();
        // seccompiler gives one filter a single action on match: one filter per errno.
        for errno in errnos {
            let mut rules = std::collections::BTreeMap::<i64, Vec<SeccompRule>>::new();
            for d in list.iter().filter(|d| d.errno == errno) {
                rules
                    .entry(d.nr)
                    .or_default()
                    .extend(rules_for(d.when).with_context(|| format!("rule for {}", d.name))?);
            }
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )
            .context("cannot build the syscall filter")?;
            programs
                .push(BpfProgram::try_from(filter).context("cannot compile the syscall filter")?);
        }
        Ok(Self { programs })
    }

    /// Total size of the programs, in BPF instructions.
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }

    /// Sets `no_new_privs` and installs the filter on the calling thread. Only system calls,
    /// no allocation: safe between fork and exec (from `pre_exec`).
    pub fn install(&self) -> std::io::Result<()> {
        // SAFETY: prctl with constant integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for program in &self.programs {
            let prog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies
            // the instructions and keeps no pointer to them.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The default filter, compiled on first use.
pub fn default_filter() -> Result<&'static SyscallFilter> {
    static FILTER: OnceLock<Result<SyscallFilter, String>> = OnceLock::new();
    FILTER
        .get_or_init(|| SyscallFilter::compile(&denied()).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Sets `no_new_privs` and installs the default filter on the calling thread, for code that
/// is about to exec something of the environment's (compile it first with `default_filter`
/// where the caller cannot allocate).
pub fn install_default_filter() -> Result<()> {
    default_filter()?
        .install()
        .context("cannot install the syscall filter")
}

fn target_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .with_context(|| format!("no syscall filter for {}", std::env::consts::ARCH))
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        op,
        value,
    )?)
}

/// Rules of one entry: the call matches if any rule does, a rule if all its conditions do.
fn rules_for(when: When) -> Result<Vec<SeccompRule>> {
    Ok(match when {
        // An empty chain matches the call whatever its arguments.
        When::Always => vec![],
        When::AnyBit { arg, mask } => (0..64)
            .map(|b| 1u64 << b)
            .filter(|bit| mask & bit != 0)
            .map(|bit| {
                Ok(SeccompRule::new(vec![condition(
                    arg,
                    SeccompCmpOp::MaskedEq(bit),
                    bit,
                )?])?)
            })
            .collect::<Result<_>>()?,
        When::NoneOf { arg, allowed } => vec![SeccompRule::new(
            allowed
                .iter()
                .map(|v| condition(arg, SeccompCmpOp::Ne, *v))
                .collect::<Result<_>>()?,
        )?],
        When::Equals { arg, value } => {
            vec![SeccompRule::new(vec![condition(
                arg,
                SeccompCmpOp::Eq,
                value,
            )?])?]
        }
    })
}

/// x32 system calls carry x86_64's audit arch and numbers above this bit, so a filter keyed
/// on x86_64 numbers would let them through. seccompiler matches exact numbers only, hence
/// these four instructions by hand: any x32 call fails with ENOSYS.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.nr is at offset 0.
        op(LD_W_ABS, 0, 0, 0),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_compiles_and_is_small() {
        let f = SyscallFilter::compile(&denied()).unwrap();
        assert!(
            f.instructions() > 50 && f.instructions() < 4096,
            "{}",
            f.instructions()
        );
    }

    #[test]
    fn denied_list_covers_the_attack_classes() {
        let names: Vec<_> = denied().iter().map(|d| d.name).collect();
        for must in [
            "SYS_open_by_handle_at",
            "SYS_mount",
            "SYS_fsopen",
            "SYS_open_tree",
            "SYS_move_mount",
            "SYS_keyctl",
            "SYS_bpf",
            "SYS_unshare",
            "SYS_setns",
            "SYS_clone3",
            "SYS_io_uring_setup",
        ] {
            assert!(names.contains(&must), "{must} is missing");
        }
        let clone3 = denied()
            .into_iter()
            .find(|d| d.name == "SYS_clone3")
            .unwrap();
        assert_eq!(clone3.errno, libc::ENOSYS);
    }

    /// `cargo test --lib seccomp::tests::print_default_filter -- --nocapture` shows it.
    #[test]
    fn print_default_filter() {
        let text = describe(&denied(), default_filter().unwrap());
        println!("{text}");
        assert!(text.contains("open_by_handle_at: EPERM"));
    }

    #[test]
    fn each_call_is_listed_once() {
        let mut nrs: Vec<_> = denied().iter().map(|d| d.nr).collect();
        nrs.sort();
        let n = nrs.len();
        nrs.dedup();
        assert_eq!(n, nrs.len());
    }

    /// Forks, installs the filter in the child, and returns what `probe` returned there.
    fn in_filtered_child(probe: fn() -> i32) -> i32 {
        let filter = default_filter().unwrap();
        // SAFETY: the child only makes system calls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let code = if filter.install().is_err() {
                    100
                } else {
                    probe()
                };
                // SAFETY: leaves the child without running the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WEXITSTATUS(status)
            }
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn filtered_calls_fail_with_their_errno_and_others_work() {
        assert_eq!(
            // SAFETY: raw system calls with arguments the kernel validates.
            in_filtered_child(|| unsafe {
                libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0);
                errno()
            }),
            libc::EPERM
        );
        assert_eq!(
            // SAFETY: raw system calls with arguments the kernel validates.
            in_filtered_child(|| unsafe {
                libc::syscall(libc::SYS_clone3, 0, 0);
                errno()
            }),
            libc::ENOSYS
        );
        assert_eq!(
            // SAFETY: raw system calls with arguments the kernel validates.
            in_filtered_child(|| unsafe {
                libc::unshare(libc::CLONE_NEWUSER);
                errno()
            }),
            libc::EPERM
        );
        assert_eq!(
            // SAFETY: raw system calls with arguments the kernel validates.
            in_filtered_child(|| unsafe {
                libc::personality(0x0040000); // ADDR_NO_RANDOMIZE
                errno()
            }),
            libc::EPERM
        );
        // Allowed: a fork (clone without namespace flags), the personality query, getpid.
        assert_eq!(
            // SAFETY: raw system calls with arguments the kernel validates.
            in_filtered_child(|| unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(7);
                }
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
                let ok = libc::personality(0xffff_ffff) >= 0 && libc::getpid() > 0;
                if ok {
                    libc::WEXITSTATUS(st)
                } else {
                    1
                }
            }),
            7
        );
    }
}
