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
    let exec = |script: &str| f.exec(&id, &["sh", "-c", script]);
    std::fs::write(p.join("home/.bashrc"), "# edited on the host\n").unwrap();
    assert_eq!(stdout(&exec("cat ~/.bashrc")), "# edited on the host\n");
    // Inside, the profile is read-only: nothing there can rewrite what the host runs.
    let o = exec("echo '# edited inside' > ~/.bashrc || echo refused; touch \"$AGENTENV_PROFILE/activate.sh\" || echo refused");
    assert_eq!(stdout(&o), "refused\nrefused\n", "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(p.join("home/.bashrc")).unwrap(),
        "# edited on the host\n"
    );

    // Another profile (or none) cannot be put under a running environment's home.
    let o = f.run_in(&["true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is running with"), "{}", stderr(&o));
    f.down(&id);

    // With --profile-rw, edits inside reach the profile.
    let id = f.up(&["--profile", &p.to_string_lossy(), "--profile-rw"]);
    let o = f.exec(&id, &["sh", "-c", "echo '# edited inside' > ~/.bashrc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(p.join("home/.bashrc")).unwrap(),
        "# edited inside\n"
    );
    f.down(&id);
}

#[test]
fn profile_rw_in_the_config_lets_the_environment_write_the_profile() {
    let f = fixture!();
    let p = f.profile_copy();
    let write = "echo inside > \"$AGENTENV_PROFILE/note\" && echo written";
    let o = with_profile(&f, &p, &["sh", "-c", write]);
    assert!(!stdout(&o).contains("written"), "{}", stdout(&o));
    assert!(!p.join("note").exists());
    let config = f.state.join("config/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "profile_rw = true\n").unwrap();
    let o = with_profile(&f, &p, &["sh", "-c", write]);
    assert_eq!(stdout(&o), "written\n", "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(p.join("note")).unwrap(), "inside\n");
    let help = run({
        let mut c = f.agentenv();
        c.arg("--help");
        c
    });
    assert!(stdout(&help).contains("--profile-rw"), "{}", stdout(&help));
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
pub(crate) fn profile_with_tools(f: &Fixture) -> PathBuf {
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

/// A profile whose activate.sh records the home it sees, links inside it, logs each run, and
/// fails while `fail` exists in the profile.
fn profile_with_hook(f: &Fixture) -> PathBuf {
    let p = f.profile_copy();
    std::fs::write(
        p.join("activate.sh"),
        "#!/bin/sh\necho hook-output\necho \"$HOME\" > \"$HOME/.hook-home\"\n\
         ln -sfn \"$HOME/.hook-home\" \"$HOME/.hook-link\"\n\
         [ -e \"$AGENTENV_PROFILE/fail\" ] && exit 3\necho ran >> \"$AGENTENV_PROJECT/.hook-runs\"\n",
    )
    .unwrap();
    p
}

/// How often activate.sh ran (it counts in the project: the profile is read-only inside).
fn hook_runs(f: &Fixture) -> usize {
    std::fs::read_to_string(f.flake.join(".hook-runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn activate_sh_runs_inside_with_the_home_seen_there() {
    let f = fixture!();
    let p = profile_with_hook(&f);
    let show = ["sh", "-c", "cat ~/.hook-home; cat ~/.hook-link; echo $HOME"];
    let o = with_profile(&f, &p, &show);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "the script's output is not the command's: {out}"
    );
    assert_eq!(lines[0], lines[2], "the script saw the home the shell sees");
    assert_eq!(
        lines[1], lines[2],
        "a link it made inside the home works inside"
    );
    assert!(stderr(&o).contains("hook-output"), "{}", stderr(&o));
    assert_eq!(hook_runs(&f), 1);

    // Nothing changed: it does not run again.
    assert!(with_profile(&f, &p, &["true"]).status.success());
    assert_eq!(hook_runs(&f), 1);

    // A change to the links runs it again; it fails: a clear error, exit 1, no command run.
    std::fs::write(p.join("home/.new-dotfile"), "x\n").unwrap();
    std::fs::write(p.join("fail"), "").unwrap();
    let o = with_profile(&f, &p, &["echo", "command-ran"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("activate.sh exited with 3"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("command-ran"));

    // Fixed: the next start runs it again, and the command after it.
    std::fs::remove_file(p.join("fail")).unwrap();
    let o = with_profile(&f, &p, &["echo", "command-ran"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "command-ran\n");
    assert_eq!(hook_runs(&f), 2);
}

#[test]
fn up_runs_activate_sh_inside_before_the_environment_starts() {
    let f = fixture!();
    let p = profile_with_hook(&f);
    let mut up = f.agentenv();
    up.arg("up").arg("--profile").arg(&p);
    let o = run(up);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).lines().last().unwrap().to_string();
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "only the id on stdout: {}",
        stdout(&o)
    );
    let o = f.exec(&id, &["sh", "-c", "cat ~/.hook-home; echo $HOME"]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out} {}", stderr(&o));
    assert_eq!(lines[0], lines[1]);
    assert_eq!(hook_runs(&f), 1);
    f.down(&id);
}

#[test]
fn failed_tools_build_says_why_each_time_and_refresh_retries() {
    let f = fixture!();
    let p = profile_with_tools(&f);
    // The builder sees the host (nix's sandbox is off here): it fails while `fail` exists.
    let flag = p.join("fail");
    let script = std::fs::read_to_string(p.join("build.sh")).unwrap();
    std::fs::write(
        p.join("build.sh"),
        format!(
            "if [ -e '{}' ]; then echo tools-broke >&2; exit 1; fi\n{script}",
            flag.display()
        ),
    )
    .unwrap();
    assert!(Command::new("git")
        .arg("-C")
        .arg(&p)
        .args(["add", "-A"])
        .status()
        .unwrap()
        .success());
    std::fs::write(&flag, "").unwrap();
    for _ in 0..2 {
        let o = with_profile(
            &f,
            &p,
            &["sh", "-c", "command -v profile-tool || echo none"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "none\n");
        let err = stderr(&o);
        assert!(
            err.contains("warning: the profile's tools are not available"),
            "{err}"
        );
        assert!(err.contains("tools-broke"), "the cause each time: {err}");
        assert!(err.contains("hint:") && err.contains("--refresh"), "{err}");
    }
    std::fs::remove_file(&flag).unwrap();
    let mut c = f.agentenv();
    c.arg("--profile")
        .arg(&p)
        .args(["--refresh", ".", "--", "profile-tool"]);
    let o = run(c);
    assert_eq!(
        stdout(&o),
        "profile-tool from the profile tools\n",
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}
