//! How long landing a session takes when it ends, with 1, 100 and 1,000 changed files in a
//! memory of 10,000 files: scanning the session's places, committing through git fast-import,
//! and moving the branch (a fast-forward). Run with `cargo bench --bench memory_commit`.

use std::path::Path;
use std::time::{Duration, Instant};

use agentenv::memory::repo::Change;
use agentenv::memory::session::{land_changes, Origin, Session};
use agentenv::memory::tree::ProfileLinks;
use agentenv::memory::Agent;
use agentenv::paths::StateDirs;

const RUNS: usize = 10;
const FILES: usize = 10_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn origin() -> Origin {
    Origin {
        project: Some("/src/app".into()),
        backend: "bench".into(),
        command: "bench".into(),
    }
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDirs::under(tmp.path());
    let agent = Agent::create(&state, "bench", None).unwrap();
    // 10,000 notes in 100 directories.
    let seed: Vec<Change> = (0..FILES)
        .map(|i| Change::Write {
            path: format!(".agent-memory/d{}/note-{i}.md", i % 100).into_bytes(),
            mode: 0o100644,
            data: format!("note {i}\nsome words about it\n").into_bytes(),
        })
        .collect();
    {
        let _lock = agent.lock().unwrap();
        let head = agent.repo().head().unwrap();
        let prov = agentenv::memory::provenance::Provenance {
            agent: "bench".into(),
            host: "h".into(),
            project: None,
            backend: "bench".into(),
            command: "seed".into(),
            started: 0,
            session: "seed".into(),
        };
        land_changes(&agent, &head, &seed, &prov, 0).unwrap();
    }
    for changed in [1usize, 100, 1_000] {
        let mut times = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let session = Session::begin(&agent, origin(), None, ProfileLinks::new()).unwrap();
            let tree = session.dir.join("tree");
            for i in 0..changed {
                let p = tree.join(format!(".agent-memory/d{}/note-{i}.md", i % 100));
                write(&p, &format!("note {i}, changed in run {run}\n"));
            }
            let start = Instant::now();
            session.end(&agent).unwrap();
            times.push(start.elapsed());
        }
        println!(
            "landing {changed:>5} changed of {FILES} files: {:>7.2} ms (median of {RUNS})",
            median(times).as_secs_f64() * 1000.0
        );
    }
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
}
