//! Dispatch: an agent with its workstation sent to a Linux host that has only sshd and a POSIX
//! `sh`. `target` names the host, `ssh` keeps one multiplexed connection, `probe` learns what
//! the host is and where agentenv may work there, `binary` and `push` put a static agentenv
//! there by content hash, `store_sync` sends the toolbox's store paths the host lacks,
//! `profile_trip` the profile, `session` runs one dispatch in the view `views` plans
//! (`round_trip` is its trip to the host), and `record` keeps what this machine knows of it
//! until it has ended (`resume`: `--attach`, `--collect`); `remote`, `host_view`, `isolated`,
//! `container`, `away` and `detached` are agentenv's side on the host.

#[cfg(target_os = "linux")]
pub mod away;
pub mod binary;
#[cfg(target_os = "linux")]
pub mod container;
#[cfg(target_os = "linux")]
pub mod detached;
#[cfg(target_os = "linux")]
pub mod host_view;
#[cfg(target_os = "linux")]
pub mod isolated;
pub mod layout;
#[cfg(target_os = "linux")]
pub mod memory_trip;
pub mod probe;
#[cfg(target_os = "linux")]
pub mod profile_trip;
pub mod push;
pub mod record;
#[cfg(target_os = "linux")]
pub mod remote;
#[cfg(target_os = "linux")]
pub mod resume;
#[cfg(target_os = "linux")]
pub mod round_trip;
#[cfg(target_os = "linux")]
pub mod session;
pub mod ssh;
pub mod store_sync;
pub mod target;
#[cfg(target_os = "linux")]
pub mod views;
