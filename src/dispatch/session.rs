//! One dispatch, from the dispatching side: the toolbox evaluated here, the host probed, the
//! static binary and the store paths the host lacks sent, the session run over ssh stdio with
//! the guest agent's protocol (exit codes and signals carried in it, not by ssh), then the
//! host cleaned and the cleanup checked.

use std::ffi::OsString;
use std::io::IsTerminal;

use anyhow::{Context, Result};

use super::binary::binary_for;
use super::layout::{self, join};
use super::memory_trip::{fetch_places, MemoryTrip};
use super::probe::{probe_host, HostFacts};
use super::push::{content_name, push_executable, Pushed};
use super::record::DispatchRecord;
use super::remote::{CleanReport, RemoteFacts, SessionSpec};
use super::ssh::{collect_stderr, host_said, quote as q, SshConnection};
use super::store_sync::{closure_of, sync_closure};
use super::target::Target;
use super::views::{exec_spec, plan_view, Isolation, PlannedView};
use crate::diag::Diagnostic;
use crate::nix::devenv::DevEnv;
use crate::paths::StateDirs;
use crate::proto::message::ExecSpec;

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
    pub isolation: Isolation,
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
    let ssh = SshConnection::open(&req.target)?;
    let facts = probe_host(&ssh, req.remote_dir.as_deref())?;
    tracing::debug!(?facts, "host probed");
    let host = push_binary(ssh, &facts, state)?;
    let remote: RemoteFacts = host.run_json(&format!("facts {}", q(&host.dir)?))?;
    check_namespaces(&host, &remote, req.isolation)?;
    let closure = closure_of(&[req.devenv.store_path.clone(), req.devenv.shell.clone()])?;
    let present = remote.store.iter().cloned().collect();
    let stats = sync_closure(&host.ssh, &closure, &present, &host.bin, &host.dir)?;
    tracing::info!(
        "sent {} of {} store paths ({})",
        stats.paths_sent,
        stats.paths_total,
        human_bytes(stats.bytes_sent)
    );

    let id = layout::new_session_id();
    let trip = match &req.agent {
        Some(agent) => Some(MemoryTrip::begin(
            agent.clone(),
            &req.target.to_string(),
            &req.command,
        )?),
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
    };
    record.save(state)?;
    let _held = record.hold(state)?;
    let view = prepare_session(&host, &remote, req, &id, trip.as_ref())?;
    let exec = exec_spec(
        &view,
        &req.devenv,
        &req.command,
        &remote,
        &host.dir,
        &host.ssh.target().to_string(),
    );
    if req.detach {
        super::resume::start_detached(&host, &id, &exec, &req.command)?;
        println!("{id}");
        eprintln!(
            "agentenv: the command runs on {} as {id}; `agentenv dispatch --attach {id}` follows it to its end and brings back what it learned",
            req.target
        );
        return Ok(0);
    }
    let code = run_session(&host, &id, exec);
    if code.is_err() && !host.ssh.check() {
        // Nothing comes back half: what the session learned waits on the host.
        return code.map_err(|e| {
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
    let finished = finish(&host, &record, trip, state);
    // The command's exit code stands; what the cleanup found is said loudly beside it.
    if let Err(c) = finished {
        eprint!(
            "{}",
            crate::diag::render(&c).replacen("error:", "warning:", 1)
        );
    }
    code
}

/// Puts agentenv's binary for the host's architecture in place (sent only if its content
/// differs from the host's copy).
fn push_binary(ssh: SshConnection, facts: &HostFacts, state: &StateDirs) -> Result<Host> {
    let local_bin = binary_for(state, facts.arch)?;
    let name = content_name("agentenv", &local_bin)?;
    let bin_dir = join(&facts.dir, layout::BIN);
    match push_executable(&ssh, &local_bin, &bin_dir, &name)? {
        Pushed::Present => tracing::info!("agentenv is on the host already ({name})"),
        Pushed::Sent { bytes } => {
            tracing::info!("sent agentenv ({}) to {}", human_bytes(bytes), ssh.target())
        }
    }
    Ok(Host {
        bin: format!("{bin_dir}/{name}"),
        ssh,
        dir: facts.dir.clone(),
    })
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
    if let Some(trip) = trip {
        bring_memory_back(host, &record.id, trip)?;
    }
    let cleaned = clean_session(host, &record.id);
    record.remove(state)?;
    cleaned
}

/// Whether the host gives the session the namespaces it needs: refused user namespaces are an
/// error, unless the session is to run without any (said once, loudly: never a silent
/// fallback).
fn check_namespaces(host: &Host, remote: &RemoteFacts, isolation: Isolation) -> Result<()> {
    match (&remote.userns_refused, isolation) {
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

/// Makes the session's directory on the host: its spec, its private home (with the agent's
/// memory, when it goes as one). Returns the view planned for it.
fn prepare_session(
    host: &Host,
    remote: &RemoteFacts,
    req: &DispatchRequest,
    id: &str,
    trip: Option<&MemoryTrip>,
) -> Result<PlannedView> {
    let dir = host.session_dir(id);
    let view = plan_view(req.isolation, &host.dir, &dir, remote, &req.devenv);
    let spec = SessionSpec {
        view: view.view.clone(),
    };
    let spec_json = serde_json::to_vec(&spec)?;
    let dq = q(&dir)?;
    let dirs: Vec<String> = view.dirs.iter().map(|d| format!("{dq}/{d}")).collect();
    host.ssh.run_script_with_input(
        &format!(
            "set -e\numask 077\nmkdir -p {}\ncat > {dq}/spec.json\n",
            dirs.join(" ")
        ),
        &mut &spec_json[..],
    )?;
    if let Some(trip) = trip {
        let tar = trip.pack()?;
        host.ssh.run_script_with_input(
            &format!("exec {} __remote unpack {dq}/home\n", q(&host.bin)?),
            &mut &tar[..],
        )?;
    }
    Ok(view)
}

/// Runs the session's agent over ssh stdio and the command through it.
fn run_session(host: &Host, id: &str, exec: ExecSpec) -> Result<i32> {
    let dq = q(&host.session_dir(id))?;
    let forward_stdin = exec.tty.is_some() || !std::io::stdin().is_terminal();
    let mut child = host.ssh.spawn_script(&format!(
        "exec {} __remote session {dq}/spec.json\n",
        q(&host.bin)?
    ))?;
    let stdin = child.stdin.take().context("ssh has no stdin")?;
    let stdout = child.stdout.take().context("ssh has no stdout")?;
    // What agentenv on the host says about itself (not the command's stderr: that comes in
    // frames) is kept for the error, if there is one.
    let said = collect_stderr(&mut child)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let stdin = tokio::process::ChildStdin::from_std(stdin)?;
        let stdout = tokio::process::ChildStdout::from_std(stdout)?;
        let stream: Box<dyn crate::transport::Transport> = Box::new(tokio::io::join(stdout, stdin));
        let mut client = crate::proto::client::AgentClient::over(stream).await?;
        client.exec(exec, forward_stdin).await
    });
    rt.shutdown_background();
    let _ = child.kill();
    let _ = child.wait();
    let said = said.join().unwrap_or_default();
    match result {
        Ok(code) => {
            if !said.trim().is_empty() {
                eprint!("{said}");
            }
            Ok(code)
        }
        Err(e) => {
            let d = Diagnostic::new(format!(
                "the session on {} ended without an exit status",
                host.ssh.target()
            ));
            Err(anyhow::Error::new(
                host_said(d, &said).detail(format!("{e:#}")),
            ))
        }
    }
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

/// Removes the session's directory on the host and checks what remains: only the caches.
fn clean_session(host: &Host, id: &str) -> Result<()> {
    let report: CleanReport = host.run_json(&format!("clean {} {id}", q(&host.dir)?))?;
    if report == CleanReport::default() {
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
