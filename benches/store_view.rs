//! How long creating a store view takes, for a host store of 100 and of 10,000 paths: the view
//! is one overlay mount, so the time should not grow with the store. Run with
//! `cargo bench --bench store_view` (as root, or where user namespaces are allowed). Linux
//! only: elsewhere it is an empty program.
#![cfg_attr(not(target_os = "linux"), no_main)]
#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::{Duration, Instant};

use agentenv::compute::linux::userns::{write_id_maps, IdMode};
use agentenv::guest::rootfs::{apply, make_mounts_private};
use agentenv::guest::syscall::{LinuxSyscall, Syscall};
use agentenv::store::StoreView;
use nix::sched::{unshare, CloneFlags};

const RUNS: usize = 200;

fn fake_store(root: &Path, paths: usize) {
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    for i in 0..paths {
        let p = store.join(format!("{:032x}-pkg-{i}", i * 7919));
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("file"), "x").unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mode = IdMode::detect();
    let mut flags = CloneFlags::CLONE_NEWNS;
    if mode.userns() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).expect("unshare (run as root or allow user namespaces)");
    if let IdMode::UserNamespace { uid, gid } = mode {
        write_id_maps(uid, gid).unwrap();
    }
    let sys = LinuxSyscall;
    make_mounts_private(&sys).unwrap();

    let mut medians = Vec::new();
    for paths in [100usize, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("host-nix");
        fake_store(&lower, paths);
        let staging = tmp.path().join("root");
        let mut times = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let view = StoreView::new(&lower, &tmp.path().join(format!("layer-{run}")));
            for d in [&view.upper, &view.work] {
                std::fs::create_dir_all(d).unwrap();
            }
            let op = view.root_op(mode.userns());
            let start = Instant::now();
            apply(&op, &staging, &sys).unwrap();
            times.push(start.elapsed());
            sys.umount_detach(&staging.join("nix")).unwrap();
        }
        let m = median(times);
        println!(
            "store view over {paths:>6} paths: median {:>7.1} µs ({RUNS} runs)",
            m.as_secs_f64() * 1e6
        );
        medians.push(m);
    }
    println!(
        "ratio 10,000 / 100 paths: {:.2}",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}
