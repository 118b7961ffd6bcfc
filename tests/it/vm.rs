//! The VM backend on a real aarch64 guest (QEMU, TCG here): one boot serves many checks, since
//! each boot costs seconds. Needs qemu-system-aarch64, virtiofsd, vhost-device-vsock and the
//! assets from scripts/vm-assets.sh (scripts/test.sh builds them into target/vm-assets).

use std::path::{Path, PathBuf};

use agentenv::compute::vm::boot::{BootConfig, BootReply, GuestMount, MountSource};
use agentenv::compute::vm::capture::{capture, Captured};
use agentenv::compute::vm::clone::clone_image;
use agentenv::compute::vm::launch::Vm;
use agentenv::compute::vm::qemu::Tools;
use agentenv::compute::vm::spec::{Arch, Console, Disk, Share, VmSpec, Vsock};
use agentenv::proto::message::ExecSpec;

use crate::support::{repo_root, skip};

/// The built assets, or why there are none.
pub fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var_os("AGENTENV_VM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/vm-assets"));
    for f in ["kernel", "initrd", "root.img", "store.img", "VERSION"] {
        if !dir.join(f).exists() {
            return Err(format!(
                "no VM assets in {} (run scripts/vm-assets.sh --arch aarch64 {})",
                dir.display(),
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The VM tools and assets, or the reason to skip.
pub fn prerequisites() -> Result<(Tools, PathBuf), String> {
    if !crate::support::is_root() {
        return Err("needs root (virtiofsd serves the project as its owner)".into());
    }
    let tools = Tools::find(Arch::Aarch64).map_err(|e| format!("{e:#}"))?;
    Ok((tools, assets()?))
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        rc_script: String::new(),
        shell: "/bin/bash".into(),
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        cwd: "/".into(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        prompt_name: "vm".into(),
        tty: None,
        stdin_script: false,
        passed_stdio: false,
    }
}

fn run(vm: &Vm, script: &str) -> Captured {
    capture(&vm.agent(), sh(script)).expect("exec in the guest")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn spec_and_config(assets: &Path, work: &Path, project: &Path) -> (VmSpec, BootConfig) {
    let store = work.join("store.img");
    clone_image(&assets.join("store.img"), &store).unwrap();
    let run_dir = work.join("run");
    let spec = VmSpec {
        name: "agentenv-vm-test".into(),
        arch: Arch::Aarch64,
        kernel: assets.join("kernel"),
        initrd: Some(assets.join("initrd")),
        cmdline: "console=hvc0 quiet panic=-1".into(),
        cpus: 2,
        memory_mib: 512,
        disks: vec![
            Disk {
                id: "root".into(),
                image: assets.join("root.img"),
                read_only: true,
            },
            Disk {
                id: "store".into(),
                image: store,
                read_only: false,
            },
        ],
        shares: vec![Share {
            tag: "project".into(),
            host_dir: project.to_path_buf(),
            read_only: false,
        }],
        vsock: Vsock {
            guest_cid: 3,
            host_socket: run_dir.join("vsock"),
            host_ports: vec![1025],
        },
        console: Console::File {
            path: work.join("console.log"),
        },
    };
    let config = BootConfig::now(
        "root",
        vec![
            GuestMount {
                source: MountSource::Disk {
                    id: "store".into(),
                    fstype: "ext4".into(),
                },
                target: "/nix".into(),
                read_only: false,
            },
            GuestMount {
                source: MountSource::Share {
                    tag: "project".into(),
                },
                target: project.to_path_buf(),
                read_only: false,
            },
        ],
        "vmtest",
    );
    (spec, config)
}

fn boot(tools: &Tools, assets: &Path, work: &Path, project: &Path) -> Vm {
    let (spec, config) = spec_and_config(assets, work, project);
    let run_dir = work.join("run");
    Vm::start(spec, tools, &run_dir, &config).unwrap_or_else(|e| {
        panic!(
            "{}\nconsole:\n{}",
            agentenv::diag::render(&e),
            std::fs::read_to_string(work.join("console.log")).unwrap_or_default()
        )
    })
}

#[test]
fn an_aarch64_guest_boots_and_serves_exec_over_vsock() {
    let (tools, assets) = match prerequisites() {
        Ok(p) => p,
        Err(reason) => return skip(module_path!(), &reason),
    };
    let work = tempfile::Builder::new()
        .prefix("agentenv-vm-test")
        .tempdir()
        .unwrap();
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("from-host"), "hello guest\n").unwrap();
    let vm = boot(&tools, &assets, work.path(), &project);
    eprintln!("booted in {:?} ({:?})", vm.boot_time, vm.accel);
    assert!(
        matches!(&vm.reply, Some(BootReply::Ready { machine, .. }) if machine == "aarch64"),
        "{:?}",
        vm.reply
    );

    let out = run(&vm, "uname -m");
    assert_eq!((out.code, text(&out.stdout).trim()), (0, "aarch64"));

    // The exit code and a signal come back as they ended.
    assert_eq!(run(&vm, "exit 7").code, 7);
    assert_eq!(run(&vm, "kill -TERM $$").code, 128 + 15);

    // The project is shared read-write at its own path.
    let p = project.display();
    let out = run(
        &vm,
        &format!("cat {p}/from-host && echo written > {p}/from-guest"),
    );
    assert_eq!(out.code, 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello guest\n");
    assert_eq!(
        std::fs::read_to_string(project.join("from-guest")).unwrap(),
        "written\n"
    );

    // /nix is the environment's clone: writable, and the golden image never changes.
    let golden_before = std::fs::read(assets.join("store.img")).unwrap();
    let out = run(
        &vm,
        "echo mine > /nix/store/written-inside && sync && cat /nix/store/written-inside",
    );
    assert_eq!(
        (out.code, text(&out.stdout).as_str()),
        (0, "mine\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::fs::read(assets.join("store.img")).unwrap() == golden_before);

    // The clock came from the host.
    let out = run(&vm, "date +%s");
    let guest: i64 = text(&out.stdout).trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest - host).abs() < 30,
        "guest clock {guest}, host {host}"
    );

    // A clock pushed later (as after the host slept) is the guest's clock from then on.
    let ahead = agentenv::compute::vm::clock::ClockUpdate {
        time_secs: host + 86_400,
        time_nanos: 0,
    };
    vm.push_clock(ahead).unwrap();
    let moved = (0..50).any(|_| {
        let out = run(&vm, "date +%s");
        let guest: i64 = text(&out.stdout).trim().parse().unwrap();
        if (guest - (host + 86_400)).abs() < 30 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        false
    });
    assert!(moved, "the guest's clock did not follow the pushed one");
    vm.push_clock(agentenv::compute::vm::clock::ClockUpdate::now())
        .unwrap();

    // Lines logged before the console existed reached it.
    let console = std::fs::read_to_string(work.path().join("console.log")).unwrap();
    assert!(console.contains("modules loaded"), "{console}");

    let pids = vm.pids();
    drop(vm);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} of the VM outlived it"
        );
    }
    assert!(
        !work.path().join("run").exists(),
        "the run directory was left behind"
    );
}

#[test]
fn a_guest_that_cannot_start_is_an_error_with_the_kernels_last_words() {
    let (tools, assets) = match prerequisites() {
        Ok(p) => p,
        Err(reason) => return skip(module_path!(), &reason),
    };
    let work = tempfile::Builder::new()
        .prefix("agentenv-vm-test")
        .tempdir()
        .unwrap();
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let (mut spec, config) = spec_and_config(&assets, work.path(), &project);
    // No init: the kernel panics, and the VM ends (panic=-1, -no-reboot).
    let bogus = work.path().join("initrd");
    std::fs::write(&bogus, b"not an initrd").unwrap();
    spec.initrd = Some(bogus);
    let run_dir = work.path().join("run");
    let err = match Vm::start(spec, &tools, &run_dir, &config) {
        Ok(_) => panic!("a VM without an init came up"),
        Err(e) => agentenv::diag::render(&e),
    };
    assert!(err.contains("QEMU exited"), "{err}");
    assert!(
        err.contains("kernel:") && err.contains("Kernel panic"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert!(!run_dir.exists(), "the run directory was left behind");
}
