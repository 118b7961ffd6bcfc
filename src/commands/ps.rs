//! `agentenv ps [--json]`: the running environments with their project, profile, uptime and
//! processes.

use anyhow::Result;
use serde::Serialize;

use crate::paths::StateDirs;
use crate::proto::client;
use crate::proto::message::{ProcInfo, Response};
use crate::runtime::Runtime;

#[derive(Serialize)]
struct Row {
    id: String,
    name: Option<String>,
    project: String,
    shell: String,
    profile: Option<String>,
    backend: String,
    uptime_secs: u64,
    processes: Vec<ProcInfo>,
}

pub fn run(json: bool) -> Result<i32> {
    let state = StateDirs::from_env()?;
    let rows: Vec<Row> = Runtime::new(state.runtime)
        .list()
        .into_iter()
        .map(|env| {
            let (uptime_secs, processes) = match client::ps(env.agent()) {
                Ok(Response::Processes {
                    uptime_secs,
                    processes,
                }) => (uptime_secs, processes),
                _ => (0, Vec::new()),
            };
            Row {
                id: env.state.id,
                name: env.state.name,
                project: env.state.project.display().to_string(),
                shell: env.state.shell,
                profile: env.state.profile.map(|p| p.display().to_string()),
                backend: env.state.backend,
                uptime_secs,
                processes,
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<28} {:<12} {:>8} {:>5}  {:<12} PROJECT",
        "ID", "NAME", "UPTIME", "PROCS", "PROFILE"
    );
    for r in rows {
        println!(
            "{:<28} {:<12} {:>8} {:>5}  {:<12} {}",
            r.id,
            r.name.unwrap_or_else(|| "-".into()),
            uptime(r.uptime_secs),
            r.processes.len(),
            r.profile.unwrap_or_else(|| "-".into()),
            r.project
        );
    }
    Ok(0)
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
