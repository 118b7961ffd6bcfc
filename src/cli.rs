//! The command line: options and verbs (clap), logging set-up, and the exit-code convention
//! (the command's own code; 1 for agentenv's errors; 2 for bad usage).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::compute::Network;

const USAGE_FIRST: &str = "\
$ agentenv .                  a shell in this project's dev environment
$ agentenv . -- cargo test    one command there; its exit code is agentenv's";

const EXAMPLES: &str = "\
More examples:
  agentenv ~/src/app#tools        the dev shell `tools` of another project
  agentenv --network none . -- make check
  agentenv up . && agentenv exec . -- make   keep an environment running, use it
  agentenv doctor                 check that this machine can run environments";

/// Portable, isolated Nix dev environments for humans and agents.
///
/// `agentenv PATH` opens the dev shell of the flake at PATH (as `nix develop` would) in a
/// sandbox that sees only the Nix store (copy-on-write), the project, and a private home.
/// The evaluated environment is cached, so a warm start runs no nix at all.
#[derive(Debug, Parser)]
#[command(
    name = "agentenv",
    version,
    before_help = USAGE_FIRST,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "VERB",
    subcommand_help_heading = "Verbs",
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub verb: Option<Verb>,

    #[command(flatten)]
    pub enter: EnterArgs,

    /// More detail on stderr (-v: debug, -vv: trace, with the time since the start); RUST_LOG
    /// works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress on stderr (a spinner on a terminal, lines otherwise); errors still show.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Options of `agentenv [PATH] [-- COMMAND...]`.
#[derive(Debug, Args)]
pub struct EnterArgs {
    /// A directory inside a flake, optionally with `#NAME` to pick `devShells.<system>.NAME`.
    #[arg(value_name = "PATH[#NAME]", default_value = ".")]
    pub path: String,

    /// Run this command instead of an interactive shell, and exit with its code.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    #[command(flatten)]
    pub opts: EnvOptions,
}

/// How an environment is made, for `agentenv PATH` and `agentenv up`.
#[derive(Debug, Args)]
pub struct EnvOptions {
    /// Evaluate the dev shell again even if nothing it depends on changed.
    #[arg(long)]
    pub refresh: bool,

    /// `host` shares the host's network; `none` leaves only a private loopback.
    #[arg(long, value_enum, default_value = "host", value_name = "MODE")]
    pub network: Network,

    /// A profile (dotfiles, skills, tools) to activate into the environment's home; also
    /// $AGENTENV_PROFILE, or `profile = "..."` in config.toml.
    #[arg(long, value_name = "DIR", env = "AGENTENV_PROFILE")]
    pub profile: Option<PathBuf>,

    /// No profile, even if one is given by $AGENTENV_PROFILE or configured: the bare dev shell.
    #[arg(long)]
    pub no_profile: bool,

    /// Let the environment write the profile (it is read-only inside by default); also
    /// `profile_rw = true` in config.toml. Risky: a process inside could then rewrite
    /// activate.sh or a dotfile that the host runs later.
    #[arg(long)]
    pub profile_rw: bool,
    /// Run as this agent (see `agentenv agent new`): its profile, its own home in the project,
    /// and its memory, writable at ~/.claude/CLAUDE.md, ~/.claude/skills/, ~/.codex/AGENTS.md
    /// and ~/.agent-memory/, committed when the session ends.
    #[arg(long, value_name = "NAME", conflicts_with = "no_profile")]
    pub agent: Option<String>,

    /// Where the environment runs: `namespaces` (Linux's default), `vm`; also `backend = "..."`
    /// in config.toml.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,

    /// The VM guest's architecture (default: the host's).
    #[arg(long, value_enum, value_name = "ARCH")]
    pub arch: Option<crate::compute::vm::spec::Arch>,
}

/// Options of `agentenv up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// A directory inside a flake, optionally with `#NAME`.
    #[arg(value_name = "PATH[#NAME]", default_value = ".")]
    pub path: String,

    /// A name to find the environment by (unique among running ones; letters, digits, `.`,
    /// `_` and `-`).
    #[arg(long, value_parser = parse_env_name)]
    pub name: Option<String>,

    #[command(flatten)]
    pub opts: EnvOptions,
}

/// Options of `agentenv exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The environment: an id (or unique prefix), a name, or a project path.
    #[arg(
        value_name = "ENV",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        add = clap_complete::engine::ArgValueCompleter::new(commands::completions::environments)
    )]
    pub env: String,

    /// Pass stdin to the command (always on with a terminal).
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the command a terminal even if stdin is not one.
    #[arg(short, long)]
    pub tty: bool,

    /// Working directory inside (default: the current one if visible inside, else the project).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Set a variable for the command; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env_vars: Vec<String>,

    /// The command; without one, a shell.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Options of `agentenv down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The environment: an id (or unique prefix), a name, or a project path.
    #[arg(
        value_name = "ENV",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        add = clap_complete::engine::ArgValueCompleter::new(commands::completions::environments)
    )]
    pub env: String,

    /// Also delete its home and store layer.
    #[arg(long)]
    pub rm: bool,

    /// Seconds the processes get between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Options of `agentenv gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Also remove what projects still have but have not used for this long (`30d`, `12h`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<humantime::Duration>,

    /// Remove everything that no running environment uses.
    #[arg(long)]
    pub all: bool,

    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start a project's environment in the background; prints its id.
    Up(UpArgs),
    /// Run a command (or a shell) in a running environment.
    Exec(ExecArgs),
    /// List the running environments.
    Ps {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running environment: every process ends, its mounts go.
    Down(DownArgs),
    /// List what agentenv keeps (environments, evaluated shells, tool builds), with sizes.
    Ls {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove what agentenv keeps that nothing uses any more, and say how much it freed.
    Gc(GcArgs),
    /// Check that this machine can run environments, and say how to fix what is missing.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
        /// Check this backend instead of the configured (or default) one.
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
    },
    /// A shell (or one command) inside a running container or process, with a toolbox's tools.
    #[cfg(target_os = "linux")]
    #[command(before_help = commands::attach::USAGE_FIRST)]
    Attach(commands::attach::AttachArgs),
    /// Agents: a profile plus a memory kept as a git history.
    #[cfg(target_os = "linux")]
    #[command(subcommand)]
    Agent(commands::agent::AgentVerb),
    /// An agent's memory: what it learned, when and where; undo it; settle conflicts.
    #[cfg(target_os = "linux")]
    #[command(subcommand)]
    Memory(commands::memory::MemoryVerb),
    /// A shell (or one command) on a Linux host over ssh, with a toolbox's tools; nothing
    /// needed there but sshd and sh, nothing left behind but a content cache.
    #[cfg(target_os = "linux")]
    #[command(before_help = commands::dispatch::USAGE_FIRST)]
    Dispatch(commands::dispatch::DispatchArgs),
    /// What agentenv runs on a dispatch host.
    #[cfg(target_os = "linux")]
    #[command(subcommand, hide = true, name = "__remote")]
    Remote(commands::dispatch::RemoteVerb),
    /// Link a profile (dotfiles, agent skills, tools) into your $HOME, and undo it exactly.
    #[command(subcommand, after_help = commands::profile::EXAMPLES)]
    Profile(commands::profile::ProfileVerb),
    /// Virtual machines: install a set of VM assets (`vm setup DIR`).
    #[command(subcommand)]
    Vm(commands::vm::VmVerb),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell): verbs, flags,
    /// running environments and containers. E.g. `source <(agentenv completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as generated from these definitions.
    #[command(name = "__man", hide = true)]
    Man,
    /// The guest program on its own (a VM's init, a remote host's session), from a JSON spec.
    #[cfg(target_os = "linux")]
    #[command(name = "__guest", hide = true)]
    Guest {
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
    },
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "agentenv=debug",
        _ => "agentenv=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false);
    // -vv is for finding where time goes: each line says when, since the start.
    let _ = match verbose {
        0 | 1 => fmt.without_time().try_init(),
        _ => fmt
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .try_init(),
    };
}

/// Parses the command line, runs the verb, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    // A completion script asking for candidates: answered and exited.
    commands::completions::complete_if_asked();
    // A VM's /init: the guest side, never the command line.
    #[cfg(target_os = "linux")]
    if std::process::id() == 1 && std::env::args_os().next().is_some_and(|a| a == "/init") {
        crate::guest::vm::main();
    }
    // Only stdin, stdout and stderr pass into environments and targets.
    crate::process::close_inherited_fds();
    // The VZ backend's machine process: agentenv holding one VM (RUST_LOG sets its logging).
    #[cfg(target_os = "macos")]
    if let Some(spec) = std::env::var_os(crate::compute::vm::vz::host::MACHINE_ENV) {
        init_logging(0);
        return ExitCode::from(crate::compute::vm::vz::host::main(spec.as_ref()) as u8);
    }
    // An empty AGENTENV_PROFILE means none (as shells make it with `AGENTENV_PROFILE=`); clap
    // would take it for an empty --profile. No other thread runs yet.
    if std::env::var_os("AGENTENV_PROFILE").is_some_and(|v| v.is_empty()) {
        std::env::remove_var("AGENTENV_PROFILE");
    }
    let args = verbose_after_verb(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => match crate::typo::explain_refusal(&args) {
            Some(d) if e.use_stderr() => {
                eprint!("{}", crate::diag::render(&d.into()));
                return ExitCode::from(2);
            }
            _ => e.exit(),
        },
    };
    init_logging(cli.verbose);
    crate::progress::set_quiet(cli.quiet);
    let result = match cli.verb {
        None => commands::enter::run(&cli.enter),
        Some(Verb::Up(args)) => commands::up::run(&args),
        Some(Verb::Exec(args)) => commands::exec::run(&args),
        Some(Verb::Ps { json }) => commands::ps::run(json),
        Some(Verb::Down(args)) => commands::down::run(&args),
        Some(Verb::Ls { json }) => commands::ls::run(json),
        Some(Verb::Gc(args)) => commands::gc::run(&args),
        Some(Verb::Doctor { json, backend }) => commands::doctor::run(json, backend.as_deref()),
        #[cfg(target_os = "linux")]
        Some(Verb::Attach(args)) => commands::attach::run(&args),
        #[cfg(target_os = "linux")]
        Some(Verb::Agent(verb)) => commands::agent::run(&verb),
        #[cfg(target_os = "linux")]
        Some(Verb::Memory(verb)) => commands::memory::run(&verb),
        #[cfg(target_os = "linux")]
        Some(Verb::Dispatch(args)) => commands::dispatch::run(&args),
        #[cfg(target_os = "linux")]
        Some(Verb::Remote(verb)) => commands::dispatch::run_remote(&verb),
        Some(Verb::Profile(verb)) => commands::profile::run(&verb),
        Some(Verb::Vm(verb)) => commands::vm::run(&verb),
        Some(Verb::Completions { shell }) => commands::completions::run(shell),
        Some(Verb::Man) => commands::man::run(),
        #[cfg(target_os = "linux")]
        Some(Verb::Guest { spec }) => commands::guest::run(&spec),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprint!("{}", crate::diag::render(&err));
            ExitCode::from(1)
        }
    }
}

/// An environment's name: it shares the ENV argument with ids and project paths, so it may
/// not look like a path.
fn parse_env_name(name: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(
            "use letters, digits, '.', '_' and '-' (a name must not look like a path)".into(),
        );
    }
    if name.chars().all(|c| c == '.') {
        return Err(format!(
            "'{name}' reads as a directory; use a name with a letter or digit"
        ));
    }
    if name.len() > 64 {
        return Err("use at most 64 characters".into());
    }
    Ok(name.to_string())
}

/// `agentenv -v VERB ...` as `agentenv VERB -v ...` (and `-q`): a flag before the verb would
/// otherwise count as an option of `agentenv PATH` and make the verb a path.
fn verbose_after_verb(mut args: Vec<OsString>) -> Vec<OsString> {
    let is_verbose = |a: &OsString| {
        let a = a.to_string_lossy();
        matches!(a.as_ref(), "--verbose" | "--quiet")
            || (a.len() > 1 && a.starts_with('-') && a[1..].bytes().all(|b| b == b'v' || b == b'q'))
    };
    let lead = args.iter().skip(1).take_while(|a| is_verbose(a)).count();
    let verb = args.get(1 + lead).map(|a| a.to_string_lossy().into_owned());
    if lead > 0 && verb.is_some_and(|v| is_verb(&v)) {
        let flags: Vec<OsString> = args.drain(1..1 + lead).collect();
        args.splice(2..2, flags);
    }
    args
}

/// True if `word` names a verb (a directory of that name is reached as `./word`).
pub fn is_verb(word: &str) -> bool {
    use clap::CommandFactory;
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == word || c.get_all_aliases().any(|a| a == word))
}

/// The directory a path argument is relative to.
pub fn current_dir() -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::env::current_dir().context("cannot read the current directory (was it removed?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn verbose_before_a_verb_moves_after_it() {
        assert_eq!(
            verbose_after_verb(args(&["agentenv", "-vv", "doctor", "--json"])),
            args(&["agentenv", "doctor", "-vv", "--json"])
        );
        assert_eq!(
            verbose_after_verb(args(&["agentenv", "-v", "--verbose", "up", "p"])),
            args(&["agentenv", "up", "-v", "--verbose", "p"])
        );
        // Before a path, or alone: unchanged.
        for a in [
            &["agentenv", "-v", "./up"][..],
            &["agentenv", "-v", ".", "--", "true"],
            &["agentenv", "-v"],
            &["agentenv", "--refresh", "up"],
        ] {
            assert_eq!(verbose_after_verb(args(a)), args(a));
        }
    }
}
