//! `agentenv ls [--json]`: everything agentenv keeps (environments, evaluated dev shells,
//! profile tool builds, attach homes), per project, with size, last use and who uses it.

use anyhow::Result;
use indicatif::HumanBytes;

use crate::keep::policy::Policy;
use crate::keep::{inventory, now_secs, Kept};
use crate::paths::StateDirs;

pub fn run(json: bool) -> Result<i32> {
    let state = StateDirs::from_env()?;
    let kept = inventory(&state);
    if json {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            kept: &'a Kept,
            /// Whether a plain `agentenv gc` would remove it.
            reclaimable: bool,
        }
        let now = now_secs();
        let rows: Vec<Row> = kept
            .iter()
            .map(|k| Row {
                kept: k,
                reclaimable: Policy::default().takes(k, now),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    print_table(&kept);
    Ok(0)
}

fn print_table(kept: &[Kept]) {
    let now = now_secs();
    println!(
        "{:<14} {:<13} {:>10}  {:<10} {:<24} PROJECT",
        "WHAT", "STATUS", "SIZE", "LAST USED", "ID"
    );
    let (mut total, mut reclaimable) = (0, 0);
    for k in kept {
        total += k.bytes;
        if Policy::default().takes(k, now) {
            reclaimable += k.bytes;
        }
        let project = match (&k.project, k.shell.as_deref()) {
            (Some(p), Some(s)) if s != "default" => format!("{}#{s}", p.display()),
            (Some(p), _) => p.display().to_string(),
            (None, _) => k.path.display().to_string(),
        };
        println!(
            "{:<14} {:<13} {:>10}  {:<10} {:<24} {project}",
            k.kind.label(),
            k.status.label(),
            HumanBytes(k.bytes).to_string(),
            ago(now, k.last_used),
            k.id.as_deref().unwrap_or("-"),
        );
    }
    println!(
        "total {}; `agentenv gc` frees {}",
        HumanBytes(total),
        HumanBytes(reclaimable)
    );
}

/// `3d ago`, `now`, or `-` when unknown.
pub fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "-".into();
    }
    match now.saturating_sub(then) {
        s if s < 60 => "now".into(),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}
