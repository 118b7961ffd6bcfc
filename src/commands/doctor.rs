//! `agentenv doctor`: what this machine has for running environments (nix, its store, the
//! chosen backend's own needs), and for each missing piece the exact fix. The other backends
//! of this build are listed with whether they could run here; they do not fail the report.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::nix::cli::NixCli;
use crate::paths::StateDirs;

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(name: &'static str, result: Result<String, (String, String)>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
            fix: None,
        },
        Err((detail, fix)) => Check {
            name,
            ok: false,
            detail,
            fix: Some(fix),
        },
    }
}

/// Another backend of this build, and whether it could run here.
#[derive(Debug, Serialize)]
struct OtherBackend {
    name: &'static str,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    why_not: Option<String>,
}

/// Checks the backend `backend` names (else config.toml's, else the default).
pub fn run(json: bool, backend: Option<&str>) -> Result<i32> {
    let mut checks = vec![check_nix(), check_store(), check_store_access()];
    let chosen = StateDirs::from_env().and_then(|s| {
        crate::compute::choice::named_backend(backend, &s.config.join("config.toml"))
    });
    match &chosen {
        Ok(b) => checks.extend(b.checks().into_iter().map(|c| check(c.name, c.found))),
        Err(e) => checks.push(check(
            "backend",
            Err((
                format!("{e:#}"),
                "pick a backend of this build with --backend".into(),
            )),
        )),
    }
    checks.push(check_state());
    let chosen_name = chosen.as_ref().map(|b| b.name()).ok();
    let others: Vec<OtherBackend> = crate::compute::choice::backend_names()
        .into_iter()
        .filter(|n| Some(*n) != chosen_name)
        .filter_map(|n| crate::compute::backend_named(n).ok())
        .map(|b| {
            let why_not = b.available().err().map(|d| d.message);
            OtherBackend {
                name: b.name(),
                available: why_not.is_none(),
                why_not,
            }
        })
        .collect();

    let ok = checks.iter().all(|c| c.ok);
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            ok: bool,
            backend: Option<&'static str>,
            checks: &'a [Check],
            other_backends: &'a [OtherBackend],
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                ok,
                backend: chosen_name,
                checks: &checks,
                other_backends: &others,
            })?
        );
    } else {
        if let Some(name) = chosen_name {
            println!("backend: {name}");
        }
        for c in &checks {
            println!(
                "{:4}  {:<18} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
            if let Some(fix) = &c.fix {
                println!("      {:<18} fix: {fix}", "");
            }
        }
        for o in &others {
            match &o.why_not {
                None => println!("      {:<18} also available", o.name),
                Some(why) => println!("      {:<18} not available: {why}", o.name),
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
