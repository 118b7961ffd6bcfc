//! Unit tests of the activation plan: what it lists for a given profile and home, and what it
//! refuses.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    profile: PathBuf,
    state: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let home = root.join("home");
        let profile = root.join("profile");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(profile.join("home")).unwrap();
        Self {
            _tmp: tmp,
            home,
            state: root.join("state"),
            profile,
        }
    }

    fn file(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.profile.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn home_file(&self, rel: &str) -> PathBuf {
        let path = self.home.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "mine").unwrap();
        path
    }

    fn plan(&self) -> Result<ActivationPlan> {
        plan_activation(&self.profile, &self.home, &self.state)
    }

    fn error(&self) -> String {
        format!("{:#}", self.plan().unwrap_err())
    }
}

fn link_pairs(plan: &ActivationPlan, home: &Path) -> Vec<(String, PathBuf)> {
    plan.links
        .iter()
        .map(|l| {
            let rel = l.path.strip_prefix(home).unwrap();
            (rel.display().to_string(), l.target.clone())
        })
        .collect()
}

#[test]
fn every_file_of_home_and_every_skill_is_linked() {
    let f = Fixture::new();
    let rc = f.file("home/.bashrc", "x");
    let init = f.file("home/.config/nvim/init.lua", "x");
    f.file("skills/review/SKILL.md", "---\nname: review\n---\n");
    f.file("agentenv.toml", "[skills]\ntargets = [\".codex/skills\"]\n");
    let plan = f.plan().unwrap();
    let skill = f.profile.join("skills/review");
    assert_eq!(
        link_pairs(&plan, &f.home),
        [
            (".bashrc".to_string(), rc),
            (".claude/skills/review".into(), skill.clone()),
            (".codex/skills/review".into(), skill),
            (".config/nvim/init.lua".into(), init),
        ]
    );
    let dirs: Vec<_> = plan
        .dirs
        .iter()
        .map(|d| d.strip_prefix(&f.home).unwrap())
        .collect();
    assert_eq!(
        dirs,
        [
            Path::new(".claude"),
            Path::new(".claude/skills"),
            Path::new(".codex"),
            Path::new(".codex/skills"),
            Path::new(".config"),
            Path::new(".config/nvim"),
        ]
    );
    assert!(plan.conflicts.is_empty());
}

#[test]
fn existing_entries_in_the_way_are_conflicts() {
    let f = Fixture::new();
    for name in [".a", ".b", ".c", ".d"] {
        f.file(&format!("home/{name}"), "x");
    }
    f.home_file(".a");
    std::fs::create_dir(f.home.join(".b")).unwrap();
    symlink("/etc/hostname", f.home.join(".c")).unwrap();
    symlink("/nowhere", f.home.join(".d")).unwrap();
    let plan = f.plan().unwrap();
    let kinds: Vec<_> = plan.conflicts.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::File,
            EntryKind::Dir,
            EntryKind::Symlink,
            EntryKind::Symlink
        ]
    );
    assert!(plan.dirs.is_empty());
}

#[test]
fn a_file_where_a_directory_must_go_is_moved_aside() {
    let f = Fixture::new();
    f.file("home/.config/a/b", "x");
    f.home_file(".config");
    let plan = f.plan().unwrap();
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].path, f.home.join(".config"));
    assert_eq!(
        plan.dirs,
        [f.home.join(".config"), f.home.join(".config/a")]
    );
}

#[test]
fn existing_directories_are_used_and_followed_symlinks_stay_in_home() {
    let f = Fixture::new();
    f.file("home/.config/x", "x");
    f.file("home/.local/y", "y");
    f.home_file("real/keep");
    std::fs::create_dir(f.home.join(".config")).unwrap();
    symlink(f.home.join("real"), f.home.join(".local")).unwrap();
    let plan = f.plan().unwrap();
    assert!(plan.dirs.is_empty() && plan.conflicts.is_empty());
    assert_eq!(plan.links.len(), 2);
}

#[test]
fn manifest_links_env_and_bin_are_planned() {
    let f = Fixture::new();
    let src = f.file("editor/init.lua", "x");
    f.file("bin/hello", "#!/bin/sh\n");
    f.file(
        "agentenv.toml",
        "tools = \"tools\"\n[links]\n\"editor/init.lua\" = \".config/nvim/init.lua\"\n\
         [env]\nEDITOR = \"nvim\"\n[shell]\ninit = [\"alias g=git\"]\n",
    );
    let plan = f.plan().unwrap();
    assert_eq!(
        link_pairs(&plan, &f.home),
        [(".config/nvim/init.lua".into(), src)]
    );
    assert_eq!(plan.env.path_prepend, [f.profile.join("bin")]);
    assert_eq!(
        plan.env.vars,
        [
            (
                "AGENTENV_PROFILE".to_string(),
                f.profile.display().to_string()
            ),
            ("EDITOR".into(), "nvim".into())
        ]
    );
    assert_eq!(plan.env.shell_init, ["alias g=git"]);
    assert_eq!(
        plan.env.tools,
        Some(format!("{}#tools", f.profile.display()))
    );
}

#[test]
fn a_skill_without_skill_md_is_skipped_with_a_warning() {
    let f = Fixture::new();
    f.file("skills/half/notes.md", "x");
    let plan = f.plan().unwrap();
    assert!(plan.links.is_empty());
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
}

#[test]
fn a_missing_profile_is_refused() {
    let f = Fixture::new();
    let err = plan_activation(&f.profile.join("nope"), &f.home, &f.state).unwrap_err();
    assert!(
        err.to_string().starts_with("no profile directory at"),
        "{err}"
    );
}

#[test]
fn links_leaving_home_are_refused() {
    let f = Fixture::new();
    f.file("a", "x");
    for dest in ["../escape", "/etc/passwd", "x/../../y", "."] {
        f.file("agentenv.toml", &format!("[links]\n\"a\" = \"{dest}\"\n"));
        assert!(
            f.error().contains("would leave the home directory"),
            "{dest}: {}",
            f.error()
        );
    }
    f.file("agentenv.toml", "[skills]\ntargets = [\"/abs\"]\n");
    f.file("skills/s/SKILL.md", "x");
    assert!(
        f.error().contains("would leave the home directory"),
        "{}",
        f.error()
    );
}

#[test]
fn manifest_sources_outside_the_profile_are_refused() {
    let f = Fixture::new();
    f.file("agentenv.toml", "[links]\n\"../x\" = \".x\"\n");
    assert!(
        f.error().contains("would leave the profile"),
        "{}",
        f.error()
    );
    f.file("agentenv.toml", "[links]\n\"missing\" = \".x\"\n");
    assert!(
        f.error().contains("which is not in the profile"),
        "{}",
        f.error()
    );
}

#[test]
fn a_symlink_cycle_in_the_profile_is_refused() {
    let f = Fixture::new();
    symlink("loop", f.profile.join("home/loop")).unwrap();
    assert!(f.error().contains("is a symlink cycle"), "{}", f.error());
}

#[test]
fn a_profile_path_resolving_into_home_is_refused() {
    let f = Fixture::new();
    f.home_file(".bashrc");
    symlink(f.home.join(".bashrc"), f.profile.join("home/.bashrc")).unwrap();
    assert!(
        f.error().contains("inside the home directory"),
        "{}",
        f.error()
    );
}

#[test]
fn a_link_into_the_profile_itself_is_refused() {
    let f = Fixture::new();
    // The profile lives in the home, as ~/config usually does.
    let profile = f.home.join("config");
    std::fs::create_dir_all(profile.join("home")).unwrap();
    std::fs::write(profile.join("a"), "x").unwrap();
    std::fs::write(
        profile.join("agentenv.toml"),
        "[links]\n\"a\" = \"config/a\"\n",
    )
    .unwrap();
    let err = plan_activation(&profile, &f.home, &f.state).unwrap_err();
    assert!(err.to_string().contains("a cycle"), "{err}");
    std::fs::write(
        profile.join("agentenv.toml"),
        "[links]\n\"a\" = \"config\"\n",
    )
    .unwrap();
    let err = plan_activation(&profile, &f.home, &f.state).unwrap_err();
    assert!(err.to_string().contains("replace the profile"), "{err}");
}

#[test]
fn the_home_inside_the_profile_is_refused() {
    let f = Fixture::new();
    let err = plan_activation(f.home.parent().unwrap(), &f.home, &f.state).unwrap_err();
    assert!(
        err.to_string().contains("holds the home directory"),
        "{err}"
    );
}

#[test]
fn home_symlinks_leading_out_of_home_or_into_the_profile_are_refused() {
    let f = Fixture::new();
    f.file("home/.cache/x", "x");
    symlink("/tmp", f.home.join(".cache")).unwrap();
    assert!(f.error().contains("would leave $HOME"), "{}", f.error());
    std::fs::remove_file(f.home.join(".cache")).unwrap();
    symlink(f.profile.join("home/.cache"), f.home.join(".cache")).unwrap();
    assert!(
        f.error().contains("symlink into the profile"),
        "{}",
        f.error()
    );
}

#[test]
fn two_links_at_one_place_are_refused() {
    let f = Fixture::new();
    f.file("home/.gitconfig", "x");
    f.file("git/config", "y");
    f.file(
        "agentenv.toml",
        "[links]\n\"git/config\" = \".gitconfig\"\n",
    );
    assert!(
        f.error().contains("two links are at ~/.gitconfig"),
        "{}",
        f.error()
    );
}

#[test]
fn links_into_agentenv_state_are_refused() {
    let f = Fixture::new();
    f.file("home/x", "x");
    let err = plan_activation(&f.profile, &f.home, &f.home.join("x")).unwrap_err();
    assert!(err.to_string().contains("agentenv's own state"), "{err}");
}

#[test]
fn a_dangling_profile_symlink_into_home_is_refused() {
    let f = Fixture::new();
    let link = f.profile.join("home/.notyet");
    let chain = f.profile.join("home/.chain");
    for target in [
        f.home.join(".notyet"),
        // Relative to the link's directory, through `..`.
        PathBuf::from("../../home/.notyet"),
        f.home.join("a/../.notyet"),
    ] {
        symlink(&target, &link).unwrap();
        let err = f.error();
        assert!(
            err.contains("inside the home directory"),
            "{target:?}: {err}"
        );
        std::fs::remove_file(&link).unwrap();
    }
    // Through another dangling link outside both.
    let hop = f.home.parent().unwrap().join("hop");
    symlink(f.home.join(".later"), &hop).unwrap();
    symlink(&hop, &chain).unwrap();
    assert!(
        f.error().contains("inside the home directory"),
        "{}",
        f.error()
    );
    std::fs::remove_file(&chain).unwrap();
    // Dangling elsewhere, or into the profile itself, links as it is.
    symlink("/nowhere/at/all", &link).unwrap();
    symlink(f.profile.join("not-yet"), &chain).unwrap();
    assert_eq!(f.plan().unwrap().links.len(), 2);
}

#[test]
fn the_state_directory_in_the_home_is_not_the_plans_to_create() {
    let f = Fixture::new();
    f.file("home/.local/bin/tool", "x");
    let state = f.home.join(".local/state/agentenv/profile");
    let plan = plan_activation(&f.profile, &f.home, &state).unwrap();
    assert_eq!(plan.dirs, [f.home.join(".local/bin")]);
    assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
}

#[test]
fn links_into_agentenvs_state_area_are_refused() {
    let f = Fixture::new();
    f.file("x", "x");
    f.file(
        "agentenv.toml",
        "[links]\n\"x\" = \".local/state/agentenv/foo\"\n",
    );
    let state = f.home.join(".local/state/agentenv/profile");
    let err = plan_activation(&f.profile, &f.home, &state).unwrap_err();
    assert!(err.to_string().contains("agentenv's own state"), "{err}");
    // Beside it, in the state home of other programs, is fine.
    f.file(
        "agentenv.toml",
        "[links]\n\"x\" = \".local/state/other/foo\"\n",
    );
    assert!(plan_activation(&f.profile, &f.home, &state).is_ok());
}

#[test]
fn a_home_manager_package_links_its_home_files() {
    let f = Fixture::new();
    f.file("activate", "#!/bin/sh\n");
    f.file("home-files/.hmrc", "x");
    f.file("home-path/bin/tool", "x");
    let plan = f.plan().unwrap();
    assert_eq!(plan.layout, Layout::HomeManager);
    assert_eq!(link_pairs(&plan, &f.home)[0].0, ".hmrc");
    assert_eq!(plan.env.path_prepend, [f.profile.join("home-path/bin")]);
    assert_eq!(plan.hook, None);
}

#[test]
fn in_a_home_whose_symlinks_are_refused_a_symlinked_directory_is_moved_aside() {
    let f = Fixture::new();
    f.file("home/.config/app/conf", "x");
    f.file("home/.local/y", "y");
    f.home_file("real/keep");
    let outside = f.home.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    symlink(&outside, f.home.join(".config")).unwrap();
    symlink(f.home.join("real"), f.home.join(".local")).unwrap();
    let profile = Profile::load(&f.profile).unwrap();
    let wanted = wanted_links(&profile, &f.home, &f.state).unwrap();
    let plan = plan_links(&profile, &wanted, &f.home, &f.state, HomeLinks::Refused).unwrap();
    let moved: Vec<_> = plan.conflicts.iter().map(|c| (&c.path, c.kind)).collect();
    assert_eq!(
        moved,
        [
            (&f.home.join(".config"), EntryKind::Symlink),
            (&f.home.join(".local"), EntryKind::Symlink)
        ]
    );
    assert_eq!(
        plan.dirs,
        [
            f.home.join(".config"),
            f.home.join(".config/app"),
            f.home.join(".local")
        ]
    );
    // In the user's own home, the one into the home is gone through, the other refused.
    let err = plan_links(&profile, &wanted, &f.home, &f.state, HomeLinks::InHome).unwrap_err();
    assert!(
        format!("{err:#}").contains("outside the home directory"),
        "{err:#}"
    );
}
