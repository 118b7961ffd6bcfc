//! Profiles inside environments: `agentenv --profile DIR PATH` shows the profile at its own
//! path, links its dotfiles and skills into the private home, puts its tools on PATH, and
//! edits on either side are seen at once on the other.

use std::path::PathBuf;
use std::process::Command;

use crate::fixture;
use crate::support::{run, stderr, stdout, Fixture, Pty};

fn with_profile(f: &Fixture, profile: &PathBuf, args: &[&str]) -> std::process::Output {
    let mut c = f.agentenv();
    c.arg("--profile")
        .arg(profile)
        .arg(".")
        .arg("--")
        .args(args);
    run(c)
}

#[test]
fn dotfiles_skills_tools_and_variables_are_there() {
    let f = fixture!();
    let p = f.profile_copy();
    let script = "readlink ~/.bashrc; cat ~/.claude/skills/commit-message/SKILL.md | head -2; \
                  readlink ~/.config/nvim/init.lua; ls ~/.codex/skills; hello-profile; echo $EDITOR; \
                  echo $AGENTENV_PROFILE; command -v hello";
    let o = with_profile(&f, &p, &["sh", "-c", script]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        p.join("home/.bashrc").display().to_string(),
        "{out}"
    );
    assert_eq!(lines[1], "---", "{out}");
    assert_eq!(
        lines[3],
        p.join("editor/init.lua").display().to_string(),
        "{out}"
    );
    assert_eq!(lines[4], "commit-message");
    assert_eq!(
        lines[5],
        format!("hello from the profile at {}", p.display())
    );
    assert_eq!(lines[6], "nvim");
    assert_eq!(lines[7], p.display().to_string());
    assert!(
        lines[8].starts_with("/nix/store/"),
        "the project's tools still win: {out}"
    );
    // The user's real home is untouched.
    let real = PathBuf::from(std::env::var("HOME").unwrap());
    assert!(std::fs::read_link(real.join(".claude/skills/commit-message")).is_err());
}

#[test]
fn interactive_shell_runs_the_profiles_init() {
    let f = fixture!();
    let p = f.profile_copy();
    let mut c = f.agentenv();
    c.arg("--profile").arg(&p).arg(".");
    let mut pty = Pty::spawn(c);
    pty.send("alias ll; case $- in *m*) echo job-control;; esac; exit 0\n");
    let status = pty.wait();
    let text = pty.text();
    assert!(status.success(), "{text}");
    assert!(text.contains("alias ll='ls -alF'"), "{text}");
}

#[test]
fn edits_on_either_side_are_seen_at_once() {
    let f = fixture!();
    let p = f.profile_copy();
    let mut up = f.agentenv();
    up.arg("up").arg("--profile").arg(&p);
    let o = run(up);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let exec = |script: &str| {
        let mut c = f.agentenv();
        c.args(["exec", &id, "--", "sh", "-c", script]);
        run(c)
    };
    std::fs::write(p.join("home/.bashrc"), "# edited on the host\n").unwrap();
    assert_eq!(stdout(&exec("cat ~/.bashrc")), "# edited on the host\n");
    assert!(exec("echo '# edited inside' > ~/.bashrc").status.success());
    assert_eq!(
        std::fs::read_to_string(p.join("home/.bashrc")).unwrap(),
        "# edited inside\n"
    );

    // Another profile (or none) cannot be put under a running environment's home.
    let o = f.run_in(&["true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is running with"), "{}", stderr(&o));
    let mut down = f.agentenv();
    down.args(["down", &id]);
    assert!(run(down).status.success());
}

#[test]
fn without_a_profile_the_home_is_bare_again() {
    let f = fixture!();
    let p = f.profile_copy();
    assert!(with_profile(&f, &p, &["true"]).status.success());
    let o = f.run_in(&[
        "sh",
        "-c",
        "ls -A ~; echo ${AGENTENV_PROFILE:-none}; command -v hello-profile || echo no-tool",
    ]);
    let out = stdout(&o);
    assert!(
        !out.contains(".bashrc") && !out.contains(".claude"),
        "{out}"
    );
    assert!(out.ends_with("none\nno-tool\n"), "{out}");
}

/// A profile whose agentenv.toml names `tools`, an output of its own flake with no inputs:
/// `profile-tool`, and a `hello` that must lose against the project's.
fn profile_with_tools(f: &Fixture) -> PathBuf {
    let dir = f.tmp.path().join("config-tools");
    std::fs::create_dir_all(dir.join("pkgs/bash/bin")).unwrap();
    std::fs::create_dir_all(dir.join("pkgs/busybox/bin")).unwrap();
    std::fs::copy("/bin/bash-static", dir.join("pkgs/bash/bin/bash")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("pkgs/busybox/bin/busybox")).unwrap();
    std::fs::write(dir.join("agentenv.toml"), "tools = \"tools\"\n").unwrap();
    std::fs::write(
        dir.join("build.sh"),
        "bb=$busybox/bin/busybox\n$bb mkdir -p $out/bin\n\
         for t in profile-tool hello; do\n\
           printf '#!%s\\necho %s from the profile tools\\n' \"$bash/bin/bash\" \"$t\" > $out/bin/$t\n\
           $bb chmod +x $out/bin/$t\ndone\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flake.nix"),
        r#"{
  outputs = { self }: let
    bash = builtins.path { path = ./pkgs/bash; name = "bash-static"; };
    busybox = builtins.path { path = ./pkgs/busybox; name = "busybox-static"; };
    tools = system: derivation {
      name = "profile-tools";
      inherit system bash busybox;
      builder = "${bash}/bin/bash";
      args = [ ./build.sh ];
      outputs = [ "out" ];
    };
  in {
    packages.x86_64-linux.tools = tools "x86_64-linux";
    packages.aarch64-linux.tools = tools "aarch64-linux";
  };
}
"#,
    )
    .unwrap();
    for args in [vec!["init", "-q"], vec!["add", "-A"]] {
        assert!(Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .status()
            .unwrap()
            .success());
    }
    std::fs::canonicalize(dir).unwrap()
}

#[test]
fn profile_tools_are_built_once_and_come_after_the_projects() {
    let f = fixture!();
    let p = profile_with_tools(&f);
    let o = with_profile(&f, &p, &["sh", "-c", "profile-tool; hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("profile-tool from the profile tools\n"),
        "{out}{}",
        stderr(&o)
    );
    assert!(
        out.contains("\nhello from the agentenv example"),
        "the project's hello wins: {out}"
    );
    // Warm: the build is not run again (nix build would replace its GC-root link).
    let entries = crate::support::list(&f.state.join("cache/profile-tools/entries"));
    assert_eq!(entries.len(), 1);
    let link = entries[0].join("tools");
    let built_at = std::fs::symlink_metadata(&link)
        .unwrap()
        .modified()
        .unwrap();
    let o = with_profile(&f, &p, &["profile-tool"]);
    assert_eq!(
        stdout(&o),
        "profile-tool from the profile tools\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .modified()
            .unwrap(),
        built_at
    );
    assert!(!stderr(&o).contains("warn"), "{}", stderr(&o));
}
