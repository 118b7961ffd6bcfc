//! How the user's shell or command is started inside: nix's dev-env script run by bash exactly
//! as `nix develop` runs it, with the command appended (`exec CMD`) or, for an interactive
//! shell, as its rcfile with a prompt that says where you are.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Where the start-up script is written inside (a tmpfs of the environment's own).
pub const SCRIPT_PATH: &str = "/run/agentenv/enter.sh";

/// What the user asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchMode {
    /// An interactive bash on the user's terminal.
    Interactive,
    /// One command; its exit code becomes agentenv's.
    Command(Vec<OsString>),
    /// No command and no terminal: run the script read from stdin in the environment.
    Stdin,
}

impl LaunchMode {
    /// `command` if one is given; otherwise an interactive shell when stdin is a terminal, or
    /// the script read from stdin.
    pub fn for_command(command: &[OsString]) -> Self {
        use std::io::IsTerminal;
        if !command.is_empty() {
            LaunchMode::Command(command.to_vec())
        } else if std::io::stdin().is_terminal() {
            LaunchMode::Interactive
        } else {
            LaunchMode::Stdin
        }
    }
}

/// A process to start inside: program, arguments, environment, directory, and the script it
/// reads (written to `script_path` first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    pub program: PathBuf,
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub script: Vec<u8>,
    pub script_path: PathBuf,
}

/// Quotes bytes for bash, as nix's `shellEscape` does: in single quotes, `'` as `'\''`.
pub fn shell_quote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// A line that ends the script with 127 and `agentenv: PROGRAM: command not found` when exec
/// would find no `program`: bash's own message would name the script, a path of ours. A file
/// that exists but cannot run is left to exec (126).
fn not_found_check(program: &[u8]) -> Vec<u8> {
    let q = shell_quote(program);
    let mut line = b"type -P -- ".to_vec();
    line.extend_from_slice(&q);
    line.extend_from_slice(b" >/dev/null");
    if program.contains(&b'/') {
        line.extend_from_slice(b" || [ -e ");
        line.extend_from_slice(&q);
        line.extend_from_slice(b" ]");
    }
    line.extend_from_slice(b" || { printf 'agentenv: %s: command not found\\n' ");
    line.extend_from_slice(&q);
    line.extend_from_slice(b" >&2; exit 127; }\n");
    line
}

/// Plans the start of `mode` with nix's script `rc_script` (already adjusted to `cwd`).
pub fn plan_launch(
    rc_script: &str,
    shell: &Path,
    mode: &LaunchMode,
    cwd: &Path,
    env: Vec<(OsString, OsString)>,
    prompt_name: &str,
) -> Launch {
    let mut script = Vec::with_capacity(rc_script.len() + 256);
    let bash = OsString::from("bash");
    let argv = match mode {
        LaunchMode::Interactive => {
            script.extend_from_slice(b"[ -n \"$PS1\" ] && [ -e ~/.bashrc ] && source ~/.bashrc;\n");
            script.extend_from_slice(rc_script.as_bytes());
            let prefix = format!("\\[\\e[1m\\](agentenv:{prompt_name})\\[\\e[0m\\] ");
            script.extend_from_slice(b"if [ -n \"$PS1\" ]; then\n  [ \"$PS1\" = '\\s-\\v\\$ ' ] && PS1='\\u@\\h:\\w\\$ '\n  PS1=");
            script.extend_from_slice(&shell_quote(prefix.as_bytes()));
            script.extend_from_slice(b"\"$PS1\"\nfi\n");
            vec![bash, "--rcfile".into(), SCRIPT_PATH.into()]
        }
        LaunchMode::Command(cmd) => {
            script.extend_from_slice(rc_script.as_bytes());
            if let Some(program) = cmd.first() {
                script.extend_from_slice(&not_found_check(program.as_bytes()));
            }
            script.extend_from_slice(b"exec");
            for arg in cmd {
                script.push(b' ');
                script.extend_from_slice(&shell_quote(arg.as_bytes()));
            }
            script.push(b'\n');
            vec![bash, SCRIPT_PATH.into()]
        }
        LaunchMode::Stdin => {
            script.extend_from_slice(rc_script.as_bytes());
            script.extend_from_slice(b"source /dev/stdin\n");
            vec![bash, SCRIPT_PATH.into()]
        }
    };
    Launch {
        program: shell.to_path_buf(),
        argv,
        env,
        cwd: cwd.to_path_buf(),
        script,
        script_path: PathBuf::from(SCRIPT_PATH),
    }
}

impl Launch {
    /// The same launch with its script at `path` instead of the default place (each exec of a
    /// persistent environment gets its own).
    pub fn with_script_path(mut self, path: &Path) -> Self {
        for arg in self
            .argv
            .iter_mut()
            .filter(|a| a.as_os_str() == SCRIPT_PATH)
        {
            *arg = path.as_os_str().to_owned();
        }
        self.script_path = path.to_path_buf();
        self
    }

    /// The environment as `KEY=VALUE` byte strings for execve.
    pub fn env_pairs(&self) -> Vec<Vec<u8>> {
        self.env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone().into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                kv
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_execed_after_nix_script_with_quoting() {
        let l = plan_launch(
            "export A=1\n",
            Path::new("/nix/store/b/bin/bash"),
            &LaunchMode::Command(vec!["echo".into(), "it's".into()]),
            Path::new("/p"),
            vec![],
            "p",
        );
        assert_eq!(
            String::from_utf8(l.script).unwrap(),
            "export A=1\n\
             type -P -- 'echo' >/dev/null || \
             { printf 'agentenv: %s: command not found\\n' 'echo' >&2; exit 127; }\n\
             exec 'echo' 'it'\\''s'\n"
        );
        assert_eq!(
            l.argv,
            vec![OsString::from("bash"), OsString::from(SCRIPT_PATH)]
        );
    }

    /// Runs the command part of a planned script with bash, in `dir`.
    fn run_planned(cmd: &[&str], dir: &Path) -> std::process::Output {
        let l = plan_launch(
            "",
            Path::new("/b"),
            &LaunchMode::Command(cmd.iter().map(OsString::from).collect()),
            dir,
            vec![],
            "p",
        );
        std::process::Command::new("bash")
            .arg("-c")
            .arg(OsString::from_vec(l.script))
            .current_dir(dir)
            .output()
            .unwrap()
    }

    #[test]
    fn a_command_that_is_not_found_is_named_without_the_scripts_path() {
        let tmp = tempfile::tempdir().unwrap();
        let o = run_planned(&["agentenv-no-such-command", "x"], tmp.path());
        assert_eq!(o.status.code(), Some(127));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "agentenv: agentenv-no-such-command: command not found\n"
        );
        let o = run_planned(&["./missing"], tmp.path());
        assert_eq!(o.status.code(), Some(127));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "agentenv: ./missing: command not found\n"
        );
        // A file that cannot run is exec's to refuse.
        std::fs::write(tmp.path().join("plain"), "").unwrap();
        let o = run_planned(&["./plain"], tmp.path());
        assert_eq!(o.status.code(), Some(126));
        let o = run_planned(&["sh", "-c", "exit 3"], tmp.path());
        assert_eq!(o.status.code(), Some(3), "a command on PATH still runs");
    }

    #[test]
    fn interactive_shell_reads_the_script_as_rcfile_and_marks_the_prompt() {
        let l = plan_launch(
            "X=1\n",
            Path::new("/b"),
            &LaunchMode::Interactive,
            Path::new("/p"),
            vec![],
            "hello",
        );
        let s = String::from_utf8(l.script).unwrap();
        assert!(s.starts_with("[ -n \"$PS1\" ] && [ -e ~/.bashrc ] && source ~/.bashrc;\nX=1\n"));
        assert!(s.contains("(agentenv:hello)"));
        assert_eq!(l.argv[1], OsString::from("--rcfile"));
    }
}
