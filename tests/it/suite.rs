//! The suite's own hygiene: its tests pass whatever signal dispositions the caller left (as
//! `nohup` leaves SIGHUP ignored, and a shell's `&` SIGINT), and the containers a killed run
//! left are swept by the next one, never those of a live run or of anyone else.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::containers::{Image, Runtime};
use crate::support::{run, stderr, stdout};

/// The tests that rely on SIGINT and SIGHUP reaching what they start.
const SIGNAL_TESTS: &[&str] = &[
    "enter::sigint_reaches_the_command",
    "enter::sighup_reaches_the_command",
    "attach::interactive_shell_on_a_terminal",
];

#[test]
fn signal_tests_pass_when_the_caller_ignores_sigint_and_sighup() {
    if std::env::var_os("AGENTENV_TEST_NESTED").is_some() {
        return;
    }
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "--test-threads=1"])
        .args(SIGNAL_TESTS)
        .env("AGENTENV_TEST_NESTED", "1");
    // SAFETY: only signal(2) (async-signal-safe) between fork and exec.
    unsafe {
        c.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let o = run(c);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("3 passed"), "{}", stdout(&o));
}

#[test]
fn containers_of_test_runs_that_are_gone_are_swept_and_no_others() {
    let rt = crate::runtime!("sweep", Runtime::podman());
    let image = rt.image(Image::Busybox);
    // A test process that is gone: a child that ran and was reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let me = std::process::id();
    let my_start = agentenv::runtime::process_start_time(me as i32).unwrap();
    let start = |name: &str, labels: &[String]| -> String {
        let mut c = rt.cli();
        c.args(["run", "-d", "--name", name])
            .args(labels)
            .args([
                "--ulimit",
                "nofile=1024:20000",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args([&image, "/bin/sleep", "1000"]);
        let o = run(c);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    let label = |pid: u32, start: u64| {
        vec![
            "--label".to_string(),
            format!("agentenv-test.pid={pid}"),
            "--label".to_string(),
            format!("agentenv-test.start={start}"),
        ]
    };
    let dead = start(&format!("agentenv-sweep-dead-{me}"), &label(gone_pid, 1));
    // My pid, but another start time: a reused pid, so its creator is gone too.
    let reused = start(
        &format!("agentenv-sweep-reused-{me}"),
        &label(me, my_start + 1),
    );
    let live = start(&format!("agentenv-sweep-live-{me}"), &label(me, my_start));
    let foreign = start(&format!("agentenv-sweep-foreign-{me}"), &[]);
    let removed = rt.sweep_leftovers();
    let exists = |id: &str| {
        let mut c = rt.cli();
        c.args(["container", "exists", id]);
        run(c).status.success()
    };
    let (dead_there, reused_there, live_there, foreign_there) = (
        exists(&dead),
        exists(&reused),
        exists(&live),
        exists(&foreign),
    );
    for id in [&dead, &reused, &live, &foreign] {
        let mut c = rt.cli();
        c.args(["rm", "-f", "-t", "0", id]);
        run(c);
    }
    assert!(!dead_there && !reused_there, "swept: {removed:?}");
    assert!(live_there, "a live run's container stays");
    assert!(foreign_there, "a container without the labels stays");
}
