//! `agentenv profile install FLAKE_REF` against real nix, offline: a local flake with no inputs
//! whose outputs are built by a static bash and busybox copied into the flake.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::home::{snapshot, write, TestHome};

/// Skips (loudly) when nix is not installed.
fn nix_available() -> bool {
    let found = Command::new("nix")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = "profile install tests: nix is not installed";
        println!("SKIPPED: {reason}");
        let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-skips.log");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            use std::io::Write;
            let _ = writeln!(f, "{reason}");
        }
    }
    found
}

fn nix_config(t: &TestHome) -> String {
    let registry = t.root.join("empty-registry.json");
    std::fs::write(&registry, r#"{"flakes":[],"version":2}"#).unwrap();
    format!(
        "experimental-features = nix-command flakes\nsubstituters =\nflake-registry = {}",
        registry.display()
    )
}

/// A git-tracked flake in `dir` with `flake.nix` = `outputs`, and bash and busybox inside.
fn make_flake(dir: &Path, outputs: &str) {
    for (tool, from) in [("bash", "/bin/bash-static"), ("busybox", "/bin/busybox")] {
        let to = dir.join(format!("pkgs/{tool}/bin/{tool}"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("cannot copy {from}: {e}"));
    }
    let flake = format!(
        r#"{{
  outputs = {{ self }}:
    let
      system = "x86_64-linux";
      bash = "${{builtins.path {{ path = ./pkgs/bash; name = "bash-static"; }}}}/bin/bash";
      bb = "${{builtins.path {{ path = ./pkgs/busybox; name = "busybox-static"; }}}}/bin/busybox";
      run = name: script: derivation {{
        inherit name system;
        builder = bash;
        args = [ "-c" script ];
      }};
    in {outputs};
}}
"#
    );
    write(dir, "flake.nix", flake.as_bytes(), 0o644);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
}

fn install(t: &TestHome, config: &str, flake_ref: &str) -> std::process::Output {
    // nix keeps its caches under XDG_CACHE_HOME: not in the home under test.
    t.command(&["profile", "install", flake_ref])
        .env("NIX_CONFIG", config)
        .env("XDG_CACHE_HOME", t.root.join("cache"))
        .output()
        .unwrap()
}

fn store_target(path: &Path) -> PathBuf {
    std::fs::read_link(path).unwrap()
}

#[test]
fn install_builds_the_profile_output_and_its_tools_offline() {
    if !nix_available() {
        return;
    }
    let t = TestHome::new();
    write(&t.home, ".bashrc", b"# mine\n", 0o600);
    let before = snapshot(&t.home);
    let flake = t.root.join("config");
    write(&flake, "profile/home/.bashrc", b"# from the flake\n", 0o644);
    write(
        &flake,
        "profile/skills/review/SKILL.md",
        b"---\nname: review\n---\n",
        0o644,
    );
    write(
        &flake,
        "profile/bin/hello",
        b"#!/bin/sh\necho hello\n",
        0o755,
    );
    write(
        &flake,
        "profile/agentenv.toml",
        b"tools = \"tools\"\n[env]\nEDITOR = \"vi\"\n",
        0o644,
    );
    make_flake(
        &flake,
        r#"{
      packages.${system} = {
        agentenvProfile = run "agentenv-profile" "${bb} cp -r ${./profile} $out";
        tools = run "profile-tools" ''
          ${bb} mkdir -p $out/bin
          echo 'echo tool' > $out/bin/mytool
          ${bb} chmod +x $out/bin/mytool
        '';
      };
    }"#,
    );
    let config = nix_config(&t);
    let out = install(&t, &config, &flake.display().to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rc = store_target(&t.home.join(".bashrc"));
    assert!(rc.starts_with("/nix/store/"), "{}", rc.display());
    assert_eq!(std::fs::read_to_string(&rc).unwrap(), "# from the flake\n");
    assert!(t.home.join(".claude/skills/review").is_symlink());
    let status: serde_json::Value =
        serde_json::from_str(&t.ok(&["profile", "status", "--json"])).unwrap();
    assert_eq!(
        status["origin"],
        format!("{}#agentenvProfile", flake.display())
    );
    let tools_bin = PathBuf::from(status["env"]["path_append"][0].as_str().unwrap());
    assert!(
        tools_bin.join("mytool").is_file(),
        "{}",
        tools_bin.display()
    );
    let env_sh = std::fs::read_to_string(t.state().join("env.sh")).unwrap();
    assert!(
        env_sh.contains(&tools_bin.display().to_string()),
        "{env_sh}"
    );

    // Installing again is a no-op on the home; deactivating restores it.
    let active = snapshot(&t.home);
    let out = install(&t, &config, &flake.display().to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&t.home), active);
    t.ok(&["profile", "deactivate"]);
    assert_eq!(snapshot(&t.home), before);
}

#[test]
fn install_falls_back_to_a_home_manager_activation_package() {
    if !nix_available() {
        return;
    }
    let t = TestHome::new();
    let flake = t.root.join("hm");
    write(&flake, "files/.hmrc", b"# home-manager\n", 0o644);
    make_flake(
        &flake,
        r#"{
      homeConfigurations.portable.activationPackage = run "home-manager-generation" ''
        ${bb} mkdir -p $out/home-files $out/home-path/bin
        ${bb} cp ${./files/.hmrc} $out/home-files/.hmrc
        echo 'echo hm' > $out/home-path/bin/hm-tool
        echo 'exit 1' > $out/activate
        ${bb} chmod +x $out/activate $out/home-path/bin/hm-tool
      '';
    }"#,
    );
    let config = nix_config(&t);
    let out = install(&t, &config, &flake.display().to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rc = store_target(&t.home.join(".hmrc"));
    assert_eq!(std::fs::read_to_string(rc).unwrap(), "# home-manager\n");
    let status: serde_json::Value =
        serde_json::from_str(&t.ok(&["profile", "status", "--json"])).unwrap();
    let bin = status["env"]["path_prepend"][0].as_str().unwrap();
    assert!(bin.ends_with("/home-path/bin"), "{bin}");
    t.ok(&["profile", "deactivate"]);
    assert_eq!(snapshot(&t.home), Default::default());
}

#[test]
fn install_of_a_flake_without_a_profile_says_what_to_add() {
    if !nix_available() {
        return;
    }
    let t = TestHome::new();
    let flake = t.root.join("empty");
    make_flake(&flake, "{ }");
    let out = install(&t, &nix_config(&t), &flake.display().to_string());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no profile output"), "{err}");
    assert!(err.contains("hint: add `agentenvProfile`"), "{err}");
    assert_eq!(snapshot(&t.home), Default::default());
}
