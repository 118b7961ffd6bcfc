//! A directory of a profile's home swapped for a symlink between activation and undo, by what
//! runs with that home: the undo on the host (the next start, the next attach) creates nothing
//! where the symlink leads, says what it could not put back, and the home can be used again.

use std::path::{Path, PathBuf};

use crate::containers::{Image, Runtime};
use crate::support::{run, stderr, stdout, Fixture};
use crate::{fixture, runtime};

/// A profile linking `.config/app/conf` (and nothing else of the example's: its tools need
/// nixpkgs), and an empty host directory the environment cannot see.
fn profile_and_outside(f: &Fixture) -> (PathBuf, PathBuf) {
    let p = f.profile_copy();
    let manifest = p.join("agentenv.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("tools =")).collect();
    std::fs::write(&manifest, kept.join("\n")).unwrap();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    (p, std::fs::canonicalize(outside).unwrap())
}

fn add_app_conf(p: &Path) {
    std::fs::create_dir_all(p.join("home/.config/app")).unwrap();
    std::fs::write(p.join("home/.config/app/conf"), "profile's\n").unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The environment's own file, then the profile's link over it, then the swap inside.
const PLANT: &str = "mkdir -p ~/.config/app && echo planted > ~/.config/app/conf";
fn swap(outside: &Path) -> String {
    format!(
        "mv ~/.config/app ~/app.was && ln -s {} ~/.config/app && echo swapped",
        outside.display()
    )
}

#[test]
fn a_swap_inside_a_rootless_environment_leads_its_next_undo_nowhere() {
    let f = fixture!();
    let (p, outside) = profile_and_outside(&f);
    add_app_conf(&p);
    let Some((agentenv, _)) = crate::rootless::unprivileged(&f, module_path!()) else {
        return;
    };
    let start = |opts: &[&str], script: &str| {
        let mut c = agentenv();
        c.args(opts).args([".", "--", "sh", "-c", script]);
        run(c)
    };
    let o = start(&["--no-profile"], PLANT);
    assert!(o.status.success(), "{}", stderr(&o));
    let profile = ["--profile", p.to_str().unwrap()];
    let o = start(&profile, &swap(&outside));
    assert_eq!(stdout(&o), "swapped\n", "{}", stderr(&o));

    // The next start undoes the activation above, then activates again.
    let o = start(&profile, "cat ~/.config/app/conf; cat ~/app.was/conf");
    assert_eq!(entries(&outside), Vec::<String>::new(), "{}", stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "profile's\nprofile's\n");
    let err = stderr(&o);
    assert!(err.contains("the original is at"), "{err}");
}

#[test]
fn a_swap_in_a_containers_private_home_leads_the_next_attachs_undo_nowhere() {
    let rt = runtime!("swap_in_private_home", Runtime::podman());
    let f = fixture!();
    let (p, outside) = profile_and_outside(&f);
    let c = rt.start(
        Image::Busybox,
        &["--label", "sec-profile"],
        &["/bin/sleep", "1000"],
    );
    let attach = |script: &str| {
        let mut cmd = f.attach_cmd(&c.name, &["--user", "ana"], &["sh", "-c", script]);
        cmd.env("AGENTENV_PROFILE", &p);
        run(cmd)
    };
    let bb = |s: &str| {
        s.replace("mkdir ", "busybox mkdir ")
            .replace("mv ", "busybox mv ")
            .replace("ln ", "busybox ln ")
    };
    let o = attach(&bb(PLANT));
    assert!(o.status.success(), "{}", stderr(&o));
    // The profile now links over the session's file: it is moved aside.
    add_app_conf(&p);
    let o = attach(&format!("id -u; {}", bb(&swap(&outside))));
    assert_eq!(stdout(&o), "1000\nswapped\n", "{}", stderr(&o));

    let o = attach("cat ~/.config/app/conf ~/app.was/conf");
    assert_eq!(entries(&outside), Vec::<String>::new(), "{}", stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "profile's\nprofile's\n");
    assert!(stderr(&o).contains("the original is at"), "{}", stderr(&o));
    assert!(c.is_running());
}
