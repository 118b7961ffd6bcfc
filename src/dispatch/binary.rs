//! Which agentenv binary goes to a host: one that runs on any Linux of that architecture, so a
//! fully static build (no libc needed there). A static build of the host's architecture pushes
//! itself; otherwise `AGENTENV_DISPATCH_BINARY`, or one installed in agentenv's data directory.

use std::path::PathBuf;

use anyhow::Result;

use super::probe::Arch;
use crate::diag::Diagnostic;
use crate::paths::StateDirs;

/// Where an installed static build for `arch` hosts lives.
pub fn installed_path(state: &StateDirs, arch: Arch) -> PathBuf {
    state
        .data
        .join("remote")
        .join(format!("agentenv-{}-linux-static", arch.as_str()))
}

/// The static agentenv to run on an `arch` host.
pub fn binary_for(state: &StateDirs, arch: Arch) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AGENTENV_DISPATCH_BINARY").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Diagnostic::new(format!(
                "AGENTENV_DISPATCH_BINARY names {}, which is not a file",
                p.display()
            ))
            .into());
        }
        return Ok(p);
    }
    if cfg!(all(target_os = "linux", target_feature = "crt-static"))
        && Arch::current() == Some(arch)
    {
        return std::env::current_exe().map_err(|e| {
            Diagnostic::new(format!("cannot find agentenv's own binary: {e}")).into()
        });
    }
    let installed = installed_path(state, arch);
    if installed.is_file() {
        return Ok(installed);
    }
    Err(Diagnostic::new(format!(
        "no static agentenv for {} hosts: this build needs a C library that the host may lack",
        arch.as_str()
    ))
    .hint(format!(
        "build one with `scripts/build-static.sh {}` (it installs it at {}), or point AGENTENV_DISPATCH_BINARY at one",
        arch.as_str(),
        installed.display()
    ))
    .into())
}

/// The static binaries this side can send, one per architecture it has one for, each with its
/// content name on a host.
pub fn offered(state: &StateDirs) -> Vec<(Arch, PathBuf, String)> {
    let mut out: Vec<(Arch, PathBuf, String)> = Vec::new();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let Ok(path) = binary_for(state, arch) else {
            continue;
        };
        // One file named for both (AGENTENV_DISPATCH_BINARY) is hashed once.
        let known = out
            .iter()
            .find(|(_, p, _)| *p == path)
            .map(|(_, _, n)| n.clone());
        let name = match known {
            Some(n) => n,
            None => match super::push::content_name("agentenv", &path) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        out.push((arch, path, name));
    }
    out
}
