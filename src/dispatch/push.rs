//! Content-addressed uploads to a host's agentenv directory: a file lands under a name made of
//! its content hash, through a temporary name and a rename, so a name that exists is always a
//! whole, right file and a second dispatch of the same content sends nothing.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use super::ssh::{quote, SshConnection};

/// The name a file of this content has in a content cache: `PREFIX-<first 32 hex of blake3>`.
pub fn content_name(prefix: &str, path: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let hex = hasher.finalize().to_hex();
    Ok(format!("{prefix}-{}", &hex[..32]))
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The host had it already.
    Present,
    Sent {
        bytes: u64,
    },
}

/// Makes `remote_dir/name` an executable copy of `local` unless the host has it. The upload
/// reaches the host's disk under a temporary name and is renamed only once complete.
pub fn push_executable(
    ssh: &SshConnection,
    local: &Path,
    remote_dir: &str,
    name: &str,
) -> Result<Pushed> {
    let dir = quote(remote_dir)?;
    let name_q = quote(name)?;
    let check = format!("[ -x {dir}/{name_q} ] && echo present || echo absent\n");
    let out = ssh.run_script(&check)?;
    if String::from_utf8_lossy(&out.stdout).trim() == "present" {
        return Ok(Pushed::Present);
    }
    let mut file =
        std::fs::File::open(local).with_context(|| format!("cannot read {}", local.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let script = format!(
        "set -e\nmkdir -p {dir}\nt={dir}/.{name_q}.part.$$\ntrap 'rm -f \"$t\"' EXIT\ncat > \"$t\"\nchmod 700 \"$t\"\nmv -f \"$t\" {dir}/{name_q}\ntrap - EXIT\n"
    );
    ssh.run_script_with_input(&script, &mut file as &mut dyn Read)
        .with_context(|| format!("cannot upload {} to {}", local.display(), ssh.target()))?;
    Ok(Pushed::Sent { bytes })
}
