//! The `vz` backend as the registry sees it: macOS's default and only backend. It says
//! whether this Mac and this binary can run the VM (Virtualization.framework supported, the
//! entitlement signed in, the assets installed) and what `doctor` checks. Like the QEMU VM
//! backend, its environments evaluate their dev shell inside the guest, so the verbs reach it
//! through the VM backend's own flow, not through a host-evaluated `SandboxSpec`.

use super::entitlement;
use crate::compute::vm::assets::Assets;
use crate::compute::vm::spec::Arch;
use crate::compute::{AgentSetup, Backend, Check, Instance, SandboxSpec};
use crate::diag::Diagnostic;
use crate::guest::launch::Launch;
use crate::paths::StateDirs;

pub struct VzBackend;

fn not_this_way() -> anyhow::Error {
    Diagnostic::new("the vz backend runs its environments through the VM backend's own flow")
        .hint("use `agentenv PATH` or `agentenv up PATH`")
        .into()
}

/// Whether Virtualization.framework can run VMs on this Mac.
fn virtualization() -> Result<String, (String, String)> {
    if super::machine::supported() {
        Ok("Virtualization.framework can run VMs here".into())
    } else {
        Err((
            "Virtualization.framework cannot run VMs on this Mac".into(),
            "agentenv's VMs need Apple silicon and macOS 13 or later".into(),
        ))
    }
}

/// The installed aarch64 assets, with a kernel VZLinuxBootLoader can boot.
fn assets() -> Result<String, (String, String)> {
    let fix = || {
        "build a set on Linux (`scripts/vm-assets.sh --arch aarch64 DIR`) or with `nix build .#vm-assets`, copy it here, then `agentenv vm setup DIR`".to_string()
    };
    let state = StateDirs::from_env()
        .map_err(|e| (format!("{e:#}"), "set HOME or AGENTENV_HOME".into()))?;
    let set = Assets::installed(&state, Arch::Aarch64).map_err(|e| (format!("{e:#}"), fix()))?;
    super::plan::check_kernel(&set.kernel()).map_err(|e| (e.to_string(), fix()))?;
    Ok(format!(
        "{} (kernel {})",
        set.dir.display(),
        set.kernel_version
    ))
}

impl Backend for VzBackend {
    fn name(&self) -> &'static str {
        "vz"
    }

    fn available(&self) -> Result<(), Diagnostic> {
        for found in [
            virtualization(),
            entitlement::check_running_binary(),
            assets(),
        ] {
            if let Err((what, fix)) = found {
                return Err(Diagnostic::new(what).hint(fix));
            }
        }
        Ok(())
    }

    fn checks(&self) -> Vec<Check> {
        vec![
            Check {
                name: "virtualization",
                found: virtualization(),
            },
            Check {
                name: "vz entitlement",
                found: entitlement::check_running_binary(),
            },
            Check {
                name: "vm assets (aarch64)",
                found: assets(),
            },
        ]
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
