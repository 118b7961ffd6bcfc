use super::*;
use crate::attach::mountapi::RecordingMountApi;
use crate::guest::syscall::RecordingSyscall;

fn entry(name: &str, kind: EntryKind) -> RootEntry {
    RootEntry {
        name: name.into(),
        kind,
    }
}

fn busybox_root() -> RootListing {
    RootListing {
        mode: 0o755,
        entries: vec![
            entry("bin", EntryKind::Dir),
            entry("lib64", EntryKind::Link("usr/lib64".into())),
            entry("proc", EntryKind::Dir),
            entry(".dockerenv", EntryKind::Other),
            entry("nix", EntryKind::Other),
        ],
    }
}

fn tree(source: &str, at: &str) -> TreeGraft {
    TreeGraft {
        source: source.into(),
        at: at.into(),
        read_only: false,
    }
}

fn missing(below: &str, rest: &str, listing: Option<RootListing>) -> Spot {
    Spot::Missing {
        below: below.into(),
        rest: rest.into(),
        listing,
    }
}

fn record(plan: &GraftPlan) -> Vec<String> {
    let log = RecordingSyscall::default();
    let api = RecordingMountApi::new(&log);
    let toolbox = plan.copy_toolbox(Path::new("/nix/store"), &api).unwrap();
    let trees: Vec<String> = plan
        .trees
        .iter()
        .map(|t| api.clone_tree(&t.source).unwrap())
        .collect();
    apply_graft(plan, toolbox.as_ref(), &trees, &log, &api).unwrap();
    log.calls.into_inner()
}

const REMOUNT_RO: &str = "MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND) -";

#[test]
fn target_without_nix_gets_a_new_root_mirroring_its_own_with_only_the_store_at_nix() {
    let plan = plan_graft(&busybox_root(), &TargetNix::Absent, vec![]);
    assert!(plan.shows_toolbox());
    let calls = record(&plan);
    assert_eq!(
        calls,
        vec![
            "clone_tree /nix/store -> t1(/nix/store)",
            "seal t1(/nix/store)",
            "clone_tree /bin -> t2(/bin)",
            "clone_tree /proc -> t3(/proc)",
            "clone_tree /.dockerenv -> t4(/.dockerenv)",
            "new_tmpfs 755 -> t5(tmpfs)",
            "attach t5(tmpfs) at /",
            "mkdir t5(tmpfs)/bin 755",
            "attach t2(/bin) at t5(tmpfs)/bin",
            "mkdir t5(tmpfs)/proc 755",
            "attach t3(/proc) at t5(tmpfs)/proc",
            "file t5(tmpfs)/.dockerenv",
            "attach t4(/.dockerenv) at t5(tmpfs)/.dockerenv",
            "symlink t5(tmpfs)/lib64 -> usr/lib64",
            "mkdir t5(tmpfs)/nix 755",
            "mkdir t5(tmpfs)/nix/store 755",
            "attach t1(/nix/store) at t5(tmpfs)/nix/store",
            "enter t5(tmpfs)",
            "pivot_root .",
            &format!("mount - / - {REMOUNT_RO}"),
        ]
    );
}

#[test]
fn target_store_is_merged_with_the_toolbox_store_below_it() {
    let plan = plan_graft(&busybox_root(), &TargetNix::Store, vec![]);
    let calls = record(&plan);
    assert_eq!(
        calls,
        vec![
            "clone_tree /nix/store -> t1(/nix/store)",
            "seal t1(/nix/store)",
            "clone_tree /nix/store -> t2(/nix/store)",
            "new_tmpfs 755 -> t3(tmpfs)",
            "attach t3(tmpfs) at /nix/store",
            "mkdir t3(tmpfs)/target 755",
            "mkdir t3(tmpfs)/toolbox 755",
            "attach t2(/nix/store) at t3(tmpfs)/target",
            "attach t1(/nix/store) at t3(tmpfs)/toolbox",
            "mount overlay /nix/store overlay MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) lowerdir=/nix/store/target:/nix/store/toolbox",
        ]
    );
}

#[test]
fn nix_without_a_store_gets_only_the_toolbox_store() {
    let plan = plan_graft(&busybox_root(), &TargetNix::NoStore, vec![]);
    assert!(plan.shows_toolbox());
    let calls = record(&plan);
    assert_eq!(
        calls,
        vec![
            "clone_tree /nix/store -> t1(/nix/store)",
            "seal t1(/nix/store)",
            "clone_tree /nix -> t2(/nix)",
            "new_tmpfs 755 -> t3(tmpfs)",
            "attach t3(tmpfs) at /nix",
            "mkdir t3(tmpfs)/target 755",
            "mkdir t3(tmpfs)/toolbox 755",
            "attach t2(/nix) at t3(tmpfs)/target",
            "mkdir t3(tmpfs)/toolbox/store 755",
            "mount overlay /nix overlay MsFlags(MS_RDONLY | MS_NOSUID | MS_NODEV) lowerdir=/nix/toolbox:/nix/target",
            "attach t1(/nix/store) at /nix/store",
        ]
    );
}

#[test]
fn a_target_sharing_the_hosts_store_needs_no_mount() {
    let plan = plan_graft(&busybox_root(), &TargetNix::Shared, vec![]);
    assert_eq!(plan.toolbox, Toolbox::Shared);
    assert_eq!(plan.new_root, None);
    assert!(!plan.shows_toolbox());
    assert!(record(&plan).is_empty());
}

#[test]
fn trees_at_existing_directories_are_attached_after_the_toolbox() {
    let trees = vec![
        (tree("/state/home", "/root"), Spot::Ready),
        (tree("/p", "/root/p"), Spot::Ready),
    ];
    let plan = plan_graft(&busybox_root(), &TargetNix::Shared, trees);
    assert_eq!(
        record(&plan),
        vec![
            "clone_tree /state/home -> t1(/state/home)",
            "clone_tree /p -> t2(/p)",
            "attach t1(/state/home) at /root",
            "attach t2(/p) at /root/p",
        ]
    );
}

#[test]
fn a_missing_top_level_directory_is_made_in_the_new_root() {
    let trees = vec![(tree("/tmp/t/p", "/tmp/t/p"), missing("/", "tmp/t/p", None))];
    let plan = plan_graft(&busybox_root(), &TargetNix::Absent, trees);
    let root = plan.new_root.as_ref().unwrap();
    assert_eq!(
        root.dirs,
        vec![
            PathBuf::from("nix"),
            "nix/store".into(),
            "tmp".into(),
            "tmp/t".into(),
            "tmp/t/p".into()
        ]
    );
    let calls = record(&plan);
    let tail: Vec<&str> = calls[calls.len() - 10..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        vec![
            "mkdir t6(tmpfs)/nix 755",
            "mkdir t6(tmpfs)/nix/store 755",
            "mkdir t6(tmpfs)/tmp 755",
            "mkdir t6(tmpfs)/tmp/t 755",
            "mkdir t6(tmpfs)/tmp/t/p 755",
            "attach t1(/nix/store) at t6(tmpfs)/nix/store",
            "enter t6(tmpfs)",
            "pivot_root .",
            &format!("mount - / - {REMOUNT_RO}"),
            "attach t2(/tmp/t/p) at /tmp/t/p",
        ]
    );
}

#[test]
fn a_target_with_its_own_store_keeps_it_in_a_new_root() {
    let mut root = busybox_root();
    root.entries[4].kind = EntryKind::Dir;
    let trees = vec![(tree("/cfg", "/cfg"), missing("/", "cfg", None))];
    let plan = plan_graft(&root, &TargetNix::Store, trees);
    let new_root = plan.new_root.as_ref().unwrap();
    assert!(new_root.entries.iter().any(|e| e.name == "nix"));
    assert_eq!(new_root.dirs, vec![PathBuf::from("cfg")]);
    let calls = record(&plan);
    let pivot = calls.iter().position(|c| c == "pivot_root .").unwrap();
    let overlay = calls
        .iter()
        .position(|c| c.starts_with("mount overlay"))
        .unwrap();
    assert!(pivot < overlay, "{calls:#?}");
    assert_eq!(calls.last().unwrap(), "attach t2(/cfg) at /cfg");
}

#[test]
fn trees_missing_below_one_directory_share_a_read_only_mirror_of_it() {
    let home = RootListing {
        mode: 0o755,
        entries: vec![entry("bob", EntryKind::Dir), entry("app", EntryKind::Other)],
    };
    let trees = vec![
        (
            tree("/state/home", "/home/app"),
            missing("/home", "app", Some(home.clone())),
        ),
        (
            tree("/p", "/home/ana/p"),
            missing("/home", "ana/p", Some(home)),
        ),
    ];
    let plan = plan_graft(&busybox_root(), &TargetNix::Shared, trees);
    assert_eq!(plan.new_root, None);
    assert_eq!(plan.mirrors.len(), 1);
    assert_eq!(
        record(&plan),
        vec![
            "clone_tree /state/home -> t1(/state/home)",
            "clone_tree /p -> t2(/p)",
            "clone_tree /home/bob -> t3(/home/bob)",
            "new_tmpfs 755 -> t4(tmpfs)",
            "attach t4(tmpfs) at /home",
            "mkdir t4(tmpfs)/bob 755",
            "attach t3(/home/bob) at t4(tmpfs)/bob",
            "mkdir t4(tmpfs)/app 755",
            "mkdir t4(tmpfs)/ana 755",
            "mkdir t4(tmpfs)/ana/p 755",
            &format!("mount - /home - {REMOUNT_RO}"),
            "attach t1(/state/home) at /home/app",
            "attach t2(/p) at /home/ana/p",
        ]
    );
}
