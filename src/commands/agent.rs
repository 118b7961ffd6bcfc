//! `agentenv agent new|list|show|rm`: agents, each a profile plus a memory kept as a git
//! history in agentenv's data directory.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::memory::{self, Agent};
use crate::paths::StateDirs;

#[derive(Debug, clap::Subcommand)]
pub enum AgentVerb {
    /// Create an agent: a profile (read-only to it) and an empty memory, seeded with the
    /// files the profile has at the memory's file places (its home/.claude/CLAUDE.md, ...).
    New {
        #[arg(value_name = "NAME")]
        name: String,
        /// The profile the agent runs with.
        #[arg(long, value_name = "DIR")]
        profile: Option<PathBuf>,
    },
    /// List the agents.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent: its profile, memory, places and running sessions.
    Show {
        #[arg(value_name = "NAME")]
        name: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an agent, its memory and its homes.
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Serialize)]
struct Shown {
    name: String,
    profile: Option<PathBuf>,
    created: String,
    memory: PathBuf,
    head: String,
    files: usize,
    places: Vec<String>,
    running_sessions: usize,
    open_conflicts: usize,
}

fn shown(agent: &Agent) -> Result<Shown> {
    let st = memory::status::status(agent)?;
    Ok(Shown {
        name: agent.name().to_string(),
        profile: agent.record.profile.clone(),
        created: memory::provenance::rfc3339(agent.record.created),
        memory: agent.repo().dir,
        head: st.head,
        files: st.files,
        places: agent
            .places()?
            .iter()
            .map(|p| format!("~/{}{}", p.path.display(), if p.dir { "/" } else { "" }))
            .collect(),
        running_sessions: st.running_sessions,
        open_conflicts: st.conflicts.len(),
    })
}

pub fn run(verb: &AgentVerb) -> Result<i32> {
    let state = StateDirs::from_env()?;
    match verb {
        AgentVerb::New { name, profile } => {
            let agent = Agent::create(&state, name, profile.as_deref())?;
            eprintln!(
                "created the agent {name}; its memory is {} (run it with `agentenv --agent {name} PATH`)",
                agent.repo().dir.display()
            );
            Ok(0)
        }
        AgentVerb::List { json } => {
            let agents = memory::list(&state);
            if *json {
                let all = agents.iter().map(shown).collect::<Result<Vec<_>>>()?;
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            for a in &agents {
                let s = shown(a)?;
                println!(
                    "{}\t{}\t{} files\t{}",
                    s.name,
                    s.profile
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.files,
                    &s.head[..12.min(s.head.len())]
                );
            }
            Ok(0)
        }
        AgentVerb::Show { name, json } => {
            let s = shown(&Agent::open(&state, name)?)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(0);
            }
            println!("agent:     {}", s.name);
            println!(
                "profile:   {}",
                s.profile
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none".into())
            );
            println!("created:   {}", s.created);
            println!(
                "memory:    {} (git; at {}, {} files)",
                s.memory.display(),
                &s.head[..12.min(s.head.len())],
                s.files
            );
            println!("places:    {}", s.places.join(" "));
            println!("sessions:  {} running", s.running_sessions);
            println!("conflicts: {} open", s.open_conflicts);
            Ok(0)
        }
        AgentVerb::Rm { name } => {
            Agent::open(&state, name)?.remove()?;
            eprintln!("removed the agent {name} and its memory");
            Ok(0)
        }
    }
}
