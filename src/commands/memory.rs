//! `agentenv memory log|diff|show|revert|status|resolve NAME`: what an agent learned, when and
//! where; undoing it; settling kept conflicts. Reading verbs are git's own output.

use std::ffi::OsStr;

use anyhow::Result;

use crate::memory::history::{resolve, revert, Take};
use crate::memory::repo::{show_to_user, MAIN};
use crate::memory::status::status;
use crate::memory::Agent;
use crate::paths::StateDirs;

#[derive(Debug, clap::Subcommand)]
pub enum MemoryVerb {
    /// The memory's history: one entry per session, with where and when it ran.
    Log {
        #[arg(value_name = "NAME")]
        name: String,
        /// Also the files each changed.
        #[arg(long)]
        stat: bool,
    },
    /// What a commit changed (default: the latest), as a diff against its first parent.
    Diff {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "REV", default_value = MAIN)]
        rev: String,
    },
    /// A file of the memory (or, without PATH, the list of its files), at REV.
    Show {
        #[arg(value_name = "NAME")]
        name: String,
        /// Relative to $HOME, e.g. .claude/CLAUDE.md.
        #[arg(value_name = "PATH")]
        path: Option<String>,
        #[arg(long, value_name = "REV", default_value = MAIN)]
        at: String,
    },
    /// Undo what a commit (a session) changed, keeping what came after it.
    Revert {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "REV")]
        rev: String,
    },
    /// Running sessions, kept conflicts, files past what their tool reads.
    Status {
        #[arg(value_name = "NAME")]
        name: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Settle a kept conflict: the file keeps a side, the other side's file goes.
    Resolve {
        #[arg(value_name = "NAME")]
        name: String,
        /// The conflicted file, relative to $HOME.
        #[arg(value_name = "PATH")]
        path: String,
        /// `kept`: the version the file has; `other`: the one kept beside it.
        #[arg(long, value_enum, default_value = "kept")]
        take: Take,
    },
}

const LOG_FORMAT: &str = "--format=%C(auto)%h %ad %s%n%w(0,8,8)%(trailers:key=Project,key=Host,key=Backend,key=Command,key=Conflict,key=Reverts)";

pub fn run(verb: &MemoryVerb) -> Result<i32> {
    let state = StateDirs::from_env()?;
    let os = |s: &'static str| OsStr::new(s);
    match verb {
        MemoryVerb::Log { name, stat } => {
            let agent = Agent::open(&state, name)?;
            let mut args = vec![
                os("log"),
                os("--first-parent"),
                os("--date=iso-strict"),
                os(LOG_FORMAT),
            ];
            if *stat {
                args.push(os("--stat"));
            }
            args.push(os(MAIN));
            show_to_user(&agent.repo(), &args)
        }
        MemoryVerb::Diff { name, rev } => {
            let agent = Agent::open(&state, name)?;
            let commit = agent.repo().resolve(rev)?;
            let first = format!("{commit}^1");
            let parent = agent.repo().resolve(&first)?;
            show_to_user(
                &agent.repo(),
                &[os("diff"), OsStr::new(&parent), OsStr::new(&commit)],
            )
        }
        MemoryVerb::Show { name, path, at } => {
            let agent = Agent::open(&state, name)?;
            let commit = agent.repo().resolve(at)?;
            match path {
                Some(p) => {
                    let spec = format!("{commit}:{}", p.trim_start_matches("~/"));
                    show_to_user(&agent.repo(), &[os("show"), OsStr::new(&spec)])
                }
                None => show_to_user(
                    &agent.repo(),
                    &[
                        os("ls-tree"),
                        os("-r"),
                        os("--name-only"),
                        OsStr::new(&commit),
                    ],
                ),
            }
        }
        MemoryVerb::Revert { name, rev } => {
            let agent = Agent::open(&state, name)?;
            let done = revert(&agent, rev)?;
            for k in &done.conflicts {
                eprintln!("agentenv: ~/{}: {}", k.path, k.what);
            }
            println!("{}", done.commit);
            Ok(0)
        }
        MemoryVerb::Status { name, json } => {
            let agent = Agent::open(&state, name)?;
            let st = status(&agent)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", st.describe());
            }
            Ok(0)
        }
        MemoryVerb::Resolve { name, path, take } => {
            let agent = Agent::open(&state, name)?;
            println!("{}", resolve(&agent, path, *take)?);
            Ok(0)
        }
    }
}
