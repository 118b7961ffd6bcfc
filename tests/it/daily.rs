//! Day-to-day use: what agentenv says while it works and when something is off (progress
//! without a terminal, typos of verbs, untracked flake files, dev shells that do not exist),
//! and that `exec` runs a script from stdin as `agentenv .` does.

use crate::fixture;
use crate::support::{run, stderr, stdout};

#[test]
fn cold_start_reports_progress_without_a_terminal() {
    let f = fixture!();
    let o = f.run_in(&["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("agentenv: evaluating the dev shell of hello\n"),
        "{err}"
    );
    assert!(err.contains("agentenv: evaluating the dev shell of hello: done in "), "{err}");
    assert!(!err.contains('\r') && !err.contains('\x1b'), "no spinner: {err:?}");
    // Warm: nothing to report.
    let o = f.run_in(&["true"]);
    assert_eq!(stderr(&o), "");
    // --quiet: nothing either, cold.
    let o = f.run_in_with(&["--quiet", "--refresh"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}
