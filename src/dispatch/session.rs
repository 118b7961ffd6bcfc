//! One dispatch, from the dispatching side: the toolbox evaluated here, the host probed, the
//! static binary and the store paths the host lacks sent, the session run over ssh stdio with
//! the guest agent's protocol (exit codes and signals carried in it, not by ssh), then the
//! host cleaned and the cleanup checked.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::binary::{binary_for, offered};
use super::layout::{self, join};
use super::memory_trip::{fetch_places, profile_links_on_host, MemoryTrip};
use super::probe::{connect_and_probe, Arch, HostFacts};
use super::profile_trip::ProfileTrip;
use super::push::{content_name, push_executable};
use super::record::DispatchRecord;
use super::remote::{CleanReport, RemoteFacts, SessionProfile, SessionSpec};
use super::round_trip::{clean_args, run_session, Cleanup};
use super::ssh::{quote as q, SshConnection};
use super::store_sync::{closure_cached, sync_closure};
use super::target::Target;
use super::views::{exec_spec, plan_view, HostProfile, Isolation, PlannedView, SessionPaths};
use crate::diag::Diagnostic;
use crate::nix::devenv::DevEnv;
use crate::paths::StateDirs;

/// What to dispatch.
pub struct DispatchRequest {
    pub target: Target,
    pub devenv: DevEnv,
    pub command: Vec<OsString>,
    pub remote_dir: Option<String>,
    /// The agent whose memory goes along and comes back.
    pub agent: Option<crate::memory::Agent>,
    /// Leave the command running on the host and return (`--detach`).
    pub detach: bool,
    /// Remove the content caches from the host too when the session ends (`--clean`).
    pub clean_caches: bool,
    pub isolation: Isolation,
    /// The profile that goes along (its tools built already).
    pub profile: Option<ProfileTrip>,
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A connected host, with agentenv's binary in place: `dir` is agentenv's directory there.
pub(super) struct Host {
    pub ssh: SshConnection,
    pub dir: String,
    pub bin: String,
}

impl Host {
    /// Connects again to the host of a recorded session; its binary must still be there.
    pub fn reconnect(record: &DispatchRecord) -> Result<Self> {
        let target = Target::parse(&record.target).map_err(|e| {
            Diagnostic::new(format!("cannot read the target {}: {e}", record.target))
        })?;
        let ssh = SshConnection::open(&target)?;
        let bin = q(&record.bin)?;
        ssh.run_script(&format!("test -x {bin}\n")).map_err(|_| {
            Diagnostic::new(format!(
                "agentenv's directory on {} is gone ({})",
                record.target, record.dir
            ))
            .hint("what the session left there went with it")
        })?;
        Ok(Self {
            ssh,
            dir: record.dir.clone(),
            bin: record.bin.clone(),
        })
    }

    /// The directory of session `id` on the host.
    pub fn session_dir(&self, id: &str) -> String {
        join(&self.dir, &format!("{}/{id}", layout::SESSIONS))
    }

    /// Where agentenv is on the host, for the session whose directory is `session`.
    pub fn paths<'a>(&'a self, session: &'a str) -> SessionPaths<'a> {
        SessionPaths {
            dir: &self.dir,
            bin: &self.bin,
            session,
        }
    }

    pub fn run_json<T: serde::de::DeserializeOwned>(&self, args: &str) -> Result<T> {
        let out = self
            .ssh
            .run_script(&format!("exec {} __remote {args}\n", q(&self.bin)?))?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "agentenv on {} answered what it should not: {}",
                self.ssh.target(),
                String::from_utf8_lossy(&out.stdout).trim()
            )
        })
    }
}

/// Runs the request; returns the command's exit code.
pub fn dispatch(req: &DispatchRequest, state: &StateDirs) -> Result<i32> {
    if req.detach {
        super::resume::check_detachable(&req.command)?;
    }
    // The closure is listed (by nix, the first time) while ssh connects.
    let mut paths = vec![req.devenv.store_path.clone(), req.devenv.shell.clone()];
    paths.extend(req.profile.as_ref().and_then(|p| p.tools.clone()));
    let closures = state.cache.join("dispatch-closures");
    let closure = std::thread::spawn(move || closure_cached(&paths, &closures));
    let offered = offered(state);
    let names: Vec<(Arch, String)> = offered.iter().map(|(a, _, n)| (*a, n.clone())).collect();
    let (ssh, facts) = connect_and_probe(&req.target, req.remote_dir.as_deref(), &names)?;
    tracing::debug!(?facts, "host probed");
    let (host, remote) = match &facts.agent_facts {
        Some(json) => {
            let name = names.iter().find(|(a, _)| *a == facts.arch).map(|(_, n)| n);
            let host = Host {
                bin: join(
                    &join(&facts.dir, layout::BIN),
                    name.map_or("", |n| n.as_str()),
                ),
                ssh,
                dir: facts.dir.clone(),
            };
            tracing::info!("agentenv is on the host already");
            let remote = parse_facts(&host, json.as_bytes())?;
            (host, remote)
        }
        None => push_binary(ssh, &facts, &offered, state)?,
    };
    check_view(&host, &remote, &req.isolation)?;
    let closure = closure
        .join()
        .map_err(|_| anyhow::anyhow!("listing the toolbox's store paths failed"))??;
    let present = remote.store.iter().cloned().collect();
    let stats = sync_closure(&host.ssh, &closure, &present, &host.bin, &host.dir)?;
    tracing::info!(
        "sent {} of {} store paths ({})",
        stats.paths_sent,
        stats.paths_total,
        human_bytes(stats.bytes_sent)
    );
    let profile = match &req.profile {
        Some(trip) => {
            match trip.send(&host.ssh, &host.bin, &host.dir, &remote.profiles)? {
                0 => tracing::info!("the profile is on the host already ({})", trip.name),
                n => tracing::info!("sent the profile ({})", human_bytes(n)),
            }
            Some(HostProfile {
                dir: trip.on_host(&host.dir),
                env: trip.env_on_host(&host.dir),
                hook: trip.hook_lines(&host.dir)?,
            })
        }
        None => None,
    };

    let id = layout::new_session_id();
    // The container it works in, named in the record and the memory's provenance.
    let container = req.isolation.container();
    let trip = match &req.agent {
        Some(agent) => {
            let links = match (&req.profile, &profile) {
                (Some(trip), Some(on_host)) => {
                    profile_links_on_host(agent, &trip.local, &on_host.dir)?
                }
                _ => Default::default(),
            };
            Some(MemoryTrip::begin(
                agent.clone(),
                &req.target.to_string(),
                container,
                &req.command,
                links,
            )?)
        }
        None => None,
    };
    let record = DispatchRecord {
        id: id.clone(),
        target: req.target.to_string(),
        dir: host.dir.clone(),
        bin: host.bin.clone(),
        agent: trip.as_ref().map(|t| t.agent.name().to_string()),
        memory_session: trip.as_ref().map(|t| t.session.id().to_string()),
        command: crate::memory::provenance::command_line(&req.command),
        started: crate::memory::provenance::now(),
        detached: req.detach,
        container: container.map(str::to_string),
    };
    record.save(state)?;
    let _held = record.hold(state)?;
    let (view, setup) = plan_session(&host, &remote, req, &id, profile.as_ref(), trip.as_ref())?;
    // The session's directory is made in the round trip that next runs on the host.
    let setup = match &trip {
        Some(trip) => {
            let tar = trip.pack()?;
            let dq = q(&host.session_dir(&id))?;
            host.ssh.run_script_with_input(
                &format!("{setup}exec {} __remote unpack {dq}/home\n", q(&host.bin)?),
                &mut &tar[..],
            )?;
            String::new()
        }
        None => setup,
    };
    let exec = exec_spec(
        &view,
        &req.devenv,
        &req.command,
        &remote,
        host.paths(&host.session_dir(&id)),
        &host.ssh.target().to_string(),
        profile.as_ref(),
    );
    if req.detach {
        super::resume::start_detached(&host, &id, &setup, &exec)?;
        println!("{id}");
        eprintln!(
            "agentenv: the command runs on {} as {id}; `agentenv dispatch --attach {id}` follows it to its end and brings back what it learned",
            req.target
        );
        return Ok(0);
    }
    let clean = Cleanup {
        in_session: trip.is_none(),
        caches: req.clean_caches,
    };
    let ran = run_session(&host, &id, &setup, exec, clean);
    if ran.is_err() && !host.ssh.check() {
        // Nothing comes back half: what the session learned waits on the host.
        return ran.map(|r| r.code).map_err(|e| {
            let d = Diagnostic::new(format!(
                "lost the connection to {} before the command ended",
                req.target
            ))
            .detail(format!("{e:#}"))
            .hint(format!(
                "the session's directory stays there: `agentenv dispatch --collect {}` brings back what it left",
                req.target
            ));
            d.into()
        });
    }
    let (code, cleaned) = match ran {
        Ok(r) => (Ok(r.code), r.cleaned),
        Err(e) => (Err(e), None),
    };
    let finished = finish_with(&host, &record, trip, state, cleaned, clean.caches);
    // The command's exit code stands; what the cleanup found is said loudly beside it.
    if let Err(c) = finished {
        eprint!(
            "{}",
            crate::diag::render(&c).replacen("error:", "warning:", 1)
        );
    }
    code
}

/// What agentenv on the host said of itself, read as its facts.
fn parse_facts(host: &Host, json: &[u8]) -> Result<RemoteFacts> {
    serde_json::from_slice(json).with_context(|| {
        format!(
            "agentenv on {} answered what it should not: {}",
            host.ssh.target(),
            String::from_utf8_lossy(json).trim()
        )
    })
}

/// Puts agentenv's binary for the host's architecture in place, and asks it for the host's
/// facts in the same round trip.
fn push_binary(
    ssh: SshConnection,
    facts: &HostFacts,
    offered: &[(Arch, PathBuf, String)],
    state: &StateDirs,
) -> Result<(Host, RemoteFacts)> {
    let (local_bin, name) = match offered.iter().find(|(a, _, _)| *a == facts.arch) {
        Some((_, path, name)) => (path.clone(), name.clone()),
        None => {
            // Says why there is none, and how to make one.
            let path = binary_for(state, facts.arch)?;
            let name = content_name("agentenv", &path)?;
            (path, name)
        }
    };
    let bin_dir = join(&facts.dir, layout::BIN);
    let bin = join(&bin_dir, &name);
    // The builds sent before go, unless a session (running, detached, or waiting to be
    // collected) may still need its own.
    let sessions = q(&join(&facts.dir, layout::SESSIONS))?;
    let then = format!(
        "if [ ! -d {sessions} ]; then\n  for f in {bd}/agentenv-*; do [ \"$f\" = {b} ] || rm -f \"$f\"; done\nfi\nexec {b} __remote facts {}\n",
        q(&facts.dir)?,
        bd = q(&bin_dir)?,
        b = q(&bin)?,
    );
    let out = push_executable(&ssh, &local_bin, &bin_dir, &name, &then)?;
    let bytes = std::fs::metadata(&local_bin).map(|m| m.len()).unwrap_or(0);
    tracing::info!("sent agentenv ({}) to {}", human_bytes(bytes), ssh.target());
    let host = Host {
        bin,
        ssh,
        dir: facts.dir.clone(),
    };
    let remote = parse_facts(&host, &out.stdout)?;
    Ok((host, remote))
}

/// Brings what a session learned back (when it went as an agent), removes the session from
/// the host and checks what remains, and forgets it here. The memory lands before the host
/// is cleaned: should the landing fail, the learnings are still on the host.
pub(super) fn finish(
    host: &Host,
    record: &DispatchRecord,
    trip: Option<MemoryTrip>,
    state: &StateDirs,
) -> Result<()> {
    finish_with(host, record, trip, state, None, false)
}

/// `finish`, where `cleaned` is what the host reported when the session's own round trip
/// cleaned up after it already.
fn finish_with(
    host: &Host,
    record: &DispatchRecord,
    trip: Option<MemoryTrip>,
    state: &StateDirs,
    cleaned: Option<CleanReport>,
    caches: bool,
) -> Result<()> {
    if let Some(trip) = trip {
        bring_memory_back(host, &record.id, trip)?;
    }
    let report = match cleaned {
        Some(report) => report,
        None => host.run_json(&clean_args(host, &record.id, caches)?)?,
    };
    record.remove(state)?;
    check_clean(host, &report)
}

/// Whether the host gives the session's view what it needs: refused user namespaces are an
/// error, unless the session is to run without any (said once, loudly: never a silent
/// fallback); a container needs the ssh user's privilege to attach.
fn check_view(host: &Host, remote: &RemoteFacts, isolation: &Isolation) -> Result<()> {
    match (&remote.userns_refused, isolation) {
        (_, Isolation::Container(id)) => match remote.attach_missing.as_slice() {
            [] => Ok(()),
            missing => Err(Diagnostic::new(format!(
                "attaching to {id} on {} needs {}, which your ssh session there does not have",
                host.ssh.target(),
                missing.join(", ")
            ))
            .detail("joining a container's namespaces and mounting the toolbox in a copy of its mount namespace are privileged")
            .hint(format!(
                "dispatch as root there: `agentenv dispatch --container {id} {}`",
                super::target::Target {
                    user: Some("root".into()),
                    ..host.ssh.target().clone()
                }
            ))
            .into()),
        },
        (_, Isolation::NoNamespaces) => {
            let store = join(&host.dir, layout::STORE);
            eprint!(
                "{}",
                crate::diag::render_warning(&anyhow::Error::new(
                    Diagnostic::new(format!(
                        "--no-namespaces: the session runs directly on {}, as you, seeing and touching the host",
                        host.ssh.target()
                    ))
                    .detail(format!(
                        "the toolbox is on PATH from {store}; there is no /nix, so programs that need /nix paths fail"
                    ))
                ))
            );
            Ok(())
        }
        (Some(refused), _) => Err(refused
            .clone()
            .hint("dispatch shows the toolbox at /nix in a private mount namespace, which needs user namespaces on the host")
            .hint("or pass `--no-namespaces` to run the session directly on the host, the toolbox only on PATH (no /nix)")
            .into()),
        (None, _) => Ok(()),
    }
}

/// Plans the session's view, and the script that makes its directory on the host (its spec,
/// its private home): run first in the next round trip to the host.
fn plan_session(
    host: &Host,
    remote: &RemoteFacts,
    req: &DispatchRequest,
    id: &str,
    profile: Option<&HostProfile>,
    trip: Option<&MemoryTrip>,
) -> Result<(PlannedView, String)> {
    let dir = host.session_dir(id);
    let view = plan_view(
        &req.isolation,
        host.paths(&dir),
        remote,
        &req.devenv,
        profile,
        trip.is_some(),
    );
    let spec = SessionSpec {
        view: view.view.clone(),
        profile: profile.map(|p| SessionProfile {
            dir: p.dir.clone(),
            except: trip.map(MemoryTrip::places).unwrap_or_default(),
        }),
    };
    let spec_json = serde_json::to_string(&spec)?;
    let dq = q(&dir)?;
    let dirs = view
        .dirs
        .iter()
        .map(|d| Ok(format!("{dq}/{}", q(&d.to_string_lossy())?)))
        .collect::<Result<Vec<String>>>()?;
    let setup = format!(
        "umask 077\nmkdir -p {} || exit\nprintf '%s' {} > {dq}/{} || exit\numask 022\n",
        dirs.join(" "),
        q(&spec_json)?,
        layout::SPEC
    );
    Ok((view, setup))
}

/// Brings the places of the session's home on the host back into the memory session and
/// lands them.
pub(super) fn bring_memory_back(host: &Host, id: &str, trip: MemoryTrip) -> Result<()> {
    let home = join(&host.session_dir(id), "home");
    let name = trip.agent.name().to_string();
    let tar = fetch_places(&host.ssh, &host.bin, &home, &trip.places())?;
    match trip.bring_back(&tar)? {
        Some(landed) if !landed.conflicts.is_empty() => eprintln!(
            "agentenv: {name} learned on {} what conflicts with its memory here: kept beside the file, see `agentenv memory status {name}`",
            host.ssh.target()
        ),
        Some(landed) => tracing::info!("memory of {name} landed ({})", landed.commit),
        None => tracing::info!("{name} learned nothing new on {}", host.ssh.target()),
    }
    Ok(())
}

/// Checks what the host reported after removing the session's directory: only the caches
/// may remain.
fn check_clean(host: &Host, report: &CleanReport) -> Result<()> {
    if !report.other_sessions.is_empty() {
        eprintln!(
            "agentenv: the content cache stays on {}: {} other session(s) there ({}); `agentenv dispatch --collect {}` ends what they left",
            host.ssh.target(),
            report.other_sessions.len(),
            report.other_sessions.join(", "),
            host.ssh.target()
        );
    }
    let left = CleanReport {
        other_sessions: Vec::new(),
        ..report.clone()
    };
    if left == CleanReport::default() {
        return Ok(());
    }
    let mut d = Diagnostic::new(format!(
        "the session left something on {}",
        host.ssh.target()
    ));
    for e in &report.stray_entries {
        d = d.detail(format!("file: {}", join(&host.dir, e)));
    }
    for p in &report.processes {
        d = d.detail(format!("process: {p}"));
    }
    Err(d.into())
}
