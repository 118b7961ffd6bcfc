//! An agent's memory on a dispatch: a session of the agent begun here (its places as of the
//! live memory, the host named in its provenance), its tree sent into the private home on the
//! host, and what the places hold when the session ends brought back into the session's tree
//! and landed three-way, as a parallel local session is. Nothing from the host is run here:
//! the tree comes back as data, unpacked without following any link it holds.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ssh::SshConnection;
use crate::diag::Diagnostic;
use crate::memory::session::{Origin, Session};
use crate::memory::Agent;

/// A memory session out on a host.
pub struct MemoryTrip {
    pub agent: Agent,
    pub session: Session,
}

impl MemoryTrip {
    /// Begins a session of `agent` for a dispatch to `host` (into `container` there) running
    /// `command`; `links` are its profile's links into the places, as the host's copy of the
    /// profile has them.
    pub fn begin(
        agent: Agent,
        host: &str,
        container: Option<&str>,
        command: &[std::ffi::OsString],
        links: crate::memory::tree::ProfileLinks,
    ) -> Result<Self> {
        let origin = Origin {
            project: None,
            backend: match container {
                Some(c) => format!("dispatch, container {c}"),
                None => "dispatch".into(),
            },
            command: crate::memory::provenance::command_line(command),
        };
        let mut session = Session::begin(&agent, origin, None, links)?;
        session.set_host(host)?;
        Ok(Self { agent, session })
    }

    /// The places, relative to the home.
    pub fn places(&self) -> Vec<PathBuf> {
        self.session
            .record
            .places
            .iter()
            .map(|p| p.path.clone())
            .collect()
    }

    /// A tar stream of the session's tree, for the host's private home.
    pub fn pack(&self) -> Result<Vec<u8>> {
        pack_places(&self.session.tree(), &self.places())
    }

    /// Takes the places as the host's session left them (a tar stream of them, relative to its
    /// home) into the session's tree, then lands them.
    pub fn bring_back(self, tar: &[u8]) -> Result<Option<crate::memory::merge::Landed>> {
        let tree = self.session.tree();
        let incoming = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempdir_in(&self.session.dir)
            .context("cannot make room for the memory coming back")?;
        unpack_safely(tar, incoming.path())?;
        for rel in self.places() {
            let old = tree.join(&rel);
            let new = incoming.path().join(&rel);
            if std::fs::symlink_metadata(&old).is_ok() {
                crate::util::remove_tree(&old)
                    .with_context(|| format!("cannot replace {}", old.display()))?;
            }
            if std::fs::symlink_metadata(&new).is_ok() {
                if let Some(parent) = old.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                std::fs::rename(&new, &old)
                    .with_context(|| format!("cannot take {} back", rel.display()))?;
            }
        }
        drop(incoming);
        self.session.end(&self.agent)
    }
}

/// The links `agent`'s profile (here at `local`) makes into its places (its skills), pointing
/// at the profile's copy on the host (`on_host`): they go out in the session's tree and are
/// taken out of it again before it lands, as in a local session.
pub fn profile_links_on_host(
    agent: &Agent,
    local: &Path,
    on_host: &Path,
) -> Result<crate::memory::tree::ProfileLinks> {
    use std::os::unix::ffi::OsStrExt;
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let links = crate::memory::run::profile_links(
        agent,
        &scratch.path().join("home"),
        &scratch.path().join("state"),
    )?;
    let local = local.as_os_str().as_bytes();
    Ok(links
        .into_iter()
        .map(|(rel, target)| match target.strip_prefix(local) {
            Some(rest) => {
                let mut moved = on_host.as_os_str().as_bytes().to_vec();
                moved.extend_from_slice(rest);
                (rel, moved)
            }
            None => (rel, target),
        })
        .collect())
}

/// A tar of `places` (relative to `root`) that exist, links stored as links.
pub fn pack_places(root: &Path, places: &[PathBuf]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    for rel in places {
        let path = root.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            tar.append_dir_all(rel, &path)
        } else {
            tar.append_path_with_name(&path, rel)
        }
        .with_context(|| format!("cannot pack {}", path.display()))?;
    }
    tar.into_inner()
        .context("cannot finish the memory's stream")
}

/// Unpacks `tar` into `dest`: entries that would land outside it (absolute paths, `..`, a
/// path through a link the stream made) are refused by the archive reader; devices, fifos and
/// hard links are not memory and are refused here.
pub fn unpack_safely(tar: &[u8], dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    for entry in archive
        .entries()
        .context("cannot read the memory's stream")?
    {
        let mut entry = entry.context("cannot read the memory's stream")?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(Diagnostic::new(format!(
                "the memory coming back holds {path}, which is neither a file, a directory nor a link"
            ))
            .into());
        }
        if !entry
            .unpack_in(dest)
            .context("cannot unpack the memory coming back")?
        {
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(Diagnostic::new(format!(
                "the memory coming back names a path outside its home: {path}"
            ))
            .into());
        }
    }
    Ok(())
}

/// On the host: a tar of `places` below `home` on stdout (`__remote pack-memory`).
pub fn write_places(home: &Path, places: &[PathBuf]) -> Result<i32> {
    let data = pack_places(home, places)?;
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(&data)
        .context("cannot write the memory")?;
    Ok(0)
}

/// On the host: unpacks a tar from stdin into `dir` (`__remote unpack`).
pub fn read_into(dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut data)
        .context("cannot read the memory")?;
    unpack_safely(&data, dir)?;
    Ok(0)
}

/// Fetches the places from the host's session home.
pub fn fetch_places(
    ssh: &SshConnection,
    remote_bin: &str,
    home: &str,
    places: &[PathBuf],
) -> Result<Vec<u8>> {
    let q = super::ssh::quote;
    let mut script = format!("exec {} __remote pack-memory {}", q(remote_bin)?, q(home)?);
    for p in places {
        script.push(' ');
        script.push_str(&q(&p.to_string_lossy())?);
    }
    script.push('\n');
    Ok(ssh.run_script(&script)?.stdout)
}
