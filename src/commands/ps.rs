//! `agentenv ps [--json]`: the running environments with their project, profile, uptime and
//! processes, then the dispatched sessions this machine knows of (on Linux).

use anyhow::Result;
use serde::Serialize;

use crate::dispatch::record::place;
use crate::paths::StateDirs;
use crate::proto::client;
use crate::proto::message::{ProcInfo, Response};
use crate::runtime::Runtime;

#[derive(Serialize)]
struct Row {
    id: String,
    name: Option<String>,
    /// None for a dispatched session: it runs on a host, not in a project here.
    project: Option<String>,
    shell: String,
    profile: Option<String>,
    backend: String,
    uptime_secs: u64,
    processes: Vec<ProcInfo>,
    /// A dispatched session's host, command and standing.
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatch: Option<Dispatched>,
}

#[derive(Serialize)]
struct Dispatched {
    target: String,
    /// The container on the host it works in (`--container`).
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<String>,
    command: String,
    standing: crate::dispatch::record::Standing,
}

/// The dispatched sessions, as rows: the agent as the name.
fn dispatched(state: &StateDirs) -> Vec<Row> {
    let now = crate::memory::provenance::now();
    crate::dispatch::record::DispatchRecord::list(state)
        .into_iter()
        .map(|r| Row {
            id: r.id.clone(),
            name: r.agent.clone(),
            project: None,
            shell: String::new(),
            profile: None,
            backend: "dispatch".into(),
            uptime_secs: now.saturating_sub(r.started),
            processes: Vec::new(),
            dispatch: Some(Dispatched {
                standing: r.standing(state),
                target: r.target,
                container: r.container,
                command: r.command,
            }),
        })
        .collect()
}

pub fn run(json: bool) -> Result<i32> {
    let state = StateDirs::from_env()?;
    let mut rows: Vec<Row> = Runtime::new(state.runtime.clone())
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
                project: Some(env.state.project.display().to_string()),
                shell: env.state.shell,
                profile: env.state.profile.map(|p| p.display().to_string()),
                backend: env.state.backend,
                uptime_secs,
                processes,
                dispatch: None,
            }
        })
        .collect();
    let away = dispatched(&state);
    if json {
        rows.extend(away);
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
            r.project.unwrap_or_default()
        );
    }
    if !away.is_empty() {
        println!();
        println!(
            "{:<28} {:<12} {:>8} {:<10}  {:<20} COMMAND",
            "DISPATCHED", "AGENT", "AGE", "STANDING", "TARGET"
        );
        for r in away {
            let Some(d) = r.dispatch else { continue };
            println!(
                "{:<28} {:<12} {:>8} {:<10}  {:<20} {}",
                r.id,
                r.name.unwrap_or_else(|| "-".into()),
                uptime(r.uptime_secs),
                d.standing.describe(),
                place(&d.target, d.container.as_deref()),
                d.command
            );
        }
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
