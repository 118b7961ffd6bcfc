//! `agentenv dispatch [--flake REF] [--profile DIR] [--remote-dir DIR] [--isolated |
//! --container ID | --no-namespaces] TARGET [-- COMMAND...]`: sends the toolbox, the profile
//! (and agentenv itself) to a Linux host over ssh and runs a shell or a command there, on the
//! host as it is (or sandboxed, in a container there, or bare); `__remote` is what agentenv
//! runs on the host.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;

use crate::cli::current_dir;
use crate::diag::Diagnostic;
use crate::dispatch::session::{dispatch, DispatchRequest};
use crate::dispatch::target::Target;
use crate::dispatch::views::Isolation;
use crate::nix::devenv::load_or_evaluate;
use crate::nix::flake::FlakeTarget;
use crate::paths::StateDirs;

pub const USAGE_FIRST: &str = "\
$ agentenv dispatch box                  a shell on `box` with this project's tools
$ agentenv dispatch ana@10.0.0.7:2222 -- make -C /srv/app check
$ agentenv dispatch --flake ~/tools box -- htop
$ agentenv dispatch --profile ~/config box   ...with your dotfiles, skills and tools there
$ agentenv dispatch --agent ana --detach box -- make soak   prints an ID and returns
$ agentenv dispatch --attach ID          follows it to its end, brings back what it learned
$ agentenv dispatch --isolated box       the same, seeing nothing of the host
$ agentenv dispatch --container web root@box   in container `web` on `box`, as attach there
$ agentenv dispatch --collect box        bring back what sessions left on `box`";

/// Options of `agentenv dispatch`.
#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    /// The flake whose dev shell is the toolbox; default: the flake around the current directory.
    #[arg(long, value_name = "PATH[#NAME]")]
    pub flake: Option<String>,

    /// A directory on the host where agentenv may write and run programs (default: the first of
    /// $XDG_RUNTIME_DIR/agentenv, ~/.agentenv, /var/tmp, /tmp, /dev/shm that allows it).
    #[arg(long, value_name = "DIR")]
    pub remote_dir: Option<String>,

    /// A profile (dotfiles, skills, tools) for the session, activated into its private home on
    /// the host and shown read-only there; default: $AGENTENV_PROFILE, or `profile = "..."` in
    /// config.toml. Its files are sent once (by content), its tools built here and sent with
    /// the toolbox. An agent brings its own.
    #[arg(long, value_name = "DIR", env = "AGENTENV_PROFILE")]
    pub profile: Option<PathBuf>,

    /// No profile, whatever --profile, $AGENTENV_PROFILE or config.toml say.
    #[arg(long, conflicts_with = "agent")]
    pub no_profile: bool,

    /// When the session ends, remove the content cache from the host too (agentenv's binary,
    /// the store paths and profiles it keeps there for the next dispatch), and agentenv's
    /// directory with it: nothing of agentenv is left. Kept while another session is there.
    #[arg(long, conflicts_with = "detach")]
    pub clean: bool,

    /// Evaluate the toolbox again even if nothing it depends on changed.
    #[arg(long)]
    pub refresh: bool,

    /// Go as this agent (see `agentenv agent new`): its memory is writable on the host at
    /// ~/.claude/CLAUDE.md, ~/.claude/skills/, ~/.codex/AGENTS.md and ~/.agent-memory/, and
    /// what it learned there comes back and is merged into its history when the session ends.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,

    /// Leave the command running on the host and return at once, printing its id; its output
    /// is kept there. `--attach ID` follows it later; `agentenv ps` lists it.
    #[arg(long, conflicts_with_all = ["attach", "collect", "isolated"])]
    pub detach: bool,

    /// Follow a detached session's output to its end, then bring back what it learned and
    /// clean the host; exits with its command's exit code. Ctrl-C leaves it running.
    #[arg(long, value_name = "ID", conflicts_with_all = ["collect", "target"])]
    pub attach: Option<String>,

    /// Bring back what sessions on TARGET left there (a lost connection, a detached command
    /// that has ended): their agents' memory merged here, their directories (and any process
    /// of a lost one still running) removed there.
    #[arg(long)]
    pub collect: bool,
    /// Run in the namespace sandbox of `agentenv .` instead, for work that must not see or
    /// touch the host: the toolbox at /nix, a private home, the work directory /work (empty at
    /// the start, where commands start; it goes when the session ends) and a generated /etc
    /// (with the host's DNS servers, CA certificates and time zone); nothing else of the
    /// host's files or processes. The network is the host's.
    #[arg(long, conflicts_with = "no_namespaces")]
    pub isolated: bool,

    /// Work in this container on the host instead, as `agentenv attach` does there: its
    /// files, processes and network, with the toolbox at /nix and the profile and memory in a
    /// private home at its $HOME, the container left as it was. ID is a container's id or
    /// name (or a unique prefix) as the host's docker, podman or containerd know it, or
    /// `pid:N`. Needs root on the host: dispatch as root@HOST.
    #[arg(
        long,
        value_name = "ID",
        conflicts_with_all = ["isolated", "no_namespaces"],
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub container: Option<String>,

    /// Where the host refuses user namespaces: run directly on the host, no namespace at all,
    /// with the toolbox on PATH from agentenv's directory there. There is no /nix, so only
    /// programs that need no /nix path work (static ones); $HOME is the session's own
    /// directory, and a process that leaves its process group (setsid, a daemon) outlives the
    /// session.
    #[arg(long)]
    pub no_namespaces: bool,

    /// `[user@]host[:port]`, `ssh://[user@]host[:port]`, or a Host of ~/.ssh/config. Your own
    /// ssh connects (its config, agent and keys); AGENTENV_SSH replaces the ssh command.
    #[arg(
        value_name = "TARGET",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        required_unless_present = "attach"
    )]
    pub target: Option<String>,

    /// The command; without one, a shell (or the script read from stdin when it is not a
    /// terminal).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: &DispatchArgs) -> Result<i32> {
    let state = StateDirs::from_env()?;
    if let Some(id) = &args.attach {
        return crate::dispatch::resume::attach(&state, id);
    }
    let given = args.target.as_deref().unwrap_or_default();
    let target = Target::parse(given)
        .map_err(|e| Diagnostic::new(format!("cannot dispatch to '{given}': {e}")))?;
    if args.collect {
        return crate::dispatch::resume::collect(&state, &target);
    }
    let cwd = current_dir()?;
    let flake = FlakeTarget::resolve(args.flake.as_deref().unwrap_or("."), &cwd)?;
    let (devenv, _) = load_or_evaluate(&flake, &state, args.refresh)?;
    let agent = match &args.agent {
        Some(name) => Some(crate::memory::run::open_agent(
            name,
            args.profile.as_deref(),
        )?),
        None => None,
    };
    let profile = match &agent {
        Some(a) => a.record.profile.clone(),
        None => {
            crate::profile::config::chosen_unless(args.profile.as_deref(), args.no_profile, &state)?
        }
    };
    let profile = match profile {
        Some(dir) => Some(crate::dispatch::profile_trip::ProfileTrip::prepare(
            &dir,
            &state,
            args.refresh,
        )?),
        None => None,
    };
    let req = DispatchRequest {
        target,
        devenv,
        profile,
        command: args.command.clone(),
        remote_dir: args.remote_dir.clone(),
        agent,
        detach: args.detach,
        clean_caches: args.clean,
        isolation: match (&args.container, args.isolated, args.no_namespaces) {
            (Some(id), _, _) => Isolation::Container(id.clone()),
            (_, true, _) => Isolation::Isolated,
            (_, _, true) => Isolation::NoNamespaces,
            _ => Isolation::HostView,
        },
    };
    dispatch(&req, &state)
}

/// What agentenv does on a dispatch host (not for people).
#[derive(Debug, clap::Subcommand)]
pub enum RemoteVerb {
    /// Print the host's facts as JSON.
    Facts { dir: PathBuf },
    /// Unpack store paths from stdin.
    UnpackStore { dir: PathBuf },
    /// Unpack a profile from stdin into the profile cache.
    UnpackProfile { dir: PathBuf, name: String },
    /// Serve a session's agent on stdio.
    Session { spec: PathBuf },
    /// Run a command of a session in its container.
    Attach {
        spec: PathBuf,
        #[arg(last = true)]
        command: Vec<OsString>,
    },
    /// Remove a session's directory; print what remains.
    Clean {
        dir: PathBuf,
        id: String,
        #[arg(long)]
        all: bool,
    },
    /// Unpack a tar stream from stdin into a directory.
    Unpack { dir: PathBuf },
    /// Print a tar of the given places of a home.
    PackMemory { home: PathBuf, places: Vec<PathBuf> },
    /// Print the sessions in agentenv's directory as JSON.
    Sessions { dir: PathBuf },
    /// Start a detached session in the background.
    Serve { spec: PathBuf },
    /// Print a detached command's output until it ends; exit with its code.
    Follow { session: PathBuf },
    /// End a session's processes.
    Stop { session: PathBuf },
}

pub fn run_remote(verb: &RemoteVerb) -> Result<i32> {
    use crate::dispatch::remote;
    match verb {
        RemoteVerb::Facts { dir } => remote::facts(dir),
        RemoteVerb::UnpackStore { dir } => remote::unpack_store(dir),
        RemoteVerb::UnpackProfile { dir, name } => {
            crate::dispatch::profile_trip::unpack_profile(dir, name)
        }
        RemoteVerb::Session { spec } => remote::session(spec),
        RemoteVerb::Attach { spec, command } => crate::dispatch::container::attach(spec, command),
        RemoteVerb::Clean { dir, id, all } => remote::clean(dir, id, *all),
        RemoteVerb::Unpack { dir } => crate::dispatch::memory_trip::read_into(dir),
        RemoteVerb::PackMemory { home, places } => {
            crate::dispatch::memory_trip::write_places(home, places)
        }
        RemoteVerb::Sessions { dir } => crate::dispatch::away::sessions(dir),
        RemoteVerb::Serve { spec } => crate::dispatch::detached::serve(spec),
        RemoteVerb::Follow { session } => crate::dispatch::detached::follow(session),
        RemoteVerb::Stop { session } => {
            crate::dispatch::away::stop(session);
            Ok(0)
        }
    }
}
