//! `agentenv --backend vm` end to end on an aarch64 guest (QEMU, TCG here), with an offline
//! aarch64 flake (the example's, with Debian's arm64 static bash and busybox): the dev shell is
//! evaluated by the guest's nix, the command runs through the guest agent over vsock.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{agentenv_bin, run, skip, stderr, stdout};
use crate::vm::prerequisites;

/// A copy of examples/hello with arm64 static tools, as a git repository, and a state
/// directory with the VM assets installed.
struct VmFixture {
    _tmp: tempfile::TempDir,
    flake: PathBuf,
    state: PathBuf,
}

fn extract(deb: &Path, into: &Path) {
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .status()
        .unwrap();
    assert!(ok.success(), "cannot extract {}", deb.display());
}

fn deb(assets: &Path, name: &str) -> Result<PathBuf, String> {
    std::fs::read_dir(assets.join("debs"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f.starts_with(&format!("{name}_")) && f.ends_with("_arm64.deb")
        })
        .ok_or_else(|| format!("no {name}:arm64 package in {}/debs", assets.display()))
}

impl VmFixture {
    fn new() -> Result<Self, String> {
        let (_, assets) = prerequisites()?;
        let tmp = tempfile::Builder::new()
            .prefix("agentenv-vm-test")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let flake = root.join("hello");
        let debs = root.join("debs");
        extract(&deb(&assets, "bash-static")?, &debs);
        extract(&deb(&assets, "busybox-static")?, &debs);
        let repo = crate::support::repo_root();
        std::fs::create_dir_all(flake.join("pkgs/bash/bin")).unwrap();
        std::fs::create_dir_all(flake.join("pkgs/busybox/bin")).unwrap();
        let script = format!(
            "cp -r '{ex}/.' '{f}/' && rm -f '{f}/.gitignore' && cp '{d}/bin/bash-static' '{f}/pkgs/bash/bin/bash' \
             && cp '{d}/bin/busybox' '{f}/pkgs/busybox/bin/busybox' && git -C '{f}' init -q && git -C '{f}' add -A",
            ex = repo.join("examples/hello").display(),
            f = flake.display(),
            d = debs.display()
        );
        let mut c = Command::new("bash");
        c.arg("-c").arg(&script);
        let out = run(c);
        if !out.status.success() {
            return Err(format!("cannot prepare the fixture: {}", stderr(&out)));
        }
        let state = root.join("state");
        let out = run({
            let mut c = Command::new(agentenv_bin());
            c.env("AGENTENV_HOME", &state)
                .arg("vm")
                .arg("setup")
                .arg(&assets);
            c
        });
        if !out.status.success() {
            return Err(format!("vm setup failed: {}", stderr(&out)));
        }
        Ok(Self {
            _tmp: tmp,
            flake,
            state,
        })
    }

    fn agentenv(&self) -> Command {
        let mut c = Command::new(agentenv_bin());
        c.env("AGENTENV_HOME", &self.state)
            .env_remove("NIX_CONFIG")
            .current_dir(&self.flake);
        c
    }

    fn run_vm(&self, script: &str) -> std::process::Output {
        let mut c = self.agentenv();
        c.args(["--backend", "vm", "--arch", "aarch64", "."])
            .args(["--", "sh", "-c", script]);
        run(c)
    }
}

#[test]
fn a_vm_environment_runs_the_flakes_shell_on_aarch64() {
    let fx = match VmFixture::new() {
        Ok(f) => f,
        Err(reason) => return skip(module_path!(), &reason),
    };
    let project_file = fx.flake.join("from-vm");
    let out = fx.run_vm(&format!(
        "uname -m; echo \"$GREETING\"; echo \"hook=$HELLO_HOOK_RAN\"; echo made > {}; exit 3",
        project_file.display()
    ));
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}\n{}", stderr(&out));
    assert!(text.starts_with("aarch64\n"), "{text}");
    assert!(text.contains("hello from the agentenv example\n"), "{text}");
    assert!(text.contains("hook=1\n"), "{text}");
    assert_eq!(std::fs::read_to_string(&project_file).unwrap(), "made\n");
    // An aarch64 guest on an x86_64 host is emulated, and agentenv says so, once.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            stderr(&out).matches("emulated (TCG)").count(),
            1,
            "{}",
            stderr(&out)
        );
    }

    // kill -9 of agentenv takes its VM and helpers along.
    let mut c = fx.agentenv();
    c.args([
        "--backend",
        "vm",
        "--arch",
        "aarch64",
        ".",
        "--",
        "sleep",
        "300",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut victim = c.spawn().unwrap();
    let vm_dirs = fx.state.join("run/vm");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let ready = || {
        crate::support::list(&vm_dirs).iter().any(|d| {
            std::fs::read_to_string(d.join("console.log")).is_ok_and(|c| c.contains("ready in"))
        })
    };
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VM did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    victim.kill().unwrap();
    victim.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = stdout(&run({
            let mut c = Command::new("pgrep");
            c.args(["-f", &fx.state.display().to_string()]);
            c
        }));
        if left.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outlived a killed agentenv: {left}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A second run: warm (the guest's cache), and a signal ends it as it would on the host.
    let out = fx.run_vm("kill -TERM $$");
    assert_eq!(out.status.code(), Some(128 + 15), "{}", stderr(&out));

    // A persistent VM: up, many execs in it, ps, down.
    let mut up = fx.agentenv();
    up.args(["up", "--backend", "vm", "--arch", "aarch64", "."]);
    let out = run(up);
    assert!(out.status.success(), "up: {}", stderr(&out));
    let id = stdout(&out)
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    for i in 0..20 {
        let mut exec = fx.agentenv();
        exec.args([
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            &format!("echo $GREETING {i}; exit {}", i % 3),
        ]);
        let out = run(exec);
        assert_eq!(out.status.code(), Some(i % 3), "exec {i}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("hello from the agentenv example {i}\n")
        );
    }
    let mut ps = fx.agentenv();
    ps.args(["ps", "--json"]);
    let out = run(ps);
    assert!(stdout(&out).contains(&id), "ps: {}", stdout(&out));
    let mut down = fx.agentenv();
    down.args(["down", &id]);
    let out = run(down);
    assert!(out.status.success(), "down: {}", stderr(&out));

    // The killed run's directory was swept by the next one.
    assert!(
        crate::support::list(&vm_dirs).is_empty(),
        "{:?}",
        crate::support::list(&vm_dirs)
    );

    // Nothing of any VM is left running.
    let left = run({
        let mut c = Command::new("pgrep");
        c.args(["-f", &fx.state.display().to_string()]);
        c
    });
    assert!(
        stdout(&left).trim().is_empty(),
        "left running: {}",
        stdout(&left)
    );
}
