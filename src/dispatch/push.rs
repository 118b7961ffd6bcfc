//! Content-addressed uploads to a host's agentenv directory: a file lands under a name made of
//! its content hash, through a temporary name and a rename, so a name that exists is always a
//! whole, right file and a second dispatch of the same content sends nothing (the probe finds
//! it by name).

use std::io::Read;
use std::path::Path;
use std::process::Output;

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

/// Makes `remote_dir/name` an executable copy of `local`, then runs `then` (a script, in the
/// same round trip) and returns what it printed. The upload reaches the host's disk under a
/// temporary name and is renamed only once complete.
pub fn push_executable(
    ssh: &SshConnection,
    local: &Path,
    remote_dir: &str,
    name: &str,
    then: &str,
) -> Result<Output> {
    let dir = quote(remote_dir)?;
    let name_q = quote(name)?;
    let mut file =
        std::fs::File::open(local).with_context(|| format!("cannot read {}", local.display()))?;
    let script = format!(
        "set -e\nmkdir -p {dir}\nt={dir}/.{name_q}.part.$$\ntrap 'rm -f \"$t\"' EXIT\ncat > \"$t\"\nchmod 700 \"$t\"\nmv -f \"$t\" {dir}/{name_q}\ntrap - EXIT\n{then}"
    );
    ssh.run_script_with_input(&script, &mut file as &mut dyn Read)
        .with_context(|| format!("cannot upload {} to {}", local.display(), ssh.target()))
}
