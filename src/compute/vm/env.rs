//! An environment in a VM, from the host's side: the VM for a project (its store clone, the
//! project, home and profile shared at their own paths), the dev shell evaluated inside the
//! guest by the guest's nix (and cached there, on the environment's own `/nix`), and commands
//! run through the guest agent over vsock.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::assets::Assets;
use super::boot::{BootConfig, GuestMount, MountSource, GUEST_CID};
use super::capture::capture;
use super::clone::clone_image;
#[cfg(target_os = "linux")]
use super::launch::Vm;
#[cfg(target_os = "linux")]
use super::qemu::Tools;
use super::spec::{Arch, Console, Disk, Share, VmSpec, Vsock};
#[cfg(target_os = "macos")]
use super::vz::launch::Vm;
use crate::diag::Diagnostic;
use crate::envs::EnvDirs;
use crate::nix::devenv::DevEnv;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;
use crate::proto::message::ExecSpec;

/// Where the guest keeps agentenv's own state (its evaluation cache): on the environment's
/// `/nix` disk, so it lasts as long as the store paths it names.
const GUEST_STATE: &str = "/nix/var/agentenv";

/// The environment's writable `/nix` disk: a clone of the golden image, made at first use.
pub fn store_disk(env_dirs: &EnvDirs, assets: &Assets) -> Result<PathBuf> {
    let img = env_dirs.root.join(format!("vm-store-{}.img", assets.arch));
    if !img.exists() {
        std::fs::create_dir_all(&env_dirs.root)
            .with_context(|| format!("cannot create {}", env_dirs.root.display()))?;
        let tmp = img.with_extension("img.new");
        let _ = std::fs::remove_file(&tmp);
        let kind = clone_image(&assets.store_image(), &tmp)?;
        tracing::debug!(?kind, "cloned the golden store for {}", env_dirs.id);
        std::fs::rename(&tmp, &img)?;
    }
    Ok(img)
}

/// A booted VM for one environment.
pub struct VmEnv {
    pub vm: Vm,
    pub project: PathBuf,
    /// Held while the VM runs: one VM at a time mounts an environment's store disk.
    _store_lock: std::fs::File,
}

/// What a VM for a project shows inside.
pub struct VmEnvPlan<'a> {
    pub state: &'a StateDirs,
    pub env_dirs: &'a EnvDirs,
    pub arch: Arch,
    pub project: &'a Path,
    /// The environment's home (host directory) and where it is inside.
    pub home: (&'a Path, &'a Path),
    pub profile: Option<&'a Path>,
    /// Where the VM's sockets and logs go (default: a directory of its own under the runtime
    /// directory).
    pub run_dir: Option<PathBuf>,
}

impl VmEnv {
    /// Boots the environment's VM.
    pub fn boot(plan: &VmEnvPlan) -> Result<Self> {
        let assets = Assets::installed(plan.state, plan.arch)?;
        #[cfg(target_os = "linux")]
        let tools = Tools::find(plan.arch)?;
        let store = store_disk(plan.env_dirs, &assets)?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&store)
            .with_context(|| format!("cannot open {}", store.display()))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(Diagnostic::new(format!(
                "another VM of {} is running, and it holds the environment's /nix disk",
                plan.env_dirs.id
            ))
            .hint("use it with `agentenv exec`, or stop it with `agentenv down`")
            .into());
        }
        std::fs::create_dir_all(plan.home.0)
            .with_context(|| format!("cannot create {}", plan.home.0.display()))?;
        let name = format!("agentenv-vm-{}", plan.env_dirs.id);
        sweep_dead_run_dirs(&plan.state.runtime.join("vm"));
        let run_dir = plan.run_dir.clone().unwrap_or_else(|| {
            plan.state.runtime.join("vm").join(format!(
                "{}-{}",
                plan.env_dirs.id,
                std::process::id()
            ))
        });
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;

        let mut shares = vec![
            (
                Share {
                    tag: "project".into(),
                    host_dir: plan.project.to_path_buf(),
                    read_only: false,
                },
                plan.project.to_path_buf(),
            ),
            (
                Share {
                    tag: "home".into(),
                    host_dir: plan.home.0.to_path_buf(),
                    read_only: false,
                },
                plan.home.1.to_path_buf(),
            ),
        ];
        if let Some(p) = plan.profile {
            shares.push((
                Share {
                    tag: "profile".into(),
                    host_dir: p.to_path_buf(),
                    read_only: false,
                },
                p.to_path_buf(),
            ));
        }
        let mut mounts = vec![GuestMount {
            source: MountSource::Disk {
                id: "store".into(),
                fstype: "ext4".into(),
            },
            target: "/nix".into(),
            read_only: false,
        }];
        // Parents first: a project inside the home is mounted after it.
        let mut ordered: Vec<&(Share, PathBuf)> = shares.iter().collect();
        ordered.sort_by_key(|(_, at)| at.components().count());
        mounts.extend(ordered.iter().map(|(s, at)| GuestMount {
            source: MountSource::Share { tag: s.tag.clone() },
            target: at.clone(),
            read_only: s.read_only,
        }));
        let spec = VmSpec {
            name: name.clone(),
            arch: plan.arch,
            kernel: assets.kernel(),
            initrd: Some(assets.initrd()),
            cmdline: "console=hvc0 quiet panic=-1".into(),
            cpus: 2,
            memory_mib: 1024,
            disks: vec![
                Disk {
                    id: "root".into(),
                    image: assets.root_image(),
                    read_only: true,
                },
                Disk {
                    id: "store".into(),
                    image: store,
                    read_only: false,
                },
            ],
            shares: shares.into_iter().map(|(s, _)| s).collect(),
            vsock: Vsock {
                guest_cid: GUEST_CID,
                host_socket: run_dir.join("vsock"),
                host_ports: vec![super::boot::BOOT_PORT],
            },
            console: Console::File {
                path: run_dir.join("console.log"),
            },
        };
        let config = BootConfig::now("root", mounts, "agentenv");
        #[cfg(target_os = "linux")]
        let vm = Vm::start(spec, &tools, &run_dir, &config)?;
        // Virtualization.framework: the VM in a machine process of its own (`vz::host`).
        #[cfg(target_os = "macos")]
        let vm = Vm::start(spec, &run_dir, &config)?;
        tracing::debug!("{name} is up: boot={} ms", vm.boot_time.as_millis());
        Ok(Self {
            vm,
            project: plan.project.to_path_buf(),
            _store_lock: lock,
        })
    }

    /// The dev shell of `target`, evaluated by the guest's nix (warm: from the guest's cache,
    /// with no nix run at all).
    pub fn devenv(&self, target: &FlakeTarget, refresh: bool) -> Result<DevEnv> {
        let mut command: Vec<OsString> = vec![
            "/usr/bin/agentenv".into(),
            "vm".into(),
            "eval".into(),
            target.root.clone().into(),
        ];
        if let Some((_, name)) = target.installable().split_once('#') {
            let mut arg = target.root.clone().into_os_string();
            arg.push("#");
            arg.push(name);
            command[3] = arg;
        }
        if refresh {
            command.push("--refresh".into());
        }
        let spec = ExecSpec {
            rc_script: String::new(),
            shell: "/bin/bash".into(),
            command: Some(command),
            cwd: target.root.clone(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), "/root".into()),
                ("AGENTENV_HOME".into(), GUEST_STATE.into()),
            ],
            prompt_name: "agentenv".into(),
            tty: None,
            stdin_script: false,
            passed_stdio: false,
        };
        let out = capture(&self.vm.agent(), spec)?;
        if out.code != 0 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut d = Diagnostic::new(format!(
                "the dev shell of {} did not evaluate inside the VM",
                target.display_name()
            ));
            for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
                d = d.detail(l.to_string());
            }
            return Err(d
                .hint(format!(
                    "check the flake with the guest's nix: agentenv --backend vm {} -- nix flake check",
                    target.root.display()
                ))
                .into());
        }
        serde_json::from_slice(&out.stdout).context("the guest printed a malformed dev shell")
    }
}

/// Removes the run directories (`<env>-<pid>`) of one-shot VMs whose agentenv is gone (killed
/// with SIGKILL: its VM and helpers went with it, their sockets and logs did not).
fn sweep_dead_run_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
