//! `agentenv gc [--dry-run] [--older-than DURATION] [--all] [--json]`: removes what agentenv
//! keeps that nothing uses any more (see `keep::policy`), with the GC roots it made, and says
//! how much it freed. What a running environment uses is never taken.

use anyhow::Result;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::cli::GcArgs;
use crate::keep::policy::Policy;
use crate::keep::reclaim::{remove, sweep_leftovers, AutoRoots, Outcome};
use crate::keep::{inventory, now_secs, Kept};
use crate::paths::StateDirs;

#[derive(Serialize)]
struct Report<'a> {
    dry_run: bool,
    removed: Vec<&'a Kept>,
    /// In use by a start or an evaluation at that moment: left for next time.
    busy: Vec<&'a Kept>,
    bytes_freed: u64,
}

pub fn run(args: &GcArgs) -> Result<i32> {
    let state = StateDirs::from_env()?;
    let policy = Policy {
        older_than: args.older_than.map(Into::into),
        all: args.all,
    };
    let mut freed = if args.dry_run {
        0
    } else {
        sweep_leftovers(&state)
    };
    let kept = inventory(&state);
    let now = now_secs();
    let mut roots = AutoRoots::read();
    let (mut removed, mut busy) = (Vec::new(), Vec::new());
    let mut failure = None;
    for k in kept.iter().filter(|k| policy.takes(k, now)) {
        if args.dry_run {
            removed.push(k);
            freed += k.bytes;
            continue;
        }
        match remove(k, &state, &mut roots) {
            Ok(Outcome::Removed) => {
                freed += k.bytes;
                removed.push(k);
            }
            Ok(Outcome::Busy) => busy.push(k),
            Err(e) => {
                tracing::warn!("{e:#}");
                failure.get_or_insert(e);
            }
        }
    }
    if args.json {
        let report = Report {
            dry_run: args.dry_run,
            removed,
            busy,
            bytes_freed: freed,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for k in &removed {
            println!(
                "{verb} {} {} ({})",
                k.kind.label(),
                k.path.display(),
                HumanBytes(k.bytes)
            );
        }
        for k in &busy {
            println!(
                "kept {} {} (in use right now)",
                k.kind.label(),
                k.path.display()
            );
        }
        let what = if args.dry_run { "would free" } else { "freed" };
        println!("{} items, {what} {}", removed.len(), HumanBytes(freed));
        if !args.dry_run
            && removed
                .iter()
                .any(|k| k.kind != crate::keep::Kind::AttachHome)
        {
            eprintln!("  hint: the store paths they kept are freed by `nix-collect-garbage`");
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
