//! nix's settings as the `nix` on PATH sees them: `nix config show --json` (nix 2.19 and later),
//! else `nix show-config --json` (before). Only what agentenv has to judge is read.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::cli::NixCli;

/// nix's `sandbox` setting: whether builders run isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildSandbox {
    On,
    /// Fixed-output derivations and those with `__noChroot = true` run outside it.
    Relaxed,
    Off,
}

/// The `sandbox` setting in force for this user's nix (a nix-daemon, when one builds, has its
/// own: the system's nix.conf).
pub fn build_sandbox(nix: &NixCli) -> Result<BuildSandbox> {
    let settings = show_config(nix)?;
    // Each setting is `{"value": ..., ...}`; read a bare value too.
    let entry = settings
        .get("sandbox")
        .context("nix's settings have no `sandbox`")?;
    parse_sandbox(entry.get("value").unwrap_or(entry))
}

fn parse_sandbox(value: &Value) -> Result<BuildSandbox> {
    Ok(match value {
        Value::Bool(true) => BuildSandbox::On,
        Value::Bool(false) => BuildSandbox::Off,
        Value::String(s) if s == "relaxed" => BuildSandbox::Relaxed,
        Value::String(s) if s == "true" => BuildSandbox::On,
        Value::String(s) if s == "false" => BuildSandbox::Off,
        other => bail!("nix's `sandbox` setting is {other}, not true, false or relaxed"),
    })
}

fn show_config(nix: &NixCli) -> Result<Value> {
    let mut last_err = String::new();
    for args in [
        &["config", "show", "--json"][..],
        &["show-config", "--json"][..],
    ] {
        let out = nix
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", nix.program.display()))?;
        if out.status.success() {
            return serde_json::from_slice(&out.stdout)
                .context("cannot read the settings `nix show-config --json` printed");
        }
        last_err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    bail!("nix does not show its settings: {last_err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_sandbox_setting_is_read() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(parse_sandbox(&v("true")).unwrap(), BuildSandbox::On);
        assert_eq!(parse_sandbox(&v("false")).unwrap(), BuildSandbox::Off);
        assert_eq!(
            parse_sandbox(&v("\"relaxed\"")).unwrap(),
            BuildSandbox::Relaxed
        );
        assert!(parse_sandbox(&v("3")).is_err());
    }
}
