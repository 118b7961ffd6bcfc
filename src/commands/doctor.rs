//! `agentenv doctor`: what this machine has for running environments (nix, namespaces,
//! overlayfs, user-namespace limits), and for each missing piece the exact fix. Writes
//! nothing but a temporary directory it removes.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::compute::linux::userns::{enter_user_namespace, userns_blocker, IdMode};
use crate::nix::cli::NixCli;
use crate::paths::StateDirs;

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    /// Works, but at a risk the user should know of (not a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(name: &'static str, result: Result<String, (String, String)>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
            warning: None,
            fix: None,
        },
        Err((detail, fix)) => Check {
            name,
            ok: false,
            detail,
            warning: None,
            fix: Some(fix),
        },
    }
}

pub fn run(json: bool) -> Result<i32> {
    let mut checks = vec![check_nix(), check_store(), check_store_access()];
    checks.push(check_userns_limits());
    checks.push(check_overlay_fs());
    checks.push(check_sandbox());
    checks.push(check_state());
    checks.push(check_nix_build_sandbox());

    let ok = checks.iter().all(|c| c.ok);
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            ok: bool,
            checks: &'a [Check],
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                ok,
                checks: &checks
            })?
        );
    } else {
        for c in &checks {
            let status = match (c.ok, &c.warning) {
                (false, _) => "FAIL",
                (true, Some(_)) => "warn",
                (true, None) => "ok",
            };
            println!("{status:4}  {:<18} {}", c.name, c.detail);
            if let Some(warning) = &c.warning {
                println!("      {:<18} {warning}", "");
            }
            if let Some(fix) = &c.fix {
                println!("      {:<18} fix: {fix}", "");
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn check_nix() -> Check {
    check(
        "nix",
        match NixCli::find() {
            Ok(nix) => match nix.version() {
                Ok(v) if !v.is_empty() => Ok(format!("{v} at {}", nix.program.display())),
                _ => Err((
                    format!("{} does not run", nix.program.display()),
                    "reinstall nix: `sh <(curl -L https://nixos.org/nix/install) --daemon`".into(),
                )),
            },
            Err(_) => Err((
                "no `nix` on PATH".into(),
                "`sh <(curl -L https://nixos.org/nix/install) --daemon`, or on Debian `sudo apt-get install nix-bin`".into(),
            )),
        },
    )
}

fn check_store() -> Check {
    check(
        "nix store",
        if Path::new("/nix/store").is_dir() {
            Ok("/nix/store".into())
        } else {
            Err((
                "/nix/store does not exist".into(),
                "install nix (see above); agentenv shows the host's store to each environment"
                    .into(),
            ))
        },
    )
}

/// Whether nix can use its store as this user: as root, the local store with its build users;
/// otherwise through nix-daemon. Evaluating a dev shell builds, so either missing fails there.
fn check_store_access() -> Check {
    let Ok(nix) = NixCli::find() else {
        return check(
            "nix store access",
            Err((
                "no nix (see above)".into(),
                "install nix (see above)".into(),
            )),
        );
    };
    let out = nix
        .command()
        .args(["store", "ping"])
        .stdin(std::process::Stdio::null())
        .output();
    check("nix store access", store_access_verdict(out.as_ref().ok()))
}

/// The verdict on `nix store ping`'s output (`None`: it did not run).
fn store_access_verdict(out: Option<&std::process::Output>) -> Result<String, (String, String)> {
    let Some(out) = out else {
        return Err((
            "`nix store ping` did not run".into(),
            "check the nix installation (see above)".into(),
        ));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // nix 2.8 prints it on stderr, later versions on stdout.
    let url = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|l| l.strip_prefix("Store URL: "))
        .unwrap_or("?")
        .to_string();
    if !out.status.success() {
        let said = stderr
            .lines()
            .rev()
            .find(|l| l.contains("error:"))
            .unwrap_or("nix store ping failed")
            .trim()
            .to_string();
        if let Some(fix) = crate::nix::cli::daemon_access_fix(&stderr) {
            return Err((said, fix));
        }
        let fix = if stderr.contains("cannot connect to socket") {
            "start nix-daemon: `sudo systemctl start nix-daemon`, or `sudo nix-daemon &` where systemd does not run; then be in the group it allows (`sudo usermod -aG nix-users $USER` on Debian)"
        } else {
            "run `nix store ping` to see what nix needs"
        };
        return Err((said, fix.into()));
    }
    if let Some(line) = stderr.lines().find(|l| l.contains("build-users-group")) {
        return Err((
            format!("nix can reach {url} but cannot build: {}", line.trim()),
            "on Debian `sudo apt-get install nix-setup-systemd` (it makes the build users); elsewhere reinstall nix, or set `build-users-group =` in /etc/nix/nix.conf to build as root".into(),
        ));
    }
    Ok(format!("{url} store, reachable"))
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
                "root: every id mapped to itself (user.max_user_namespaces = {max})"
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

fn check_state() -> Check {
    check(
        "state",
        match StateDirs::from_env() {
            Ok(s) => Ok(format!(
                "cache {}, data {}",
                s.cache.display(),
                s.data.display()
            )),
            Err(e) => Err((
                format!("{e:#}"),
                "set HOME, or AGENTENV_HOME to a writable directory".into(),
            )),
        },
    )
}

/// nix's own build sandbox. Off (or relaxed), a builder runs on the host with nix's rights, and
/// the flake an environment writes (its project) is evaluated and built on the host when the
/// environment next starts: a builder edited from inside would run there, unsandboxed.
fn check_nix_build_sandbox() -> Check {
    use crate::nix::settings::{build_sandbox, BuildSandbox};
    const NAME: &str = "nix build sandbox";
    let Ok(nix) = NixCli::find() else {
        return check(
            NAME,
            Err((
                "no nix (see above)".into(),
                "install nix (see above)".into(),
            )),
        );
    };
    let (detail, warning) = match build_sandbox(&nix) {
        Ok(BuildSandbox::On) => return check(NAME, Ok("on (sandbox = true)".into())),
        Ok(BuildSandbox::Off) => (
            "off (sandbox = false)",
            "nix runs builders on this host, unsandboxed: a flake edited from inside an environment (its project is writable there) makes the next evaluation here run that builder on the host",
        ),
        Ok(BuildSandbox::Relaxed) => (
            "relaxed (sandbox = relaxed)",
            "nix runs fixed-output and `__noChroot` builders on this host, unsandboxed: a flake edited from inside an environment can ask for one, and the next evaluation here runs it on the host",
        ),
        Err(e) => {
            return check(
                NAME,
                Ok(format!("unknown: {e:#}")),
            )
        }
    };
    Check {
        name: NAME,
        ok: true,
        detail: detail.into(),
        warning: Some(warning.into()),
        fix: Some("set `sandbox = true` in /etc/nix/nix.conf (and restart nix-daemon if one runs); `agentenv doctor` then shows it on".into()),
    }
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
    use nix::sched::CloneFlags;
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
                enter_user_namespace(mode, CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Output};

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn store_access_names_a_dead_daemon_and_missing_build_users() {
        let ok = output(0, "Store URL: daemon\nVersion: 2.8.0\n", "");
        assert_eq!(
            store_access_verdict(Some(&ok)),
            Ok("daemon store, reachable".into())
        );
        let refused = output(
            1,
            "Store URL: daemon\n",
            "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused\n",
        );
        let (detail, fix) = store_access_verdict(Some(&refused)).unwrap_err();
        assert!(detail.contains("Connection refused"), "{detail}");
        assert!(fix.contains("nix-daemon"), "{fix}");
        let no_group = output(
            0,
            "Store URL: local\n",
            "warning: the group 'nixbld' specified in 'build-users-group' does not exist\n",
        );
        let (detail, fix) = store_access_verdict(Some(&no_group)).unwrap_err();
        assert!(detail.contains("cannot build"), "{detail}");
        assert!(fix.contains("nix-setup-systemd"), "{fix}");
        assert!(store_access_verdict(None).is_err());
    }
}
