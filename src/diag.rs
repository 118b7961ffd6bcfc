//! User-facing errors: what failed, then detail lines, then hints saying what to do next.
//! Any error can carry a `Diagnostic` somewhere in its chain; `render` finds it and prints its
//! extra lines after the cause chain.

use std::fmt;

/// An error meant for a person: a one-line message, optional detail lines (nix's own output,
/// candidate lists) and hints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    pub message: String,
    pub details: Vec<String>,
    pub hints: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            details: Vec::new(),
            hints: Vec::new(),
        }
    }

    pub fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// Formats an error for stderr: `error: ...`, its causes, then details and hints of any
/// `Diagnostic` in the chain.
pub fn render(err: &anyhow::Error) -> String {
    render_as("error", err)
}

/// `render` for something that does not stop the command: `warning: ...`, then the rest.
pub fn render_warning(err: &anyhow::Error) -> String {
    render_as("warning", err)
}

fn render_as(what: &str, err: &anyhow::Error) -> String {
    let mut out = format!("{what}: {err}\n");
    for cause in err.chain().skip(1) {
        out.push_str(&format!("  cause: {cause}\n"));
    }
    for diag in err.chain().filter_map(|e| e.downcast_ref::<Diagnostic>()) {
        for line in &diag.details {
            out.push_str(&format!("  {line}\n"));
        }
        for hint in &diag.hints {
            out.push_str(&format!("  hint: {hint}\n"));
        }
    }
    out
}

impl Diagnostic {
    /// Flattens any error into a Diagnostic: the whole cause chain as the message, with the
    /// details and hints of any Diagnostic in it. Used to carry an error across a process
    /// boundary.
    pub fn from_error(err: &anyhow::Error) -> Self {
        let mut d = Diagnostic::new(format!("{err:#}"));
        for inner in err.chain().filter_map(|e| e.downcast_ref::<Diagnostic>()) {
            d.details.extend(inner.details.iter().cloned());
            d.hints.extend(inner.hints.iter().cloned());
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn render_shows_cause_then_details_then_hints() {
        let err = Err::<(), _>(
            Diagnostic::new("no flake.nix in /a")
                .detail("x")
                .hint("run it"),
        )
        .context("cannot open /a")
        .unwrap_err();
        assert_eq!(
            render(&err),
            "error: cannot open /a\n  cause: no flake.nix in /a\n  x\n  hint: run it\n"
        );
    }
}
