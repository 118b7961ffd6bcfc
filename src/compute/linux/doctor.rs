//! What `doctor` checks for the namespaces backend: user-namespace limits, overlayfs, and a
//! real sandbox's essentials built in a child. Writes nothing but a temporary directory it
//! removes.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use super::userns::{userns_blocker, write_id_maps, IdMode};
use crate::compute::Check;

fn check(name: &'static str, found: Result<String, (String, String)>) -> Check {
    Check { name, found }
}

/// Every check, in the order doctor shows them.
pub fn checks() -> Vec<Check> {
    vec![check_userns_limits(), check_overlay_fs(), check_sandbox()]
}

fn check_userns_limits() -> Check {
    let mode = IdMode::detect();
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    check(
        "user namespaces",
        match (mode, userns_blocker()) {
            (IdMode::Root, _) => Ok(format!(
                "not needed: running as root (user.max_user_namespaces = {max})"
            )),
            (_, Some(d)) => Err((d.message, d.hints.join("; "))),
            (_, None) => Ok(format!("allowed (user.max_user_namespaces = {max})")),
        },
    )
}

fn check_overlay_fs() -> Check {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    check(
        "overlayfs",
        if listed {
            Ok("available".into())
        } else {
            Err((
                "overlay is not in /proc/filesystems".into(),
                "`sudo modprobe overlay` (and add `overlay` to /etc/modules-load.d/)".into(),
            ))
        },
    )
}

/// Really builds a sandbox's essentials in a child: the namespaces, a tmpfs, an overlay of
/// the store and a proc mount. This is what `agentenv PATH` needs.
fn check_sandbox() -> Check {
    check(
        "sandbox",
        match probe_sandbox() {
            Ok(()) => Ok("namespaces, tmpfs, overlay and /proc mount work".into()),
            Err(e) => {
                let msg = format!("{e:#}");
                let fix = userns_blocker()
                    .map(|d| d.hints.join("; "))
                    .unwrap_or_else(|| "if this runs in a container, start it with `--privileged`; otherwise check seccomp/AppArmor/SELinux policy for unshare(2) and mount(2)".into());
                Err((msg, fix))
            }
        },
    )
}

fn probe_sandbox() -> Result<()> {
    use nix::sched::{unshare, CloneFlags};
    use nix::unistd::{fork, pipe, ForkResult};

    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let base = tmp.path().to_path_buf();
    for d in ["upper", "work", "merged", "proc"] {
        std::fs::create_dir(base.join(d))?;
    }
    let mode = IdMode::detect();
    let (rd, wr) = pipe()?;
    // SAFETY: doctor is single-threaded; the child only makes syscalls and exits.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(rd);
            let r = (|| -> Result<()> {
                let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
                if mode.userns() {
                    flags |= CloneFlags::CLONE_NEWUSER;
                }
                unshare(flags).context("unshare")?;
                if let IdMode::UserNamespace { uid, gid } = mode {
                    write_id_maps(uid, gid)?;
                }
                use nix::mount::{mount, MsFlags};
                crate::guest::rootfs::make_mounts_private(&crate::guest::syscall::LinuxSyscall)?;
                mount(
                    Some("tmpfs"),
                    &base.join("merged"),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None::<&str>,
                )
                .context("tmpfs mount")?;
                nix::mount::umount(&base.join("merged")).context("tmpfs unmount")?;
                let lower = if Path::new("/nix").is_dir() {
                    "/nix".into()
                } else {
                    base.join("proc")
                };
                let mut data = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    base.join("upper").display(),
                    base.join("work").display()
                );
                if mode.userns() {
                    data.push_str(",userxattr");
                }
                mount(
                    Some("overlay"),
                    &base.join("merged"),
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(data.as_str()),
                )
                .context("overlay mount")?;
                // proc needs a process inside the new PID namespace.
                // SAFETY: single-threaded child; the grandchild only mounts and exits.
                match unsafe { fork() }? {
                    ForkResult::Child => {
                        let ok = mount(
                            Some("proc"),
                            &base.join("proc"),
                            Some("proc"),
                            MsFlags::empty(),
                            None::<&str>,
                        )
                        .is_ok();
                        // SAFETY: leave without running the parent's destructors.
                        unsafe { libc::_exit(if ok { 0 } else { 3 }) }
                    }
                    ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None)? {
                        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                        _ => anyhow::bail!("proc mount: refused"),
                    },
                }
            })();
            if let Err(e) = r {
                let _ = nix::unistd::write(&wr, format!("{e:#}").as_bytes());
            }
            // SAFETY: leave without running the parent's destructors (the tempdir's included).
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            std::fs::File::from(rd).read_to_string(&mut msg)?;
            nix::sys::wait::waitpid(child, None)?;
            let _ = crate::util::remove_tree(&base);
            if msg.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{msg}")
            }
        }
    }
}
