//! What an active profile adds to a shell's environment (`ProfileEnv`), and the `env.sh` file
//! that gives the same to a shell on a plain host. Touches no file itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment a profile contributes, for whoever starts the shell: the sandbox sets it
/// directly; on a plain host `env.sh` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEnv {
    /// Put before the dev shell's PATH: the profile's `bin/`.
    pub path_prepend: Vec<PathBuf>,
    /// Put after the dev shell's PATH, so the project's tools win: the built `tools` output's
    /// `bin`. Empty until the tools are built (`agentenv profile install` builds them).
    pub path_append: Vec<PathBuf>,
    /// Variables to set, in order: `AGENTENV_PROFILE` first, then the manifest's `[env]`.
    pub vars: Vec<(String, String)>,
    /// Snippets an interactive shell runs after the dev shell's set-up, in order.
    pub shell_init: Vec<String>,
    /// The installable of the profile's tools (`<profile>#<attr>`), built or not.
    pub tools: Option<String>,
}

impl ProfileEnv {
    /// A copy that keeps the built tools of `previous` when both name the same tools.
    pub fn keeping_tools_of(mut self, previous: &ProfileEnv) -> Self {
        if self.tools == previous.tools && self.path_append.is_empty() {
            self.path_append = previous.path_append.clone();
        }
        self
    }

    /// Shell lines that put the profile's `bin/` before PATH and its tools after it, for a
    /// shell's start-up script (which runs once: no check for entries already there).
    pub fn path_lines(&self) -> String {
        let mut out = String::new();
        for dir in &self.path_prepend {
            let q = quote(&dir.to_string_lossy());
            out.push_str(&format!("PATH={q}\"${{PATH:+:$PATH}}\"\n"));
        }
        for dir in &self.path_append {
            let q = quote(&dir.to_string_lossy());
            out.push_str(&format!("PATH=\"${{PATH:+$PATH:}}\"{q}\n"));
        }
        out
    }

    /// The init snippets, for an interactive shell's start-up script.
    pub fn init_lines(&self) -> String {
        let mut out = String::new();
        for snippet in &self.shell_init {
            out.push_str(snippet);
            if !snippet.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// The same environment with the profile's directory `from` named `to` (where it is seen
    /// elsewhere: a copy of it on a dispatch host).
    pub fn moved(mut self, from: &Path, to: &Path) -> Self {
        let from_s = from.to_string_lossy().into_owned();
        let to_s = to.to_string_lossy().into_owned();
        for dir in self
            .path_prepend
            .iter_mut()
            .chain(self.path_append.iter_mut())
        {
            if let Ok(rest) = dir.strip_prefix(from) {
                *dir = to.join(rest);
            }
        }
        for (_, value) in self.vars.iter_mut() {
            if *value == from_s {
                value.clone_from(&to_s);
            }
        }
        if let Some(tools) = &mut self.tools {
            if let Some(attr) = tools.strip_prefix(&from_s).filter(|r| r.starts_with('#')) {
                *tools = format!("{to_s}{attr}");
            }
        }
        self
    }

    /// A POSIX shell script that applies this environment; sourcing it twice adds nothing twice.
    pub fn to_shell_script(&self, profile: &Path) -> String {
        let mut out = format!(
            "# Written by agentenv for the profile {}; regenerated on every activation.\n\
             # Source it from your shell's rc file: [ -f FILE ] && . FILE\n",
            profile.display()
        );
        for dir in &self.path_prepend {
            let q = quote(&dir.to_string_lossy());
            out.push_str(&format!(
                "case \":$PATH:\" in *:{q}:*) ;; *) PATH={q}\"${{PATH:+:$PATH}}\" ;; esac\n"
            ));
        }
        for dir in &self.path_append {
            let q = quote(&dir.to_string_lossy());
            out.push_str(&format!(
                "case \":$PATH:\" in *:{q}:*) ;; *) PATH=\"${{PATH:+$PATH:}}\"{q} ;; esac\n"
            ));
        }
        out.push_str("export PATH\n");
        for (name, value) in &self.vars {
            out.push_str(&format!("export {name}={}\n", quote(value)));
        }
        out.push_str(&self.init_lines());
        out
    }
}

/// `s` in single quotes, safe for any POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_script_prepends_appends_and_quotes() {
        let env = ProfileEnv {
            path_prepend: vec!["/p/bin".into()],
            path_append: vec!["/t/bin".into()],
            vars: vec![("A".into(), "it's".into())],
            shell_init: vec!["alias l=ls".into()],
            tools: None,
        };
        let script = env.to_shell_script(Path::new("/p"));
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("PATH=/usr/bin:/bin; {script}\necho \"$PATH|$A\"; . /dev/stdin <<'X'\n{script}\nX\necho \"$PATH\"")])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text,
            "/p/bin:/usr/bin:/bin:/t/bin|it's\n/p/bin:/usr/bin:/bin:/t/bin\n"
        );
    }

    #[test]
    fn built_tools_are_kept_when_the_tools_are_the_same() {
        let old = ProfileEnv {
            path_append: vec!["/t/bin".into()],
            tools: Some("/p#tools".into()),
            ..Default::default()
        };
        let new = ProfileEnv {
            tools: Some("/p#tools".into()),
            ..Default::default()
        };
        assert_eq!(
            new.clone().keeping_tools_of(&old).path_append,
            old.path_append
        );
        let other = ProfileEnv {
            tools: Some("/q#tools".into()),
            ..Default::default()
        };
        assert!(other.keeping_tools_of(&old).path_append.is_empty());
    }
}
