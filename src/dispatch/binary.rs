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
    let known = NameCache::load(state);
    let mut cache = known.clone();
    let mut out: Vec<(Arch, PathBuf, String)> = Vec::new();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let Ok(path) = binary_for(state, arch) else {
            continue;
        };
        let Some(name) = cache.name_of(&path) else {
            continue;
        };
        out.push((arch, path, name));
    }
    if cache != known {
        cache.save(state);
    }
    out
}

/// Content names of binaries, by what their files are (device, inode, size, change time): a
/// file that changed is hashed again, one that did not is not read (6 MiB hashed on every
/// dispatch would be time before the connection even starts).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct NameCache {
    names: std::collections::BTreeMap<String, String>,
}

impl NameCache {
    fn path(state: &StateDirs) -> PathBuf {
        state.cache.join("dispatch-binary-names.json")
    }

    fn load(state: &StateDirs) -> Self {
        std::fs::read(Self::path(state))
            .ok()
            .and_then(|data| serde_json::from_slice(&data).ok())
            .unwrap_or_default()
    }

    fn save(&self, state: &StateDirs) {
        // A cache: failing to keep it costs a hash next time, nothing more.
        let _ = std::fs::create_dir_all(&state.cache);
        if let Ok(data) = serde_json::to_vec(self) {
            let _ = crate::util::write_atomic(&Self::path(state), &data);
        }
    }

    fn name_of(&mut self, path: &std::path::Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let key = format!(
            "{}:{}:{}:{}.{}:{}",
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.ctime(),
            meta.ctime_nsec(),
            path.display()
        );
        if let Some(name) = self.names.get(&key) {
            return Some(name.clone());
        }
        let name = super::push::content_name("agentenv", path).ok()?;
        // What this path held before is forgotten.
        let suffix = format!(":{}", path.display());
        self.names.retain(|k, _| !k.ends_with(&suffix));
        self.names.insert(key, name.clone());
        Some(name)
    }
}
