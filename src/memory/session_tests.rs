//! Sessions against a real git repository, without a sandbox: what a session's tree holds at
//! its end is what lands.

use super::*;
use crate::memory::repo::shown;
use crate::memory::status::status;
use crate::paths::StateDirs;

fn origin() -> Origin {
    Origin {
        project: Some("/src/app".into()),
        backend: "test".into(),
        command: "make".into(),
    }
}

fn agent(dir: &Path) -> Agent {
    Agent::create(&StateDirs::under(dir), "ana", None).unwrap()
}

fn write(s: &Session, rel: &str, data: &str) {
    let p = s.dir.join("tree").join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn show(agent: &Agent, path: &str) -> String {
    let out = agent
        .repo()
        .run(&["show", &format!("main:{path}")])
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn files(agent: &Agent) -> Vec<String> {
    let head = agent.repo().head().unwrap();
    agent
        .repo()
        .ls_tree(&head)
        .unwrap()
        .iter()
        .map(|e| shown(&e.path))
        .collect()
}

#[test]
fn a_session_lands_as_one_commit_with_its_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(tmp.path());
    let s = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s, ".claude/CLAUDE.md", "use tabs\n");
    write(
        &s,
        ".claude/skills/deploy/SKILL.md",
        "---\nname: deploy\n---\n",
    );
    let landed = s.end(&a).unwrap().unwrap();
    assert!(landed.fast_forward);
    let msg = a.repo().run(&["log", "-1", "--format=%B", "main"]).unwrap();
    let t = crate::memory::provenance::trailers(&String::from_utf8_lossy(&msg));
    let get = |k: &str| t.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    assert_eq!(get("Agent").as_deref(), Some("ana"));
    assert_eq!(get("Project").as_deref(), Some("/src/app"));
    assert_eq!(get("Command").as_deref(), Some("make"));
    assert_eq!(show(&a, ".claude/CLAUDE.md"), "use tabs\n");
    let count = a.repo().run(&["rev-list", "--count", "main"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&count).trim(), "2");
    assert!(!s_dir_exists(&a));
}

fn s_dir_exists(a: &Agent) -> bool {
    std::fs::read_dir(a.sessions_dir())
        .unwrap()
        .next()
        .is_some()
}

#[test]
fn overlapping_sessions_on_different_lines_merge_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(tmp.path());
    let s0 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(
        &s0,
        ".agent-memory/notes.md",
        "one\ntwo\nthree\nfour\nfive\n",
    );
    s0.end(&a).unwrap();
    let s1 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    let s2 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(
        &s1,
        ".agent-memory/notes.md",
        "ONE\ntwo\nthree\nfour\nfive\n",
    );
    write(
        &s2,
        ".agent-memory/notes.md",
        "one\ntwo\nthree\nfour\nFIVE\n",
    );
    assert!(s1.end(&a).unwrap().unwrap().fast_forward);
    let second = s2.end(&a).unwrap().unwrap();
    assert!(!second.fast_forward);
    assert!(second.conflicts.is_empty());
    assert_eq!(
        show(&a, ".agent-memory/notes.md"),
        "ONE\ntwo\nthree\nfour\nFIVE\n"
    );
}

#[test]
fn the_same_line_keeps_both_sides_and_no_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(tmp.path());
    let s1 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    let s2 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s1, ".claude/CLAUDE.md", "indent with tabs\n");
    write(&s2, ".claude/CLAUDE.md", "indent with spaces\n");
    s1.end(&a).unwrap();
    let landed = s2.end(&a).unwrap().unwrap();
    assert_eq!(landed.conflicts.len(), 1);
    assert_eq!(show(&a, ".claude/CLAUDE.md"), "indent with tabs\n");
    let beside = landed.conflicts[0].beside.clone().unwrap();
    assert_eq!(show(&a, &beside), "indent with spaces\n");
    for f in files(&a) {
        assert!(
            !show(&a, &f).contains("<<<<<<<"),
            "{f} has conflict markers"
        );
    }
    let st = status(&a).unwrap();
    assert_eq!(st.conflicts.len(), 1);
    crate::memory::history::resolve(&a, ".claude/CLAUDE.md", crate::memory::history::Take::Other)
        .unwrap();
    assert_eq!(show(&a, ".claude/CLAUDE.md"), "indent with spaces\n");
    assert!(status(&a).unwrap().conflicts.is_empty());
}

#[test]
fn revert_undoes_a_session_and_keeps_later_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(tmp.path());
    let s1 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s1, ".agent-memory/a.md", "a\n");
    let first = s1.end(&a).unwrap().unwrap();
    let s2 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s2, ".agent-memory/b.md", "b\n");
    s2.end(&a).unwrap();
    crate::memory::history::revert(&a, &first.commit).unwrap();
    assert_eq!(files(&a), [".agent-memory/b.md"]);
}

#[test]
fn a_killed_session_is_landed_by_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDirs::under(tmp.path());
    let a = agent(tmp.path());
    let s = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s, ".agent-memory/learned.md", "x\n");
    // The process holding it is gone: its lock is free, its directory stays. (A git that
    // another test forks holds a copy of the lock until it execs: try again then.)
    drop(s);
    let mut a = Agent::open(&state, "ana").unwrap();
    for _ in 0..100 {
        if s_dir_exists(&a) {
            std::thread::sleep(std::time::Duration::from_millis(10));
            a = Agent::open(&state, "ana").unwrap();
        }
    }
    assert_eq!(show(&a, ".agent-memory/learned.md"), "x\n");
    assert!(!s_dir_exists(&a));
}

#[test]
fn profile_links_in_a_place_are_shown_but_not_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(tmp.path());
    let links: ProfileLinks = [(
        b".claude/skills/review".to_vec(),
        b"/profile/skills/review".to_vec(),
    )]
    .into_iter()
    .collect();
    let s = Session::begin(&a, origin(), None, links).unwrap();
    let link = s.dir.join("tree/.claude/skills/review");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/profile/skills/review")
    );
    write(&s, ".claude/skills/mine/SKILL.md", "m\n");
    s.end(&a).unwrap();
    assert_eq!(files(&a), [".claude/skills/mine/SKILL.md"]);
}

#[test]
fn a_finished_sessions_tree_is_reused_and_brought_to_the_live_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let a = agent(tmp.path());
    let s1 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s1, ".agent-memory/a.md", "a\n");
    s1.end(&a).unwrap();
    let s2 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    assert_eq!(
        std::fs::read_to_string(s2.dir.join("tree/.agent-memory/a.md")).unwrap(),
        "a\n"
    );
    let s3 = Session::begin(&a, origin(), None, ProfileLinks::new()).unwrap();
    write(&s2, ".agent-memory/b.md", "b\n");
    write(&s3, ".agent-memory/c.md", "c\n");
    std::fs::remove_file(s3.dir.join("tree/.agent-memory/a.md")).unwrap();
    s3.end(&a).unwrap();
    s2.end(&a).unwrap();
    let links: ProfileLinks = [(b".claude/skills/p".to_vec(), b"/profile/skills/p".to_vec())]
        .into_iter()
        .collect();
    let s4 = Session::begin(&a, origin(), None, links).unwrap();
    let tree = s4.dir.join("tree/.agent-memory");
    let mut names: Vec<String> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["b.md", "c.md"]);
    assert!(s4.dir.join("tree/.claude/skills/p").is_symlink());
    write(&s4, ".agent-memory/d.md", "d\n");
    s4.end(&a).unwrap();
    assert_eq!(
        files(&a),
        [
            ".agent-memory/b.md",
            ".agent-memory/c.md",
            ".agent-memory/d.md"
        ]
    );
}
