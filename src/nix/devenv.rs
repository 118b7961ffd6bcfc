//! A project's dev environment as `nix develop` would give it: nix's own shell script for the
//! shell (from `nix print-dev-env`), the bash to run it with, and a GC root. Evaluated once per
//! state of the flake's inputs and cached; a warm start reads one file and runs no nix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::cache::DevEnvCache;
use super::cli::{in_store, stderr_details, NixCli};
use super::flake::FlakeTarget;
use super::inputs;
use crate::diag::Diagnostic;
use crate::paths::StateDirs;
use crate::util::{find_in_dirs, shell_word, write_atomic};

/// The nix system agentenv runs on, e.g. `x86_64-linux`.
pub fn current_system() -> String {
    let os = if cfg!(target_os = "macos") {
        "darwin"
    } else {
        "linux"
    };
    format!("{}-{}", std::env::consts::ARCH, os)
}

/// An evaluated dev environment, ready to enter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevEnv {
    /// What was evaluated, as given to nix.
    pub installable: String,
    /// nix's `print-dev-env` script, evaluated with `outputs_placeholder` as working directory.
    pub rc_script: String,
    /// Where the script names the shell's outputs (`$out`); `nix develop` puts them in
    /// `$PWD/outputs`, so this is replaced by the caller's directory at each start.
    pub outputs_placeholder: String,
    /// The `-env` store path holding the environment; a GC root keeps it and its closure.
    pub store_path: PathBuf,
    /// The bash that runs the script, the one nix develop would pick where it can.
    pub shell: PathBuf,
    /// An `env` program from the environment, for `/usr/bin/env`.
    pub env_tool: Option<PathBuf>,
    /// `nix --version` at evaluation.
    pub nix_version: String,
    /// Seconds since the epoch.
    pub evaluated_at: u64,
}

impl DevEnv {
    /// nix's script with `$out` and friends under `cwd/outputs`, as nix develop sets them.
    pub fn rc_script_for(&self, cwd: &Path) -> String {
        self.rc_script.replace(
            &self.outputs_placeholder,
            &format!("{}/outputs", cwd.display()),
        )
    }

    fn load(entry: &Path) -> Option<Self> {
        let data = std::fs::read(entry.join("entry.json")).ok()?;
        let env: DevEnv = serde_json::from_slice(&data).ok()?;
        // A GC root can be removed by hand; then the paths may be gone.
        if !env.store_path.exists() || !env.shell.exists() {
            tracing::debug!(entry = %entry.display(), "cached environment lost its store paths");
            return None;
        }
        Some(env)
    }
}

/// Where a DevEnv came from, for logs and `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Nothing changed: read from the cache with stat calls only.
    Warm,
    /// Inputs were re-hashed and matched an entry evaluated before.
    Rehashed,
    /// nix evaluated it now.
    Evaluated,
}

/// Returns the dev environment of `target`, from the cache when its inputs are unchanged,
/// otherwise evaluated by nix (with progress on a terminal) and cached.
pub fn load_or_evaluate(
    target: &FlakeTarget,
    state: &StateDirs,
    refresh: bool,
) -> Result<(DevEnv, CacheOutcome)> {
    let nix = NixCli::find()?;
    let cache = DevEnvCache::new(state.devenv_cache());
    let nix_config = std::env::var("NIX_CONFIG").unwrap_or_default();
    let key = DevEnvCache::index_key(&[
        &target.root.to_string_lossy(),
        target.shell_name(),
        &current_system(),
        &nix.identity(),
        &nix_config,
    ]);
    if !refresh {
        if let Some(env) = cache
            .lookup_unchanged(&key)
            .and_then(|ck| DevEnv::load(&cache.entry_dir(&ck)))
        {
            tracing::debug!("dev environment from cache (warm)");
            return Ok((env, CacheOutcome::Warm));
        }
    }

    let inputs = inputs::discover(&target.root)?;
    let files = inputs::stamp_files(&inputs.files)?;
    let dirs = inputs::stamp_dirs(&inputs.dirs);
    let content_key = DevEnvCache::content_key(&key, &files);
    let entry = cache.entry_dir(&content_key);
    if !refresh {
        if let Some(env) = DevEnv::load(&entry) {
            cache.record(&key, &content_key, &files, &dirs)?;
            tracing::debug!("dev environment from cache (inputs re-hashed)");
            return Ok((env, CacheOutcome::Rehashed));
        }
    }

    let _lock = cache.lock(&content_key)?;
    if !refresh {
        // Another agentenv may have evaluated it while we waited for the lock.
        if let Some(env) = DevEnv::load(&entry) {
            cache.record(&key, &content_key, &files, &dirs)?;
            return Ok((env, CacheOutcome::Rehashed));
        }
    }
    let env = evaluate(&nix, target, &entry)?;
    cache.record(&key, &content_key, &files, &dirs)?;
    Ok((env, CacheOutcome::Evaluated))
}

/// Runs `nix print-dev-env` for `target` into the cache entry `entry`. On failure nothing of a
/// new entry is left behind.
fn evaluate(nix: &NixCli, target: &FlakeTarget, entry: &Path) -> Result<DevEnv> {
    let fresh = !entry.join("entry.json").exists();
    let result = evaluate_into(nix, target, entry);
    if result.is_err() && fresh {
        let _ = std::fs::remove_dir_all(entry);
    }
    result
}

fn evaluate_into(nix: &NixCli, target: &FlakeTarget, entry: &Path) -> Result<DevEnv> {
    let workdir = entry.join("w");
    std::fs::create_dir_all(&workdir)
        .with_context(|| format!("cannot create {}", workdir.display()))?;
    let workdir = std::fs::canonicalize(&workdir)?;
    let gcroot = entry.join("gcroot");

    let mut cmd = nix.command();
    cmd.arg("print-dev-env")
        .arg("--profile")
        .arg(&gcroot)
        .arg(target.installable())
        .current_dir(&workdir);
    let label = format!("evaluating the dev shell of {}", target.display_name());
    let out = nix.run(cmd, &label)?;
    if !out.success {
        return Err(evaluation_error(nix, target, &out.stderr));
    }
    let rc_script = String::from_utf8(out.stdout).context("nix print-dev-env printed non-UTF-8")?;
    let store_path = std::fs::canonicalize(&gcroot)
        .with_context(|| format!("nix did not create the GC root {}", gcroot.display()))?;
    let vars = read_env_variables(&store_path)?;
    let path_dirs: Vec<PathBuf> = vars
        .get("PATH")
        .map(|p| std::env::split_paths(p).filter(|d| in_store(d)).collect())
        .unwrap_or_default();

    let shell = choose_shell(nix, target, entry, &path_dirs, vars.get("builder"))?;
    let env = DevEnv {
        installable: target.installable(),
        rc_script,
        outputs_placeholder: format!("{}/outputs", workdir.display()),
        store_path,
        shell,
        env_tool: find_in_dirs("env", path_dirs),
        nix_version: nix.version().unwrap_or_default(),
        evaluated_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    write_atomic(&entry.join("entry.json"), &serde_json::to_vec(&env)?)?;
    prune_old_generations(entry, &gcroot);
    Ok(env)
}

/// The string variables of an environment (the JSON that `nix print-dev-env --json` shows),
/// read from its `-env` store path.
fn read_env_variables(store_path: &Path) -> Result<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct EnvJson {
        variables: BTreeMap<String, serde_json::Value>,
    }
    let data = std::fs::read(store_path)
        .with_context(|| format!("cannot read {}", store_path.display()))?;
    let json: EnvJson = serde_json::from_slice(&data)
        .with_context(|| format!("{} is not a dev environment", store_path.display()))?;
    Ok(json
        .variables
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.get("value")?.as_str()?.to_string())))
        .collect())
}

/// The bash that runs the shell. nix develop takes `bashInteractive` from the flake's nixpkgs;
/// without nixpkgs it would fall back to the host's bash, which a sandbox cannot see, so this
/// falls back to a bash of the environment itself.
fn choose_shell(
    nix: &NixCli,
    target: &FlakeTarget,
    entry: &Path,
    path_dirs: &[PathBuf],
    builder: Option<&String>,
) -> Result<PathBuf> {
    if flake_has_nixpkgs_input(&target.root) {
        let link = entry.join("bash");
        let mut cmd = nix.command();
        cmd.args(["build", "--out-link"])
            .arg(&link)
            .arg("--inputs-from")
            .arg(&target.root)
            .arg("nixpkgs#bashInteractive");
        match nix.run(cmd, "building bashInteractive") {
            Ok(out) if out.success => {
                if let Ok(p) = std::fs::canonicalize(&link) {
                    return Ok(p.join("bin/bash"));
                }
            }
            Ok(out) => tracing::debug!(stderr = %out.stderr, "no bashInteractive from nixpkgs"),
            Err(e) => tracing::debug!("no bashInteractive from nixpkgs: {e:#}"),
        }
    }
    if let Some(bash) = find_in_dirs("bash", path_dirs.iter().cloned()) {
        return Ok(bash);
    }
    if let Some(b) = builder.map(PathBuf::from) {
        if in_store(&b) && b.file_name().is_some_and(|n| n == "bash") {
            return Ok(b);
        }
    }
    Err(Diagnostic::new(format!(
        "the dev shell of {} has no bash to run in",
        target.display_name()
    ))
    .hint("add `pkgs.bashInteractive` to the shell's packages, or give the flake a `nixpkgs` input")
    .into())
}

fn flake_has_nixpkgs_input(root: &Path) -> bool {
    let Ok(data) = std::fs::read(root.join("flake.lock")) else {
        return false;
    };
    let Ok(lock) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return false;
    };
    let root_node = lock["root"].as_str().unwrap_or("root");
    lock["nodes"][root_node]["inputs"].get("nixpkgs").is_some()
}

/// Keeps only the GC-root generation `gcroot` points to, so a refreshed entry does not keep
/// old store paths alive.
fn prune_old_generations(entry: &Path, gcroot: &Path) {
    let current = std::fs::read_link(gcroot).ok();
    let Ok(rd) = std::fs::read_dir(entry) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        if n.starts_with("gcroot-")
            && n.ends_with("-link")
            && current.as_deref() != Some(Path::new(&name))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Turns nix's failure into a message: a flake with no such dev shell lists what it has;
/// anything else shows nix's own error.
fn evaluation_error(nix: &NixCli, target: &FlakeTarget, stderr: &str) -> anyhow::Error {
    if stderr.contains("does not provide attribute") {
        let system = current_system();
        let mut d = Diagnostic::new(format!(
            "the flake {} has no dev shell '{}' for {}",
            target.root.display(),
            target.shell_name(),
            system
        ));
        match list_outputs(nix, target, &system) {
            Some(outputs) if !outputs.is_empty() => {
                for (kind, names) in &outputs {
                    d = d.detail(format!("{kind}: {}", names.join(", ")));
                }
                if let Some((_, names)) = outputs.iter().find(|(k, _)| k == "devShells") {
                    let pick = format!("{}#{}", target.root.display(), names[0]);
                    d = d.hint(format!("pick one: `agentenv {}`", shell_word(&pick)));
                }
            }
            _ => d = d.detail(format!("it has no devShells or packages for {system}")),
        }
        // The shell asked for is the one to add; `default` only when that is the one asked for.
        let add = format!(
            "add `devShells.{system}.{}` to the flake's outputs",
            target.shell_name()
        );
        let add = if d.hints.is_empty() {
            add
        } else {
            format!("or {add}")
        };
        return d.hint(add).into();
    }
    if let Some(d) = untracked_file(target, stderr) {
        return d.into();
    }
    let mut d = Diagnostic::new(format!(
        "nix could not evaluate the dev shell of {}",
        target.installable()
    ));
    for line in stderr_details(stderr) {
        d = d.detail(line);
    }
    // Not the flake's fault: nix itself cannot reach or use its store.
    if let Some(fix) = crate::nix::cli::daemon_access_fix(stderr) {
        return d.hint(fix).into();
    }
    if stderr.contains("cannot connect to socket") {
        return d
            .hint("nix-daemon is not running: `sudo systemctl start nix-daemon`, or `sudo nix-daemon &` where systemd does not run")
            .hint("`agentenv doctor` checks the rest")
            .into();
    }
    if stderr.contains("build-users-group") {
        return d
            .hint("nix's build users are missing: on Debian `sudo apt-get install nix-setup-systemd`; elsewhere reinstall nix")
            .hint("`agentenv doctor` checks the rest")
            .into();
    }
    d.hint(develop_hint(target)).into()
}

/// nix copies a flake in a git repository with the files git tracks only: one it does not is
/// "missing" from the copy. Said so when the file is there on disk.
fn untracked_file(target: &FlakeTarget, stderr: &str) -> Option<Diagnostic> {
    let rest = stderr.split("getting status of '").nth(1)?;
    let copied = &rest[..rest.find('\'')?];
    let rel = copied
        .strip_prefix("/nix/store/")?
        .split_once("-source/")?
        .1;
    let repo = target.root.ancestors().find(|d| d.join(".git").exists())?;
    let on_disk = repo.join(rel);
    if !on_disk.exists() {
        return None;
    }
    let shown = on_disk
        .strip_prefix(&target.root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| on_disk.clone());
    Some(
        Diagnostic::new(format!(
            "{} is not tracked by git, so nix does not see it",
            on_disk.display()
        ))
        .hint(format!(
            "track it: `git add {}` in {} (a flake in a git repository sees only the files git tracks)",
            shell_word(&shown.to_string_lossy()),
            target.root.display()
        )),
    )
}

/// Where to see nix's own error: the command, quoted for a shell where the path needs it.
fn develop_hint(target: &FlakeTarget) -> String {
    format!(
        "fix the error above; `nix develop {}` shows the same",
        shell_word(&target.installable())
    )
}

/// Names under `devShells.<system>` and `packages.<system>`, from `nix flake show --json`.
fn list_outputs(
    nix: &NixCli,
    target: &FlakeTarget,
    system: &str,
) -> Option<Vec<(String, Vec<String>)>> {
    let mut cmd = nix.command();
    cmd.args(["flake", "show", "--json"]).arg(&target.root);
    let out = nix.run(cmd, "listing the flake's outputs").ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut found = Vec::new();
    for kind in ["devShells", "packages"] {
        if let Some(obj) = json[kind][system].as_object() {
            let names: Vec<String> = obj.keys().cloned().collect();
            if !names.is_empty() {
                found.push((kind.to_string(), names));
            }
        }
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_the_callers_directory() {
        let env = DevEnv {
            installable: "/p".into(),
            rc_script: "out='/c/e/w/outputs/out'\nexport out\n".into(),
            outputs_placeholder: "/c/e/w/outputs".into(),
            store_path: "/nix/store/x-env".into(),
            shell: "/nix/store/b/bin/bash".into(),
            env_tool: None,
            nix_version: String::new(),
            evaluated_at: 0,
        };
        assert_eq!(
            env.rc_script_for(Path::new("/home/a/p")),
            "out='/home/a/p/outputs/out'\nexport out\n"
        );
    }

    #[test]
    fn the_nix_develop_hint_is_quoted_for_a_shell() {
        let target = |root: &str, attr: Option<&str>| FlakeTarget {
            root: root.into(),
            attr: attr.map(String::from),
        };
        let hint = develop_hint(&target("/tmp/my proj", None));
        assert!(hint.contains("`nix develop '/tmp/my proj'`"), "{hint}");
        let hint = develop_hint(&target("/src/app", Some("tools")));
        assert!(hint.contains("`nix develop /src/app#tools`"), "{hint}");
    }

    #[test]
    fn nixpkgs_input_is_read_from_the_lock_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!flake_has_nixpkgs_input(tmp.path()));
        std::fs::write(
            tmp.path().join("flake.lock"),
            r#"{"nodes":{"nixpkgs":{},"root":{"inputs":{"nixpkgs":"nixpkgs"}}},"root":"root","version":7}"#,
        )
        .unwrap();
        assert!(flake_has_nixpkgs_input(tmp.path()));
    }
}
