//! `agentenv completions SHELL`: a completion script that asks agentenv itself what to offer
//! (clap's dynamic completion, through `COMPLETE=SHELL agentenv ...`), so that ENV completes
//! to the running environments and attach's TARGET to the running containers, not only to
//! flags. `complete_if_asked` answers those calls before anything else runs.

use std::ffi::OsStr;

use anyhow::Result;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::EnvCompleter;

/// The variable the scripts set when they call agentenv for candidates.
const VAR: &str = "COMPLETE";

/// Answers a completion script's call and exits, if this is one; otherwise returns at once.
pub fn complete_if_asked() {
    if std::env::var_os(VAR).is_none() {
        return;
    }
    use clap::CommandFactory;
    clap_complete::CompleteEnv::with_factory(crate::cli::Cli::command)
        .var(VAR)
        .complete();
}

/// Prints the script for `shell`.
pub fn run(shell: clap_complete::Shell) -> Result<i32> {
    use clap_complete::env::{Bash, Elvish, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        other => {
            return Err(
                crate::diag::Diagnostic::new(format!("no completion script for {other}"))
                    .hint("use bash, zsh, fish, elvish or powershell")
                    .into(),
            )
        }
    };
    let mut out = std::io::stdout();
    completer.write_registration(VAR, "agentenv", "agentenv", "agentenv", &mut out)?;
    Ok(0)
}

/// Candidates for ENV: the ids and names of the running environments.
pub fn environments(current: &OsStr) -> Vec<CompletionCandidate> {
    let Ok(state) = crate::paths::StateDirs::from_env() else {
        return Vec::new();
    };
    let current = current.to_string_lossy();
    let mut found = Vec::new();
    for env in crate::runtime::Runtime::new(state.runtime).list() {
        let project = env.state.project.display().to_string();
        if let Some(name) = &env.state.name {
            found.push(
                CompletionCandidate::new(name)
                    .help(Some(format!("{} {project}", env.state.id).into())),
            );
        }
        found.push(CompletionCandidate::new(&env.state.id).help(Some(project.into())));
    }
    found.retain(|c| c.get_value().to_string_lossy().starts_with(&*current));
    found
}

/// Candidates for attach's TARGET: the names (or ids) of the running containers.
#[cfg(target_os = "linux")]
pub fn containers(current: &OsStr) -> Vec<CompletionCandidate> {
    use crate::attach::runtimes::{from_clis, from_state_files, merge};
    let current = current.to_string_lossy();
    let mut all = from_state_files();
    merge(&mut all, from_clis());
    let mut found: Vec<CompletionCandidate> = all
        .iter()
        .map(|c| {
            let value = c
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| c.short_id().into());
            CompletionCandidate::new(value).help(Some(c.describe().into()))
        })
        .collect();
    found.retain(|c| c.get_value().to_string_lossy().starts_with(&*current));
    found
}
