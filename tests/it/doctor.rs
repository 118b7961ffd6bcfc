//! `agentenv doctor` reports each piece this machine needs.

use crate::fixture;
use crate::support::{run, stderr};

#[test]
fn doctor_reports_every_check_as_json() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.args(["doctor", "--json"]);
    let o = run(c);
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "nix",
        "nix store",
        "user namespaces",
        "overlayfs",
        "sandbox",
        "state",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    // The fixture ran, so this machine has everything.
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn doctor_gives_the_fix_for_a_missing_nix() {
    let f = fixture!();
    let mut c = f.agentenv();
    c.env("PATH", "/nonexistent").args(["doctor"]);
    let o = run(c);
    let out = crate::support::stdout(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("FAIL  nix"), "{out}");
    assert!(out.contains("fix: "), "{out}");
}

#[test]
fn doctor_warns_when_nixs_build_sandbox_is_off() {
    let f = fixture!();
    let doctor = |sandbox: &str, json: bool| {
        let mut c = f.agentenv();
        c.env(
            "NIX_CONFIG",
            format!("{}\nsandbox = {sandbox}\n", f.nix_config),
        )
        .arg("doctor");
        if json {
            c.arg("--json");
        }
        run(c)
    };
    let o = doctor("false", false);
    let out = crate::support::stdout(&o);
    assert!(
        out.contains("warn  nix build sandbox  off (sandbox = false)"),
        "{out}"
    );
    assert!(
        out.contains("a flake edited from inside an environment"),
        "{out}"
    );
    assert!(out.contains("fix: set `sandbox = true`"), "{out}");
    let sandbox_check = |o: &std::process::Output| {
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "nix build sandbox")
            .cloned()
            .unwrap()
    };
    let check = sandbox_check(&doctor("false", true));
    assert_eq!(check["ok"], true, "a warning, not a failure: {check:#}");
    assert!(
        check["warning"].as_str().unwrap().contains("unsandboxed"),
        "{check:#}"
    );
    let check = sandbox_check(&doctor("relaxed", true));
    assert!(check["warning"].is_string(), "{check:#}");
    let check = sandbox_check(&doctor("true", true));
    assert!(check.get("warning").is_none(), "{check:#}");
    assert_eq!(check["detail"], "on (sandbox = true)");
}

#[test]
fn doctor_tells_a_user_outside_the_daemon_group_to_join_it_and_log_in_again() {
    if !crate::support::is_root() {
        crate::support::skip(
            "doctor::doctor_tells_a_user_outside_the_daemon_group_to_join_it_and_log_in_again",
            "needs root to run as a user outside nix-users",
        );
        return;
    }
    if !std::path::Path::new("/nix/var/nix/daemon-socket").is_dir() {
        crate::support::skip(
            "doctor::doctor_tells_a_user_outside_the_daemon_group_to_join_it_and_log_in_again",
            "no nix-daemon socket directory (scripts/test.sh starts nix-daemon)",
        );
        return;
    }
    // nobody is in no group that may reach the daemon's socket.
    let mut c = std::process::Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "env",
        "HOME=/tmp",
    ])
    .arg(crate::support::agentenv_bin())
    .args(["doctor", "--json"])
    .current_dir("/");
    let o = run(c);
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    let access = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nix store access")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(access["ok"], false, "{access}");
    let fix = access["fix"].as_str().unwrap();
    assert!(fix.contains("sudo usermod -aG "), "{fix}");
    assert!(fix.contains("log in again"), "{fix}");
    assert!(!fix.contains("nix store ping"), "{fix}");
}
