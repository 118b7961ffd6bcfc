//! The VM backend as the registry sees it: whether it can run here, and what `doctor` checks
//! (QEMU, the vhost-user helpers, the installed assets, KVM or TCG, reflinks for the store
//! clone). Its environments evaluate their dev shell inside the guest, so the verbs reach it
//! through `enter` and `up` of this folder rather than through a host-evaluated `SandboxSpec`.

use super::assets::Assets;
use super::qemu::{Accel, Tools};
use super::spec::Arch;
use crate::compute::{AgentSetup, Backend, Check, Instance, SandboxSpec};
use crate::diag::Diagnostic;
use crate::guest::launch::Launch;
use crate::paths::StateDirs;

pub struct VmBackend;

const ARCHES: [Arch; 2] = [Arch::Aarch64, Arch::X86_64];

fn not_this_way() -> anyhow::Error {
    Diagnostic::new("the vm backend runs its environments through `agentenv --backend vm`")
        .hint("pass --backend vm to agentenv or `agentenv up`")
        .into()
}

impl Backend for VmBackend {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn available(&self) -> Result<(), Diagnostic> {
        // The host's architecture first; another one (emulated) will do where it is set up.
        let state = StateDirs::from_env().map_err(|e| Diagnostic::new(format!("{e:#}")))?;
        let usable = |arch: Arch| -> anyhow::Result<()> {
            Tools::find(arch)?;
            Assets::installed(&state, arch)?;
            Ok(())
        };
        let first = usable(Arch::host());
        if first.is_ok()
            || ARCHES
                .iter()
                .any(|&a| a != Arch::host() && usable(a).is_ok())
        {
            return Ok(());
        }
        Err(first
            .err()
            .and_then(|e| e.downcast::<Diagnostic>().ok())
            .unwrap_or_else(|| Diagnostic::new("no VM can run here")))
    }

    fn checks(&self) -> Vec<Check> {
        let arch = Arch::host();
        let mut checks = Vec::new();
        let tool = |name: &'static str, found: Option<std::path::PathBuf>, fix: &str| Check {
            name,
            found: found
                .map(|p| p.display().to_string())
                .ok_or_else(|| (format!("{name} is not installed"), fix.to_string())),
        };
        let find = super::launch::find_program;
        checks.push(tool(
            "qemu (aarch64)",
            find(super::qemu::qemu_program(Arch::Aarch64)),
            "apt-get install qemu-system-arm",
        ));
        checks.push(tool(
            "qemu (x86_64)",
            find(super::qemu::qemu_program(Arch::X86_64)),
            "apt-get install qemu-system-x86",
        ));
        checks.push(tool(
            "virtiofsd",
            find("virtiofsd"),
            "apt-get install libseccomp-dev libcap-ng-dev && cargo install --locked virtiofsd",
        ));
        checks.push(tool(
            "vhost-device-vsock",
            find("vhost-device-vsock"),
            "cargo install vhost-device-vsock",
        ));
        checks.push(Check {
            name: "vm accel",
            found: Ok(match Accel::detect(arch) {
                Accel::Kvm => format!("KVM for {arch} guests; others emulated (TCG, slow)"),
                Accel::Tcg => "no working KVM: guests are emulated (TCG, slow)".into(),
            }),
        });
        let state = StateDirs::from_env();
        for a in ARCHES {
            let name = match a {
                Arch::Aarch64 => "vm assets (aarch64)",
                Arch::X86_64 => "vm assets (x86_64)",
            };
            let found = match &state {
                Ok(s) => Assets::installed(s, a)
                    .map(|x| format!("{} (kernel {})", x.dir.display(), x.kernel_version))
                    .map_err(|_| {
                        (
                            "not installed".to_string(),
                            format!("scripts/vm-assets.sh --arch {a} DIR && agentenv vm setup DIR"),
                        )
                    }),
                Err(e) => Err((format!("{e:#}"), "set HOME or AGENTENV_HOME".into())),
            };
            checks.push(Check { name, found });
        }
        if let Ok(s) = &state {
            checks.push(Check {
                name: "vm store clone",
                found: Ok(clone_kind(&s.data)),
            });
        }
        checks
    }

    fn run(&self, _spec: &SandboxSpec, _launch: &Launch) -> anyhow::Result<i32> {
        Err(not_this_way())
    }

    fn run_aside(&self, _spec: &SandboxSpec, _launch: &Launch) -> anyhow::Result<i32> {
        Err(not_this_way())
    }

    fn start(&self, _spec: &SandboxSpec, _agent: AgentSetup) -> anyhow::Result<Instance> {
        Err(not_this_way())
    }
}

/// How the store would be cloned in `dir`: a reflink, or a sparse copy.
fn clone_kind(dir: &std::path::Path) -> String {
    let probe = || -> anyhow::Result<super::clone::CloneKind> {
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix("agentenv-vm-probe")
            .tempdir_in(dir)?;
        std::fs::write(tmp.path().join("a"), b"probe")?;
        super::clone::clone_image(&tmp.path().join("a"), &tmp.path().join("b"))
    };
    match probe() {
        Ok(super::clone::CloneKind::Reflink) => format!("reflink (FICLONE) in {}", dir.display()),
        Ok(super::clone::CloneKind::SparseCopy) => format!(
            "sparse copy in {} (no reflinks there: each environment's store costs what it holds)",
            dir.display()
        ),
        Err(e) => format!("cannot tell: {e:#}"),
    }
}
