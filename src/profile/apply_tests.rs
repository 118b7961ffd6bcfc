//! Unit tests of apply and undo against a home changed between them.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;
use crate::profile::{activate_with, deactivate_from, HookRun};

struct Setup {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    profile: PathBuf,
    state: PathBuf,
    outside: PathBuf,
}

/// A profile linking `.config/app/conf` into a home that has its own `.config/app/conf`.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let s = Setup {
        home: root.join("home"),
        profile: root.join("profile"),
        state: root.join("state"),
        outside: root.join("outside"),
        _tmp: tmp,
    };
    std::fs::create_dir_all(s.profile.join("home/.config/app")).unwrap();
    std::fs::write(s.profile.join("home/.config/app/conf"), "profile's").unwrap();
    std::fs::create_dir_all(s.home.join(".config/app")).unwrap();
    std::fs::write(s.home.join(".config/app/conf"), "home's").unwrap();
    std::fs::create_dir(&s.outside).unwrap();
    s
}

#[test]
fn undo_through_a_directory_swapped_for_a_symlink_writes_nothing_outside() {
    let s = setup();
    activate_with(&s.profile, &s.home, &s.state, HookRun::ByCaller).unwrap();
    // What runs with the home replaces a directory by a symlink to a directory outside.
    std::fs::rename(s.home.join(".config/app"), s.home.join("app.was")).unwrap();
    symlink(&s.outside, s.home.join(".config/app")).unwrap();

    let report = deactivate_from(&s.state).unwrap().unwrap();
    assert_eq!(std::fs::read_dir(&s.outside).unwrap().count(), 0);
    let place = s.home.join(".config/app/conf");
    assert_eq!(report.unreachable.len(), 2, "{report:?}");
    assert!(report.unreachable.iter().all(|(p, _)| *p == place));
    // The original is kept where the report says, to be put back by hand.
    let backup = report
        .unreachable
        .iter()
        .find_map(|(_, b)| b.clone())
        .unwrap();
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), "home's");
    let warnings = report.warnings().join("\n");
    assert!(
        warnings.contains(&backup.display().to_string()),
        "{warnings}"
    );

    // The next activation moves the planted symlink aside instead of going through it, and
    // its undo puts it back.
    activate_with(&s.profile, &s.home, &s.state, HookRun::ByCaller).unwrap();
    assert!(s
        .home
        .join(".config/app")
        .symlink_metadata()
        .unwrap()
        .is_dir());
    assert_eq!(std::fs::read_dir(&s.outside).unwrap().count(), 0);
    deactivate_from(&s.state).unwrap();
    assert_eq!(
        std::fs::read_link(s.home.join(".config/app")).unwrap(),
        s.outside
    );
    assert_eq!(std::fs::read_dir(&s.outside).unwrap().count(), 0);
}

#[test]
fn a_directory_swapped_before_apply_stops_the_activation_there() {
    let s = setup();
    let profile = crate::profile::Profile::load(&s.profile).unwrap();
    let wanted = crate::profile::links::wanted_links(&profile, &s.home, &s.state).unwrap();
    let plan = crate::profile::plan::plan_links(
        &profile,
        &wanted,
        &s.home,
        &s.state,
        crate::profile::HomeLinks::Refused,
    )
    .unwrap();
    // Swapped between the plan and its apply.
    std::fs::rename(s.home.join(".config/app"), s.home.join("app.was")).unwrap();
    symlink(&s.outside, s.home.join(".config/app")).unwrap();
    let files = StateFiles::new(&s.state);
    let _lock = files.lock().unwrap();
    let err = apply_plan(&plan, &files).unwrap_err();
    assert!(format!("{err:#}").contains("cannot reach"), "{err:#}");
    assert_eq!(std::fs::read_dir(&s.outside).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(s.home.join("app.was/conf")).unwrap(),
        "home's"
    );
}

#[test]
fn the_undo_of_a_home_that_is_gone_clears_the_journal() {
    let s = setup();
    activate_with(&s.profile, &s.home, &s.state, HookRun::ByCaller).unwrap();
    std::fs::rename(&s.home, s.home.with_file_name("home.was")).unwrap();
    let report = deactivate_from(&s.state).unwrap().unwrap();
    let (place, backup) = &report.unreachable[0];
    assert_eq!(*place, s.home.join(".config/app/conf"));
    assert_eq!(
        std::fs::read_to_string(backup.as_ref().unwrap()).unwrap(),
        "home's"
    );
    assert!(deactivate_from(&s.state).unwrap().is_none());
}
