//! Layer 2, the profile: a directory of dotfiles (`home/`), agent skills (`skills/`), programs
//! (`bin/`) and an optional manifest (`agentenv.toml`), linked into a home and fully undone
//! again. Owns the manifest, the activation plan, its journaled apply and undo; knows nothing of
//! sandboxes (the caller picks the home) and runs nix only in `install`.
//!
//! The API for a sandbox (or any caller with a home of its own):
//!
//! ```text
//! let env: ProfileEnv = profile::activate_into(profile_dir, home, state_dir)?;
//! //  profile_dir  the profile, made absolute but not resolved: links point at it as named,
//! //               so it must be visible at that same path wherever the home is used
//! //  home         the home to link into (a real $HOME, or a sandbox's private home)
//! //  state_dir    agentenv's state for that home: the journal, moved-aside entries, env.sh;
//! //               one state dir per home (the engine records which home it belongs to)
//! // env.path_prepend  before the dev shell's PATH (the profile's bin/)
//! // env.path_append   after it (the tools' bin, once built; see env.tools)
//! // env.vars          to set, AGENTENV_PROFILE first
//! // env.shell_init    for an interactive shell to run after the dev shell's own set-up
//! // env.tools         the manifest's `tools` as `<profile>#<attr>`, not built
//! if let Some(bin) = profile::install::build_profile_tools(&nix, &env, state_dir)? {
//!     env.path_append.push(bin);           // optional: runs `nix build`, GC root in state_dir
//! }
//! profile::deactivate_from(state_dir)?;   // undo, exactly
//! ```
//!
//! `activate_into` is idempotent (the same profile again changes nothing), switches profiles
//! (undoing the previous one first), repairs an interrupted activation from the journal, and
//! runs `activate.sh` when it changed something. A sandbox runs `activate.sh` inside, where
//! `$HOME` is the home it sees: `activate_for_sandbox` hands the script back instead of running
//! it, and `record_hook_outcome` records how it went. A home that something else can write (a
//! sandbox's, a container's) must be activated that way: then no symlink below the home is
//! ever gone through (see `beneath`); `activate_into` is for the user's own `$HOME`. Errors are `Diagnostic`s; on an error the home
//! is as it was (except for `activate.sh` failing, which leaves the links in place).

pub mod apply;
pub mod beneath;
pub mod config;
pub mod env;
pub mod hook;
pub mod install;
pub mod journal;
pub mod links;
pub mod manifest;
pub mod owner;
pub mod plan;
pub mod status;
pub mod tools;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use apply::UndoReport;
pub use beneath::HomeLinks;
pub use env::ProfileEnv;
pub use journal::{Journal, StateFiles, Step, TxState};
pub use manifest::{Manifest, Profile};
pub use plan::{plan_activation, ActivationPlan};
pub use status::{status_of, ProfileStatus};

use crate::diag::Diagnostic;

/// What `activate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    pub env: ProfileEnv,
    /// False when the profile was active already and nothing needed to change.
    pub changed: bool,
    /// Things to tell the user: skipped entries, what an undo left in place.
    pub warnings: Vec<String>,
    /// `activate.sh`, when the caller is to run it (`HookRun::ByCaller`) and it must run: the
    /// activation changed something, or its last run did not succeed.
    pub pending_hook: Option<PathBuf>,
}

/// Who runs the profile's `activate.sh`, and so whose home it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookRun {
    /// `activate` runs it, here, before it returns: the user's own home, where symlinks that
    /// stay in the home are gone through.
    Here,
    /// The caller runs it where the home is used (in a sandbox, a container) and reports back
    /// with `record_hook_outcome`; until then it counts as not yet run. What runs there can
    /// write the home, so no symlink in it is ever followed (`HomeLinks::Refused`).
    ByCaller,
}

impl HookRun {
    fn home_links(self) -> HomeLinks {
        match self {
            HookRun::Here => HomeLinks::InHome,
            HookRun::ByCaller => HomeLinks::Refused,
        }
    }
}

/// Activates the profile at `profile_dir` into `home` and returns what it adds to a shell's
/// environment. See the module's documentation.
pub fn activate_into(profile_dir: &Path, home: &Path, state_dir: &Path) -> Result<ProfileEnv> {
    let done = activate(profile_dir, home, state_dir)?;
    for w in &done.warnings {
        tracing::warn!("{w}");
    }
    Ok(done.env)
}

/// `activate_into` for a home a sandbox will use: `activate.sh` is not run here but returned
/// (when it must run) for the caller to run inside.
pub fn activate_for_sandbox(
    profile_dir: &Path,
    home: &Path,
    state_dir: &Path,
) -> Result<(ProfileEnv, Option<PathBuf>)> {
    let done = activate_with(profile_dir, home, state_dir, HookRun::ByCaller)?;
    for w in &done.warnings {
        tracing::warn!("{w}");
    }
    Ok((done.env, done.pending_hook))
}

/// `activate_into`, saying whether anything changed and what to warn about.
pub fn activate(profile_dir: &Path, home: &Path, state_dir: &Path) -> Result<Activated> {
    activate_with(profile_dir, home, state_dir, HookRun::Here)
}

/// `activate`, with `activate.sh` run as `hook` says.
pub fn activate_with(
    profile_dir: &Path,
    home: &Path,
    state_dir: &Path,
    hook: HookRun,
) -> Result<Activated> {
    activate_except(profile_dir, home, state_dir, hook, &[])
}

/// `activate_with`, making no link at or below the `except` paths (relative to the home):
/// an agent's memory is shown there instead.
pub fn activate_except(
    profile_dir: &Path,
    home: &Path,
    state_dir: &Path,
    hook: HookRun,
    except: &[PathBuf],
) -> Result<Activated> {
    let home = check_home(home)?;
    let home_links = hook.home_links();
    let profile = Profile::load(profile_dir)?;
    let mut wanted = links::wanted_links(&profile, &home, state_dir)?;
    wanted
        .links
        .retain(|l| !except.iter().any(|e| l.dest.starts_with(e)));
    let files = StateFiles::new(state_dir);
    // Plan before anything is written, when no earlier activation is in the home (with one,
    // the plan must wait for its undo).
    let mut early_plan = match files.journal().exists() {
        true => None,
        false => Some(plan::plan_links(
            &profile, &wanted, &home, state_dir, home_links,
        )?),
    };
    let _lock = files.lock()?;
    let mut warnings = wanted.warnings.clone();
    let mut previous = None;
    if let Some(mut old) = files.read()? {
        early_plan = None;
        if old.state == TxState::Applied
            && old.home_links == home_links
            && is_in_place(&old, &profile.root, &home, &wanted)
        {
            return refresh(old, &profile, &files, warnings, hook);
        }
        let report =
            apply::undo(&mut old, &files).context("cannot undo the profile activated before")?;
        warnings.extend(report.warnings());
        if old.state != TxState::Applying {
            previous = Some(old.profile.clone());
        }
    }
    let plan = match early_plan.map_or_else(
        || plan::plan_links(&profile, &wanted, &home, state_dir, home_links),
        Ok,
    ) {
        Ok(plan) => plan,
        Err(err) => {
            if let Some(prev) = previous {
                restore_previous(&prev, &home, &files, home_links);
            }
            return Err(err);
        }
    };
    let mut journal = apply::apply_plan(&plan, &files)?;
    write_env_script(&journal, &files)?;
    let pending_hook = match hook {
        HookRun::Here => {
            run_hook_recorded(journal, &files)?;
            None
        }
        HookRun::ByCaller => defer_hook(&mut journal, &files)?,
    };
    Ok(Activated {
        env: plan.env,
        changed: true,
        warnings,
        pending_hook,
    })
}

/// True if `journal` is an activation of this profile into this home with exactly these links,
/// all still in place.
fn is_in_place(
    journal: &Journal,
    profile: &Path,
    home: &Path,
    wanted: &links::WantedLinks,
) -> bool {
    if journal.profile != profile || journal.home != home {
        return false;
    }
    let Ok(dir) = beneath::HomeDir::open(home, journal.home_links) else {
        return false;
    };
    let made = journal.steps.iter().filter_map(|s| match s {
        Step::Link { path, target } => Some((path, target)),
        _ => None,
    });
    made.clone().count() == wanted.links.len()
        && made.zip(&wanted.links).all(|((path, target), want)| {
            *target == want.target
                && *path == home.join(&want.dest)
                && dir
                    .place(path)
                    .and_then(|p| p.read_link())
                    .is_ok_and(|t| t == *target)
        })
}

/// The no-op path: the links are in place; update what the manifest may have changed since
/// (variables, init snippets) and run `activate.sh` again if it failed last time.
fn refresh(
    mut journal: Journal,
    profile: &Profile,
    files: &StateFiles,
    warnings: Vec<String>,
    hook_run: HookRun,
) -> Result<Activated> {
    let env = plan::profile_env(profile).keeping_tools_of(&journal.env);
    let hook = profile.hook();
    if env != journal.env || hook != journal.hook {
        journal.env = env.clone();
        journal.hook = hook;
        files.write(&journal)?;
        write_env_script(&journal, files)?;
    }
    let mut pending_hook = None;
    if journal.hook_failed {
        match hook_run {
            HookRun::Here => run_hook_recorded(journal, files)?,
            HookRun::ByCaller => pending_hook = defer_hook(&mut journal, files)?,
        }
    }
    Ok(Activated {
        env,
        changed: false,
        warnings,
        pending_hook,
    })
}

/// After the new profile could not be planned, brings back the one that was active.
fn restore_previous(profile_dir: &Path, home: &Path, files: &StateFiles, home_links: HomeLinks) {
    let back = Profile::load(profile_dir).and_then(|p| {
        let wanted = links::wanted_links(&p, home, &files.dir)?;
        let plan = plan::plan_links(&p, &wanted, home, &files.dir, home_links)?;
        let journal = apply::apply_plan(&plan, files)?;
        write_env_script(&journal, files)
    });
    if let Err(e) = back {
        tracing::warn!(
            "could not re-activate the previous profile {}: {e:#}",
            profile_dir.display()
        );
    }
}

fn run_hook_recorded(mut journal: Journal, files: &StateFiles) -> Result<()> {
    let Some(hook) = journal.hook.clone() else {
        return Ok(());
    };
    let result = hook::run_hook(&hook, &journal.profile, &journal.home);
    if result.is_err() != journal.hook_failed {
        journal.hook_failed = result.is_err();
        files.write(&journal)?;
    }
    result
}

/// Marks `activate.sh` as not yet run (so that a run that never happens is retried) and returns
/// it for the caller to run.
fn defer_hook(journal: &mut Journal, files: &StateFiles) -> Result<Option<PathBuf>> {
    let Some(hook) = journal.hook.clone() else {
        return Ok(None);
    };
    if !journal.hook_failed {
        journal.hook_failed = true;
        files.write(journal)?;
    }
    Ok(Some(hook))
}

/// Records how a run of `activate.sh` by the caller (see `HookRun::ByCaller`) went.
pub fn record_hook_outcome(state_dir: &Path, succeeded: bool) -> Result<()> {
    let files = StateFiles::new(state_dir);
    let _lock = files.lock()?;
    let Some(mut journal) = files.read()? else {
        return Ok(());
    };
    if journal.state == TxState::Applied && journal.hook_failed == succeeded {
        journal.hook_failed = !succeeded;
        files.write(&journal)?;
    }
    Ok(())
}

fn write_env_script(journal: &Journal, files: &StateFiles) -> Result<()> {
    let script = journal.env.to_shell_script(&journal.profile);
    crate::util::write_atomic(&files.env_script(), script.as_bytes())
}

/// Undoes the active profile (or finishes an interrupted transaction). `None` if there was
/// nothing to undo.
pub fn deactivate_from(state_dir: &Path) -> Result<Option<UndoReport>> {
    let files = StateFiles::new(state_dir);
    if !files.journal().exists() {
        return Ok(None);
    }
    let _lock = files.lock()?;
    let Some(mut journal) = files.read()? else {
        return Ok(None);
    };
    apply::undo(&mut journal, &files).map(Some)
}

/// Records built tools for the active profile: their `bin` goes last on PATH.
pub fn record_tools(state_dir: &Path, bin: PathBuf, origin: Option<String>) -> Result<ProfileEnv> {
    update_active(state_dir, true, |journal| {
        journal.env.path_append = vec![bin];
        journal.origin = origin;
    })
}

/// Records which flake the active profile was installed from.
pub fn record_origin(state_dir: &Path, origin: Option<String>) -> Result<ProfileEnv> {
    update_active(state_dir, false, |journal| journal.origin = origin)
}

/// Changes the journal of the active profile under its lock; with `env_changed`, env.sh is
/// written again too.
fn update_active(
    state_dir: &Path,
    env_changed: bool,
    change: impl FnOnce(&mut Journal),
) -> Result<ProfileEnv> {
    let files = StateFiles::new(state_dir);
    let _lock = files.lock()?;
    let mut journal = files
        .read()?
        .filter(|j| j.state == TxState::Applied)
        .context("no profile is active")?;
    change(&mut journal);
    files.write(&journal)?;
    if env_changed {
        write_env_script(&journal, &files)?;
    }
    Ok(journal.env)
}

/// The profile state of a plain host's home: `$AGENTENV_HOME/state/profile` when set, else
/// `$XDG_STATE_HOME/agentenv/profile`, else `<home>/.local/state/agentenv/profile`.
pub fn host_state_dir(home: &Path) -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(root) = var("AGENTENV_HOME") {
        return root.join("state/profile");
    }
    var("XDG_STATE_HOME")
        .unwrap_or_else(|| home.join(".local/state"))
        .join("agentenv/profile")
}

fn check_home(home: &Path) -> Result<PathBuf> {
    if !home.is_absolute() || !home.is_dir() {
        return Err(Diagnostic::new(format!(
            "the home directory {} is not an existing absolute directory",
            home.display()
        ))
        .hint("set HOME to your home directory")
        .into());
    }
    Ok(home.components().collect())
}
