//! A profile on a dispatch: its dotfiles linked into the session's private home on the host,
//! its `bin/`, variables and `activate.sh` in the session, its tools (built here) sent with the
//! toolbox, the profile read-only there; a second dispatch sends none of it again, the cleanup
//! leaves only the caches, and `--clean` not even those. Real sshd hosts, as in `dispatch`.

use crate::dispatch::{host_fixture, Lab};
use crate::support::{stderr, stdout};

#[test]
fn dispatch_takes_the_profile_along_and_sends_it_once() {
    host_fixture!("dispatch_takes_the_profile_along_and_sends_it_once");
    let f = crate::fixture!();
    let profile = crate::profile_env::profile_with_tools(&f);
    crate::home::write(&profile, "home/.dispatchrc", b"from the profile\n", 0o644);
    crate::home::write(
        &profile,
        "bin/profile-bin",
        b"#!/bin/sh\necho profile bin runs\n",
        0o755,
    );
    crate::home::write(
        &profile,
        "agentenv.toml",
        b"tools = \"tools\"\n[env]\nPROFILE_MARK = \"marked\"\n",
        0o644,
    );
    crate::home::write(
        &profile,
        "activate.sh",
        b"#!/bin/sh\necho \"hook ran in $HOME\" > \"$HOME/hook-ran\"\n",
        0o755,
    );
    let p = profile.to_str().unwrap();
    let mut lab = Lab::new("profile");
    let host = lab.host(&[]);
    let home_before = stdout(&lab.ssh(&host, "ls -A ~"));

    let look = "cat ~/.dispatchrc; readlink ~/.dispatchrc; profile-bin; profile-tool; \
                echo \"mark=$PROFILE_MARK\"; cat ~/hook-ran; \
                if echo x > \"$AGENTENV_PROFILE/written\" 2>/dev/null; then echo profile-writable; fi; \
                hello";
    let o = lab.dispatch(&f, &host, &["-v", "--profile", p], &["sh", "-c", look]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(
        out.contains("from the profile\n"),
        "the dotfile is linked: {out}{err}"
    );
    assert!(
        out.contains("/home/dev/.agentenv/profiles/profile-"),
        "linked to the profile's copy on the host: {out}"
    );
    assert!(
        out.contains("profile bin runs\n"),
        "its bin/ is on PATH: {out}"
    );
    assert!(
        out.contains("profile-tool from the profile tools\n"),
        "its tools came with the toolbox: {out}{err}"
    );
    assert!(
        out.contains("mark=marked\n"),
        "its variables are set: {out}"
    );
    assert!(
        out.contains("hook ran in /home/dev\n"),
        "activate.sh ran in the session's home: {out}{err}"
    );
    assert!(
        !out.contains("profile-writable"),
        "the profile is read-only: {out}"
    );
    assert!(
        out.contains("hello from the agentenv example"),
        "the project's hello wins over the tools': {out}"
    );
    assert!(err.contains("sent the profile"), "{err}");

    // The host's own home is untouched, and only the caches remain.
    let o = lab.ssh(&host, "ls -A ~; ls -A ~/.agentenv");
    let listing = stdout(&o);
    assert!(!listing.contains(".dispatchrc"), "{listing}");
    assert!(!listing.contains("hook-ran"), "{listing}");
    let left = lab.ssh(&host, "ls -A ~/.agentenv");
    assert_eq!(
        stdout(&left).split_whitespace().collect::<Vec<_>>(),
        ["bin", "nix", "profiles"],
        "only the caches remain"
    );

    // Second time: nothing of the profile is sent again; the same with --isolated.
    let o = lab.dispatch(
        &f,
        &host,
        &["-v", "--profile", p],
        &["sh", "-c", "cat ~/.dispatchrc"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the profile is on the host already"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("sent 0 of"), "{}", stderr(&o));
    let o = lab.dispatch(
        &f,
        &host,
        &["--isolated", "--profile", p],
        &[
            "sh",
            "-c",
            "cat ~/.dispatchrc; profile-tool; cat ~/hook-ran",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("from the profile\n"), "{out}{}", stderr(&o));
    assert!(
        out.contains("profile-tool from the profile tools\n"),
        "{out}"
    );
    assert!(out.contains("hook ran in /home/dev\n"), "{out}");

    // A failing activate.sh stops the session before its command, and says so.
    crate::home::write(&profile, "activate.sh", b"#!/bin/sh\nexit 7\n", 0o755);
    let o = lab.dispatch(&f, &host, &["--profile", p], &["echo", "ran"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"), "{}", stdout(&o));
    assert!(stderr(&o).contains("activate.sh failed"), "{}", stderr(&o));

    // --clean: the caches go as well, and agentenv's directory with them.
    let o = lab.dispatch(&f, &host, &["--clean", "--no-profile"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&lab.ssh(&host, "ls -A ~")),
        home_before,
        "the host's home is as it was"
    );
}

#[test]
fn an_agent_dispatched_with_its_profile_has_its_skills_and_brings_back_only_what_it_learned() {
    host_fixture!(
        "an_agent_dispatched_with_its_profile_has_its_skills_and_brings_back_only_what_it_learned"
    );
    let f = crate::fixture!();
    let profile = f.tmp.path().join("agent-profile");
    crate::home::write_profile(&profile, "scouting");
    crate::dispatch::new_agent(&f, "scout", Some(&profile));
    let mut lab = Lab::new("agentprof");
    let host = lab.host(&[]);

    let o = lab.dispatch(
        &f,
        &host,
        &["--agent", "scout"],
        &[
            "sh",
            "-c",
            "cat ~/.claude/skills/review/SKILL.md; readlink ~/.claude/skills/review; \
             echo learned > ~/.agent-memory/host.md",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("scouting review"),
        "the profile's skill is in the agent's skills on the host: {out}{}",
        stderr(&o)
    );
    assert!(out.contains("/.agentenv/profiles/profile-"), "{out}");
    // What it learned landed; the profile's link did not become memory.
    assert_eq!(
        crate::dispatch::memory_git(&f, "scout", &["show", "main:.agent-memory/host.md"]),
        "learned\n"
    );
    let files = crate::dispatch::memory_git(&f, "scout", &["ls-tree", "-r", "--name-only", "main"]);
    assert!(!files.contains("skills/review"), "{files}");
}
