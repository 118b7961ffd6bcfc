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
