//! Progress of long steps (a cold nix evaluation) on stderr: a spinner with nix's latest line
//! on a terminal; otherwise plain lines an agent's log can keep (the step once it has taken a
//! second, the elapsed time and nix's latest line every few seconds, the time taken at the
//! end); nothing for a step that ends sooner, and nothing at all with `--quiet`. Never on
//! stdout.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A step shorter than this shows no lines.
const LINES_AFTER: Duration = Duration::from_secs(1);
/// How often a line is written while a step runs without a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress at all.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// One step's progress, ended by `finish` (or by being dropped, which clears a spinner).
pub struct Progress {
    label: String,
    started: Instant,
    shown: Shown,
}

enum Shown {
    Nothing,
    Spinner(indicatif::ProgressBar),
    /// `last` is when the latest line was written, `None` before the first.
    Lines {
        last: Option<Instant>,
    },
}

impl Progress {
    /// Starts showing `label` (a phrase such as "evaluating the dev shell of app").
    pub fn start(label: &str) -> Self {
        let shown = if QUIET.load(Ordering::Relaxed) {
            Shown::Nothing
        } else if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.to_string());
            Shown::Spinner(bar)
        } else {
            Shown::Lines { last: None }
        };
        Self {
            label: label.to_string(),
            started: Instant::now(),
            shown,
        }
    }

    /// Called often while the step runs, with the step's latest line of output if it changed.
    pub fn tick(&mut self, latest: Option<&str>) {
        match &mut self.shown {
            Shown::Nothing => {}
            Shown::Spinner(bar) => {
                if let Some(line) = latest {
                    bar.set_message(line.to_string());
                }
                bar.tick();
            }
            Shown::Lines { last } => match last {
                None if self.started.elapsed() >= LINES_AFTER => {
                    *last = Some(Instant::now());
                    eprintln!("agentenv: {}", self.label);
                }
                Some(at) if at.elapsed() >= LINE_EVERY => {
                    *at = Instant::now();
                    let secs = self.started.elapsed().as_secs();
                    match latest {
                        Some(line) => eprintln!("agentenv: {} ({secs}s): {line}", self.label),
                        None => eprintln!("agentenv: {} ({secs}s)", self.label),
                    }
                }
                _ => {}
            },
        }
    }

    /// Ends the step: a spinner is cleared; without a terminal, a line says how long it took
    /// (and, when it failed, that it did: the error follows).
    pub fn finish(self, succeeded: bool) {
        match &self.shown {
            Shown::Nothing | Shown::Lines { last: None } => {}
            Shown::Spinner(bar) => bar.finish_and_clear(),
            Shown::Lines { .. } => eprintln!(
                "agentenv: {}: {} {:.1}s",
                self.label,
                if succeeded { "done in" } else { "failed after" },
                self.started.elapsed().as_secs_f64()
            ),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Shown::Spinner(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }
}
