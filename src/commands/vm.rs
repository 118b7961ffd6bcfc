//! `agentenv vm setup DIR`: installs a set of VM assets. `agentenv vm eval PATH` (hidden) runs
//! inside a VM's guest: it evaluates the dev shell with the guest's nix against the
//! environment's own store, cached there, and prints it as JSON for the host.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::compute::vm::assets::Assets;
use crate::paths::StateDirs;

#[derive(Debug, Subcommand)]
pub enum VmVerb {
    /// Install the VM assets in DIR (built by scripts/vm-assets.sh) into agentenv's data
    /// directory.
    Setup {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The supervisor of a VM started by `up` (its plan as JSON).
    #[cfg(target_os = "linux")]
    #[command(hide = true)]
    Supervise {
        #[arg(value_name = "PLAN")]
        plan: String,
    },
    /// Clone a disk image as an environment's store disk is cloned (reflink, else a sparse
    /// copy), and say which (for the figures).
    #[command(hide = true)]
    Clone { src: PathBuf, dst: PathBuf },
    /// Inside a VM: evaluate a dev shell and print it as JSON.
    #[command(hide = true)]
    Eval {
        #[arg(value_name = "PATH[#NAME]")]
        path: String,
        #[arg(long)]
        refresh: bool,
    },
}

pub fn run(verb: &VmVerb) -> Result<i32> {
    match verb {
        VmVerb::Setup { dir } => {
            let state = StateDirs::from_env()?;
            let assets = Assets::install(&state, dir)?;
            eprintln!(
                "installed {} VM assets (kernel {}) in {}",
                assets.arch,
                assets.kernel_version,
                assets.dir.display()
            );
            Ok(0)
        }
        VmVerb::Clone { src, dst } => {
            let kind = crate::compute::vm::clone::clone_image(src, dst)?;
            println!("{}", serde_json::to_string(&kind)?);
            Ok(0)
        }
        #[cfg(target_os = "linux")]
        VmVerb::Supervise { plan } => crate::compute::vm::up::supervise(plan),
        VmVerb::Eval { path, refresh } => {
            let cwd = crate::cli::current_dir()?;
            let target = crate::nix::flake::FlakeTarget::resolve(path, &cwd)?;
            let state = StateDirs::from_env()?;
            let (devenv, outcome) =
                crate::nix::devenv::load_or_evaluate(&target, &state, *refresh)?;
            tracing::debug!(?outcome, "evaluated in the guest");
            println!("{}", serde_json::to_string(&devenv)?);
            Ok(0)
        }
    }
}
