//! A profile on a dispatch: its files sent content-addressed into the host's profile cache
//! (`profiles/profile-<hash>`: a second dispatch of an unchanged profile sends nothing), its
//! tools built here and sent with the toolbox's store paths, and on the host activated into the
//! session's private home by the same engine as at home, the profile shown read-only at its
//! cache path. Its `activate.sh` runs in the session, where `$HOME` is the private home.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::layout::{self, join};
use super::ssh::{quote as q, SshConnection};
use crate::diag::Diagnostic;
use crate::profile::{Profile, ProfileEnv};

/// Directories of a profile that stay home: its version control.
const LEFT_OUT: &[&str] = &[".git", ".hg", ".jj"];

/// A profile ready to go: its files as one tar stream, named by their content.
pub struct ProfileTrip {
    /// The profile here, as its user named it.
    pub local: PathBuf,
    /// Its name in the host's profile cache.
    pub name: String,
    tar: Vec<u8>,
    /// What the profile adds to a shell's environment, in terms of this machine's paths; its
    /// built tools, if any, in `path_append`.
    env: ProfileEnv,
    /// The store path of its built tools, sent with the toolbox.
    pub tools: Option<PathBuf>,
    has_hook: bool,
}

impl ProfileTrip {
    /// Reads the profile at `dir` and builds its tools (once per state of its flake, as at
    /// home; a failed build is a warning and the session goes without them).
    pub fn prepare(dir: &Path, state: &crate::paths::StateDirs, refresh: bool) -> Result<Self> {
        let profile = Profile::load(dir)?;
        let tar = pack_profile(&profile.root)?;
        let hash = blake3::hash(&tar).to_hex();
        let mut env = crate::profile::plan::profile_env(&profile);
        let tools_cache = crate::profile::tools::cache_root(state);
        let tools_bin = crate::profile::tools::cached_tools(&env, &tools_cache, refresh);
        let tools = tools_bin.as_deref().and_then(store_path_of);
        if let Some(bin) = tools_bin {
            env.path_append.push(bin);
        }
        Ok(Self {
            local: profile.root.clone(),
            name: format!("profile-{}", &hash[..32]),
            tar,
            env,
            tools,
            has_hook: profile.hook().is_some(),
        })
    }

    /// Where the profile is on a host whose agentenv directory is `dir`.
    pub fn on_host(&self, dir: &str) -> PathBuf {
        PathBuf::from(join(&join(dir, layout::PROFILES), &self.name))
    }

    /// The profile's environment on that host.
    pub fn env_on_host(&self, dir: &str) -> ProfileEnv {
        self.env.clone().moved(&self.local, &self.on_host(dir))
    }

    /// Lines for the session's start-up script that run `activate.sh` (output to stderr), if
    /// the profile has one: a session's home is new each time, so its activation always runs
    /// it. Its failure ends the session before the command, as at home.
    pub fn hook_lines(&self, dir: &str) -> Result<String> {
        if !self.has_hook {
            return Ok(String::new());
        }
        let at = self.on_host(dir);
        let hook = at.join("activate.sh");
        let words = crate::profile::hook::hook_command(&hook);
        let command = words
            .iter()
            .map(|w| q(&w.to_string_lossy()))
            .collect::<Result<Vec<_>>>()?
            .join(" ");
        let at_q = q(&at.to_string_lossy())?;
        let hook_q = q(&hook.to_string_lossy())?;
        Ok(format!(
            "if ! (cd {at_q} && AGENTENV_PROFILE={at_q} {command}) </dev/null >&2; then\n  \
             echo \"agentenv: \"{hook_q}\" failed; the profile's links are in place, the command did not run\" >&2\n  \
             exit 1\nfi\n"
        ))
    }

    /// Sends the profile's files unless the host's cache (`present`: its names) has them.
    /// Returns the bytes sent.
    pub fn send(
        &self,
        ssh: &SshConnection,
        bin: &str,
        dir: &str,
        present: &[String],
    ) -> Result<u64> {
        if present.contains(&self.name) {
            return Ok(0);
        }
        ssh.run_script_with_input(
            &format!(
                "exec {} __remote unpack-profile {} {}\n",
                q(bin)?,
                q(dir)?,
                q(&self.name)?
            ),
            &mut &self.tar[..],
        )
        .with_context(|| format!("cannot send the profile {}", self.local.display()))?;
        Ok(self.tar.len() as u64)
    }
}

/// The store path a path below the store lies in.
fn store_path_of(path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix("/nix/store").ok()?;
    let first = rest.components().next()?;
    Some(Path::new("/nix/store").join(first))
}

/// The profile's files as a tar stream that depends only on their names, kinds, executable
/// bits and contents (sorted, no owners or times), links kept as links.
fn pack_profile(root: &Path) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot list {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        // Depth first, in name order: directories go on the stack last-first.
        let mut subdirs = Vec::new();
        for e in entries {
            let name = e.file_name();
            if rel.as_os_str().is_empty() && LEFT_OUT.iter().any(|l| name == *l) {
                continue;
            }
            let path = e.path();
            let rel_path = rel.join(&name);
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                tar.append_path_with_name(&path, &rel_path)
                    .with_context(|| format!("cannot pack {}", path.display()))?;
                subdirs.push(rel_path);
            } else if meta.is_file() || meta.file_type().is_symlink() {
                tar.append_path_with_name(&path, &rel_path)
                    .with_context(|| format!("cannot pack {}", path.display()))?;
            } else {
                tracing::debug!(path = %path.display(), "not a file, directory or link: stays home");
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    tar.into_inner()
        .context("cannot finish the profile's stream")
}

/// On the host: a profile's tar stream on stdin into `DIR/profiles/NAME`, which appears only
/// once whole (`__remote unpack-profile`).
pub fn unpack_profile(dir: &Path, name: &str) -> Result<i32> {
    if !name
        .strip_prefix("profile-")
        .is_some_and(crate::util::is_plain_id)
    {
        anyhow::bail!("not a profile's name: {name:?}");
    }
    let profiles = dir.join(layout::PROFILES);
    std::fs::create_dir_all(&profiles)
        .with_context(|| format!("cannot create {}", profiles.display()))?;
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut data)
        .context("cannot read the profile")?;
    let incoming = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(&profiles)
        .with_context(|| format!("cannot create a directory in {}", profiles.display()))?;
    super::memory_trip::unpack_safely(&data, incoming.path())
        .map_err(|e| e.context(Diagnostic::new("cannot unpack the profile")))?;
    let dest = profiles.join(name);
    if std::fs::symlink_metadata(&dest).is_err() {
        let path = incoming.keep();
        std::fs::rename(&path, &dest)
            .with_context(|| format!("cannot move the profile to {}", dest.display()))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_depends_on_content_only() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (root, order) in [(a.path(), ["x", "y"]), (b.path(), ["y", "x"])] {
            for n in order {
                std::fs::create_dir_all(root.join("home").join(n)).unwrap();
                std::fs::write(root.join("home").join(n).join("rc"), n).unwrap();
            }
            std::fs::create_dir_all(root.join(".git")).unwrap();
            std::fs::write(root.join(".git/HEAD"), root.to_string_lossy().as_bytes()).unwrap();
        }
        let ta = pack_profile(a.path()).unwrap();
        assert_eq!(ta, pack_profile(b.path()).unwrap());
        std::fs::write(b.path().join("home/x/rc"), "changed").unwrap();
        assert_ne!(ta, pack_profile(b.path()).unwrap());
        // Its version control stays home.
        let mut archive = tar::Archive::new(&ta[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".git")), "{names:?}");
        assert!(names.contains(&"home/x/rc".to_string()), "{names:?}");
    }

    #[test]
    fn tools_are_named_by_their_store_path() {
        assert_eq!(
            store_path_of(Path::new("/nix/store/abc-tools/bin")),
            Some(PathBuf::from("/nix/store/abc-tools"))
        );
        assert_eq!(store_path_of(Path::new("/usr/bin")), None);
    }
}
