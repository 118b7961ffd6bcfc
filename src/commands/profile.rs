//! `agentenv profile activate|deactivate|status|install`: a profile linked into the user's real
//! `$HOME`, without a sandbox (the remote-host case). Thin: resolves the profile, the home and
//! the state directory, then calls the profile engine.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;

use crate::diag::Diagnostic;
use crate::nix::cli::NixCli;
use crate::paths::StateDirs;
use crate::profile::{self, install, StateFiles};

pub const EXAMPLES: &str = "\
Examples:
  agentenv profile activate ~/config            link your profile into $HOME
  agentenv profile activate ~/config --dry-run  show what would change
  agentenv profile status                       what is active; --json for scripts
  agentenv profile deactivate                   $HOME as it was, byte for byte
  agentenv profile install github:you/config    build it with nix, then activate it

A profile is a directory: home/ (dotfiles), skills/ (agent skills), bin/, and optionally
agentenv.toml and activate.sh. See docs/profile.md.";

/// Verbs of `agentenv profile`.
#[derive(Debug, Subcommand)]
pub enum ProfileVerb {
    /// Link a profile into $HOME: files of home/, skills/, bin/ on PATH (see docs/profile.md).
    ///
    /// Example: `agentenv profile activate ~/config`. Entries in the way are moved aside and
    /// put back by `deactivate`. Without DIR: $AGENTENV_PROFILE, else `profile = "..."` in
    /// ~/.config/agentenv/config.toml.
    Activate {
        /// The profile directory.
        #[arg(value_name = "DIR", env = "AGENTENV_PROFILE")]
        dir: Option<PathBuf>,
        /// Print what would be done, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Remove the active profile's links and put back what they replaced, byte for byte.
    Deactivate,
    /// Show the active profile: links, moved-aside entries, PATH and variables.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a profile from a flake with nix, then activate it (offline fallback).
    ///
    /// Example: `agentenv profile install github:you/config`. Builds FLAKE_REF#agentenvProfile,
    /// else FLAKE_REF#homeConfigurations.portable.activationPackage, unless FLAKE_REF names an
    /// output.
    Install {
        #[arg(value_name = "FLAKE_REF")]
        flake_ref: String,
    },
}

pub fn run(verb: &ProfileVerb) -> Result<i32> {
    let home = home_dir()?;
    let state_dir = profile::host_state_dir(&home);
    match verb {
        ProfileVerb::Activate { dir, dry_run, json } => {
            let dir = resolve_profile_dir(dir.as_deref(), &home)?;
            if *dry_run {
                let plan = profile::plan_activation(&dir, &home, &state_dir)?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&plan)?);
                } else {
                    print!("{}", plan.describe());
                }
                warn_all(&plan.warnings);
                return Ok(0);
            }
            let done = profile::activate(&dir, &home, &state_dir)?;
            warn_all(&done.warnings);
            summarize(&dir, &home, &state_dir, done.changed);
            Ok(0)
        }
        ProfileVerb::Deactivate => {
            match profile::deactivate_from(&state_dir)? {
                Some(report) => warn_all(&report.warnings()),
                None => eprintln!("no profile is active"),
            }
            Ok(0)
        }
        ProfileVerb::Status { json } => {
            let status = profile::status_of(&state_dir)?;
            match (status, json) {
                (Some(s), true) => println!("{}", serde_json::to_string_pretty(&s)?),
                (None, true) => println!("null"),
                (Some(s), false) => print!("{}", s.describe()),
                (None, false) => println!("no profile is active"),
            }
            Ok(0)
        }
        ProfileVerb::Install { flake_ref } => install_profile(flake_ref, &home, &state_dir),
    }
}

fn install_profile(flake_ref: &str, home: &Path, state_dir: &Path) -> Result<i32> {
    let nix = NixCli::find()?;
    let files = StateFiles::new(state_dir);
    let built = install::build_profile(&nix, flake_ref, &files)?;
    let loaded = profile::Profile::load(&built.dir)?;
    let tools = match &loaded.manifest.tools {
        Some(attr) => Some(install::build_tools(
            &nix,
            install::flake_of(flake_ref),
            attr,
            &files,
        )?),
        None => None,
    };
    let done = profile::activate(&built.dir, home, state_dir)?;
    warn_all(&done.warnings);
    let origin = Some(built.installable);
    match tools {
        Some(bin) => profile::record_tools(state_dir, bin, origin)?,
        None => profile::record_origin(state_dir, origin)?,
    };
    summarize(&built.dir, home, state_dir, true);
    Ok(0)
}

fn warn_all(lines: &[String]) {
    for line in lines {
        eprintln!("warning: {line}");
    }
}

/// One line on stderr saying what is active now, and, unless the shell's rc files source it
/// already, the line to add there for the profile's PATH and variables.
fn summarize(dir: &Path, home: &Path, state_dir: &Path, changed: bool) {
    let status = profile::status_of(state_dir).ok().flatten();
    let counts = status
        .as_ref()
        .map(|s| {
            format!(
                ": {} links, {} entries moved aside",
                s.links,
                s.moved_aside.len()
            )
        })
        .unwrap_or_default();
    if changed {
        eprintln!("{} is active in {}{counts}", dir.display(), home.display());
    } else {
        eprintln!(
            "{} is active in {} already; nothing changed",
            dir.display(),
            home.display()
        );
    }
    let script = StateFiles::new(state_dir).env_script();
    let line = format!(". {}", crate::util::shell_word(&script.to_string_lossy()));
    let sourced = [".bashrc", ".zshrc", ".profile", ".bash_profile"]
        .iter()
        .filter_map(|rc| std::fs::read_to_string(home.join(rc)).ok())
        .any(|text| text.contains(&*script.to_string_lossy()));
    if !sourced {
        eprintln!("  for its PATH and variables, add this line to ~/.bashrc (or your shell's rc file): {line}");
    }
}

/// The real home: `$HOME`, which must be an absolute directory.
fn home_dir() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h.is_dir())
        .ok_or_else(|| {
            Diagnostic::new("HOME is not set to an existing directory")
                .hint("set HOME to your home directory, e.g. `export HOME=/home/you`")
                .into()
        })
}

/// The profile directory: the argument (or $AGENTENV_PROFILE, through clap), else `profile`
/// in config.toml.
fn resolve_profile_dir(arg: Option<&Path>, home: &Path) -> Result<PathBuf> {
    let config = StateDirs::from_env()?.config.join("config.toml");
    profile::config::chosen_profile(arg, home, &config)?.ok_or_else(|| {
        Diagnostic::new("no profile given")
            .hint("name it: `agentenv profile activate ~/config`")
            .hint(format!(
                "or set AGENTENV_PROFILE, or `profile = \"~/config\"` in {}",
                config.display()
            ))
            .into()
    })
}
