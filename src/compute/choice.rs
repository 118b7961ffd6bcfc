//! The one place that chooses a backend: `--backend NAME`, else `backend = "..."` in
//! config.toml, else this OS's default. Every backend this build has is listed here once.

use std::path::Path;

use anyhow::Result;

use super::Backend;
use crate::diag::Diagnostic;

/// Every backend of this build. Adding one: its folder, and one line here.
static BACKENDS: &[&dyn Backend] = &[
    #[cfg(target_os = "linux")]
    &super::linux::LinuxNamespaces,
    #[cfg(target_os = "linux")]
    &super::vm::backend::VmBackend,
];

/// The backend used when none is named: namespaces on Linux, a VM elsewhere.
pub const DEFAULT_BACKEND: &str = if cfg!(target_os = "linux") {
    "namespaces"
} else {
    "vm"
};

/// The names of the backends this build has.
pub fn backend_names() -> Vec<&'static str> {
    BACKENDS.iter().map(|b| b.name()).collect()
}

/// The backend called `name`.
pub fn backend_named(name: &str) -> Result<&'static dyn Backend> {
    if let Some(b) = BACKENDS.iter().find(|b| b.name() == name) {
        return Ok(*b);
    }
    let names = backend_names();
    Err(
        Diagnostic::new(format!("no backend called '{name}' in this agentenv"))
            .detail(if names.is_empty() {
                "this build has no backend for this OS".to_string()
            } else {
                format!("backends: {}", names.join(", "))
            })
            .hint("pick one of those with --backend, or set `backend = \"...\"` in config.toml")
            .into(),
    )
}

/// The backend `arg` names, else the one `config` (agentenv's config.toml) names, else the
/// default, available or not.
pub fn named_backend(arg: Option<&str>, config: &Path) -> Result<&'static dyn Backend> {
    match arg {
        Some(name) => backend_named(name),
        None => match crate::profile::config::read_config(config)?.backend {
            Some(name) => backend_named(&name),
            None => backend_named(DEFAULT_BACKEND),
        },
    }
}

/// `choose_backend` with agentenv's own config.toml.
pub fn choose_configured_backend(arg: Option<&str>) -> Result<&'static dyn Backend> {
    let config = crate::paths::StateDirs::from_env()?
        .config
        .join("config.toml");
    choose_backend(arg, &config)
}

/// `named_backend`, refused with its reason if it cannot run here.
pub fn choose_backend(arg: Option<&str>, config: &Path) -> Result<&'static dyn Backend> {
    let backend = named_backend(arg, config)?;
    backend.available().map_err(|d| {
        let name = backend.name();
        anyhow::Error::from(d).context(format!("the backend '{name}' cannot run here"))
    })?;
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_backend_is_registered_and_unknown_names_are_refused() {
        #[cfg(target_os = "linux")]
        assert_eq!(backend_named(DEFAULT_BACKEND).unwrap().name(), "namespaces");
        let err = backend_named("teleport").err().unwrap();
        let text = crate::diag::render(&err);
        assert!(text.contains("no backend called 'teleport'"), "{text}");
        assert!(text.contains("hint: "), "{text}");
    }

    #[test]
    fn the_command_line_wins_over_config_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config.toml");
        std::fs::write(&config, "backend = \"teleport\"\n").unwrap();
        let err = choose_backend(None, &config).err().unwrap();
        assert!(format!("{err:#}").contains("'teleport'"), "{err:#}");
        #[cfg(target_os = "linux")]
        {
            let b = choose_backend(Some("namespaces"), &config);
            // Where namespaces are refused, availability says so; the name is still resolved.
            if let Ok(b) = b {
                assert_eq!(b.name(), "namespaces");
            }
        }
    }
}
