//! How the session's shell starts, as plain data: the target's environment with the toolbox's
//! variables on top and its PATH entries after the target's, nix's dev-env script (minus the
//! temporary directory it would make in the target's `/tmp`), read by bash from an in-memory
//! file passed as an fd, so nothing is written into the target. With a profile: its variables
//! where the target has none, its PATH entries after the target's, its init when interactive.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::facts::TargetFacts;
use super::user::SessionUser;
use crate::guest::launch::{plan_launch, shell_quote, Launch, LaunchMode, SCRIPT_PATH};
use crate::nix::devenv::DevEnv;
use crate::profile::ProfileEnv;

/// The fd the session's script is passed on; closed by the script's first line.
pub const SCRIPT_FD: i32 = 200;

/// Caller variables that describe the caller's terminal; they replace the target's.
const FROM_CALLER: &[&str] = &["TERM", "COLORTERM", "NO_COLOR"];

/// Where bash reads the script: the fd, through the target's `/proc`.
pub fn script_path() -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{SCRIPT_FD}"))
}

/// A profile activated into a private home shown at the session's `$HOME`, as the session's
/// shell starts with it.
#[derive(Debug, Clone, Copy)]
pub struct LaunchProfile<'a> {
    pub env: &'a ProfileEnv,
    /// Lines that run its `activate.sh` before the command, where the session runs it (a
    /// dispatched one); empty where it runs on its own first.
    pub hook: &'a str,
}

impl<'a> LaunchProfile<'a> {
    /// The profile's environment, its `activate.sh` run on its own.
    pub fn env(env: &'a ProfileEnv) -> Self {
        Self { env, hook: "" }
    }
}

/// Plans the session's shell or command, with `profile`'s environment if there is one.
pub fn plan_session_launch(
    devenv: &DevEnv,
    facts: &TargetFacts,
    user: &SessionUser,
    mode: &LaunchMode,
    name: &str,
    caller_env: &[(OsString, OsString)],
    profile: Option<LaunchProfile>,
) -> Launch {
    let mut env = session_env(facts, user, name, caller_env);
    if let Some(p) = profile {
        // Before nix's script runs, so the toolbox's variables win as well.
        for (k, v) in &p.env.vars {
            if !env.iter().any(|(e, _)| e == k.as_str()) {
                env.push((k.into(), v.into()));
            }
        }
    }
    let target_path = facts
        .var("PATH")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cwd = &facts.cwd;
    let rc = without_build_dir(&devenv.rc_script_for(cwd));
    let mut body = format!("exec {SCRIPT_FD}<&-\n");
    body.push_str(&rc);
    body.push('\n');
    if let Some(p) = profile {
        // As in `agentenv PATH`: its bin/ before the toolbox's entries, its tools after them.
        body.push_str(&p.env.path_lines());
    }
    body.push_str(&path_after_target(&target_path));
    match profile {
        // The home is the private one: the history stays there.
        Some(_) => body.push_str("HISTFILE=~/.bash_history\n"),
        // An interactive bash would save its history into the target's home.
        None => body.push_str("unset HISTFILE\n"),
    }
    if let Some(p) = profile {
        body.push_str(p.hook);
    }
    if let (Some(p), LaunchMode::Interactive) = (profile, mode) {
        body.push_str(&p.env.init_lines());
    }
    let mut launch = plan_launch(&body, &devenv.shell, mode, cwd, env, name);
    let path = script_path();
    for arg in &mut launch.argv {
        if arg == SCRIPT_PATH {
            *arg = path.clone().into_os_string();
        }
    }
    launch.script_path = path;
    launch
}

/// The target's variables in order, then who the session is, the caller's terminal, and
/// markers saying where the shell runs.
pub fn session_env(
    facts: &TargetFacts,
    user: &SessionUser,
    name: &str,
    caller_env: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(facts.environ.len() + 8);
    for (k, v) in &facts.environ {
        if !env.iter().any(|(e, _)| e == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    let home = session_home(facts, user);
    let mut set = |k: &str, v: OsString| match env.iter_mut().find(|(e, _)| e == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k.into(), v)),
    };
    set("HOME", home.into());
    if user.explicit {
        if let Some(n) = &user.name {
            set("USER", n.into());
            set("LOGNAME", n.into());
        }
    }
    for (k, v) in caller_env {
        if FROM_CALLER.iter().any(|c| k == c) {
            set(&k.to_string_lossy(), v.clone());
        }
    }
    set("AGENTENV", "1".into());
    set("AGENTENV_ATTACH", name.into());
    env
}

/// The session's `$HOME`: `--user`'s home from the target's passwd, else the target's own
/// `HOME`, else root's home there; `/` when there is none.
pub fn session_home(facts: &TargetFacts, user: &SessionUser) -> PathBuf {
    let from_passwd = || user.home.clone().unwrap_or_else(|| "/".into());
    match facts.var("HOME") {
        Some(home) if !user.explicit => Path::new(home).to_path_buf(),
        _ => from_passwd(),
    }
}

/// nix's script without the lines that make a temporary directory (`mktemp -d` in `/tmp`) for
/// `NIX_BUILD_TOP` and point `TMPDIR` and friends at it: that directory would be a file left in
/// the target. The target's own `TMPDIR`, if any, stays.
pub fn without_build_dir(rc: &str) -> String {
    rc.lines()
        .filter(|l| {
            let l = l.trim();
            !(l.starts_with("export NIX_BUILD_TOP=")
                || (l.starts_with("export ") && l.ends_with("=\"$NIX_BUILD_TOP\"")))
        })
        .fold(String::with_capacity(rc.len()), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        })
}

/// Bash that rebuilds PATH as the target's entries, then those nix's script added that the
/// target does not have, so the target's own tools win. Uses no here-strings (they would make
/// temporary files).
pub fn path_after_target(target_path: &str) -> String {
    let quoted = String::from_utf8_lossy(&shell_quote(target_path.as_bytes())).into_owned();
    format!(
        "__agentenv_path={quoted}\n\
         __agentenv_rest=\"$PATH:\"\n\
         while [ -n \"$__agentenv_rest\" ]; do\n\
         \x20 __agentenv_dir=${{__agentenv_rest%%:*}}; __agentenv_rest=${{__agentenv_rest#*:}}\n\
         \x20 [ -n \"$__agentenv_dir\" ] || continue\n\
         \x20 case \":$__agentenv_path:\" in *\":$__agentenv_dir:\"*) ;; *) __agentenv_path=${{__agentenv_path:+$__agentenv_path:}}$__agentenv_dir ;; esac\n\
         done\n\
         PATH=$__agentenv_path; export PATH\n\
         unset __agentenv_path __agentenv_rest __agentenv_dir\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::facts::{RootListing, TargetNix};
    use std::path::Path;

    fn facts(env: &[(&str, &str)]) -> TargetFacts {
        TargetFacts {
            environ: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            cwd: "/srv".into(),
            root: RootListing {
                mode: 0o755,
                entries: vec![],
            },
            nix: TargetNix::Absent,
            foreign: vec![],
        }
    }

    fn root() -> SessionUser {
        SessionUser {
            uid: 0,
            gid: 0,
            groups: vec![0],
            name: Some("root".into()),
            home: Some("/root".into()),
            explicit: false,
        }
    }

    #[test]
    fn nix_build_dir_lines_are_dropped() {
        let rc = "PATH=\"$PATH:$nix_saved_PATH\"\nexport NIX_BUILD_TOP=\"$(mktemp -d -t nix-shell.XXXXXX)\"\nexport TMP=\"$NIX_BUILD_TOP\"\nexport TMPDIR=\"$NIX_BUILD_TOP\"\nexport TEMP=\"$NIX_BUILD_TOP\"\nexport TEMPDIR=\"$NIX_BUILD_TOP\"\neval \"$shellHook\"\n";
        assert_eq!(
            without_build_dir(rc),
            "PATH=\"$PATH:$nix_saved_PATH\"\neval \"$shellHook\"\n"
        );
    }

    #[test]
    fn target_path_comes_first_without_duplicates() {
        let script = path_after_target("/usr/bin:/bin");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "PATH=/nix/a/bin:/bin:/nix/b/bin::/usr/bin\n{script}echo \"$PATH\""
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/usr/bin:/bin:/nix/a/bin:/nix/b/bin\n"
        );
    }

    #[test]
    fn target_env_is_kept_and_the_terminal_is_the_callers() {
        let f = facts(&[("PATH", "/bin"), ("TERM", "dumb"), ("FOO", "bar")]);
        let env = session_env(
            &f,
            &root(),
            "web",
            &[
                ("TERM".into(), "xterm".into()),
                ("SECRET".into(), "x".into()),
            ],
        );
        let get = |k: &str| env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone());
        assert_eq!(get("FOO"), Some("bar".into()));
        assert_eq!(get("TERM"), Some("xterm".into()));
        assert_eq!(get("SECRET"), None);
        assert_eq!(get("HOME"), Some("/root".into()));
        assert_eq!(get("AGENTENV_ATTACH"), Some("web".into()));
    }

    #[test]
    fn explicit_user_sets_home_and_names() {
        let f = facts(&[("HOME", "/root"), ("USER", "root")]);
        let ana = SessionUser {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            name: Some("ana".into()),
            home: Some("/home/ana".into()),
            explicit: true,
        };
        let env = session_env(&f, &ana, "web", &[]);
        assert!(env.contains(&("HOME".into(), "/home/ana".into())));
        assert!(env.contains(&("USER".into(), "ana".into())));
    }

    fn devenv(rc: &str) -> DevEnv {
        DevEnv {
            installable: "/t".into(),
            rc_script: rc.into(),
            outputs_placeholder: "/c/w/outputs".into(),
            store_path: "/nix/store/x-env".into(),
            shell: "/nix/store/b/bin/bash".into(),
            env_tool: None,
            nix_version: String::new(),
            evaluated_at: 0,
        }
    }

    /// The launch for root in `facts`, with no caller variables, as container `web`.
    fn launch(
        rc: &str,
        facts: &TargetFacts,
        mode: &LaunchMode,
        p: Option<LaunchProfile>,
    ) -> Launch {
        plan_session_launch(&devenv(rc), facts, &root(), mode, "web", &[], p)
    }

    #[test]
    fn command_reads_the_script_from_the_fd_and_closes_it() {
        let l = launch(
            "export A=1\n",
            &facts(&[("PATH", "/bin")]),
            &LaunchMode::Command(vec!["true".into()]),
            None,
        );
        assert_eq!(
            l.argv,
            vec![OsString::from("bash"), "/proc/self/fd/200".into()]
        );
        assert_eq!(l.cwd, Path::new("/srv"));
        let s = String::from_utf8(l.script).unwrap();
        assert!(s.starts_with("exec 200<&-\nexport A=1\n"), "{s}");
        assert!(s.contains("unset HISTFILE\ntype -P -- 'true' "), "{s}");
        assert!(s.ends_with("exit 127; }\nexec 'true'\n"), "{s}");
    }

    fn profile_env() -> ProfileEnv {
        ProfileEnv {
            path_prepend: vec!["/p/bin".into()],
            path_append: vec!["/nix/store/t-tools/bin".into()],
            vars: vec![
                ("AGENTENV_PROFILE".into(), "/p".into()),
                ("EDITOR".into(), "nvim".into()),
            ],
            shell_init: vec!["alias ll='ls -l'".into()],
            tools: None,
        }
    }

    #[test]
    fn profile_variables_never_replace_the_targets() {
        let f = facts(&[("PATH", "/bin"), ("EDITOR", "vi")]);
        let p = profile_env();
        let mode = LaunchMode::Command(vec!["true".into()]);
        let l = launch("", &f, &mode, Some(LaunchProfile::env(&p)));
        let get = |k: &str| l.env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone());
        assert_eq!(get("EDITOR"), Some("vi".into()));
        assert_eq!(get("AGENTENV_PROFILE"), Some("/p".into()));
        assert_eq!(get("HOME"), Some("/root".into()));
        let s = String::from_utf8(l.script).unwrap();
        assert!(
            !s.contains("alias ll"),
            "init is for interactive shells: {s}"
        );
        assert!(s.contains("HISTFILE=~/.bash_history\n"), "{s}");
        let i = launch(
            "",
            &f,
            &LaunchMode::Interactive,
            Some(LaunchProfile {
                env: &p,
                hook: "source /p/activate.sh\n",
            }),
        );
        let s = String::from_utf8(i.script).unwrap();
        let (hook, init) = (
            s.find("source /p/activate.sh\n"),
            s.find("alias ll='ls -l'\n"),
        );
        assert!(
            hook.is_some() && init.is_some() && hook < init,
            "the hook runs before the profile's init: {s}"
        );
    }

    #[test]
    fn profile_path_entries_come_after_the_targets() {
        let p = profile_env();
        let mode = LaunchMode::Command(vec!["sh".into(), "-c".into(), "echo \"$PATH\"".into()]);
        let rc = "PATH=/nix/store/x-toolbox/bin${PATH:+:$PATH}\n";
        let f = facts(&[("PATH", "/usr/bin:/bin")]);
        let l = launch(rc, &f, &mode, Some(LaunchProfile::env(&p)));
        let script = String::from_utf8(l.script)
            .unwrap()
            .replacen("exec 200<&-\n", "", 1);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/usr/bin:/bin:/p/bin:/nix/store/x-toolbox/bin:/nix/store/t-tools/bin\n"
        );
    }
}
