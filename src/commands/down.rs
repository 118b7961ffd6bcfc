//! `agentenv down ENV [--rm]`: stops every process of a running environment and releases its
//! mounts; keeps its home and store layer unless `--rm`.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::{current_dir, DownArgs};
use crate::diag::Diagnostic;
use crate::paths::StateDirs;
use crate::proto::client;
use crate::workspace::find_running;

pub fn run(args: &DownArgs) -> Result<i32> {
    let cwd = current_dir()?;
    let env = find_running(&args.env, &cwd)?;
    let grace = Duration::from_secs(args.timeout);
    client::shutdown(env.agent(), grace.as_millis() as u64)?;
    // The agent exits once its processes are gone; then the kernel drops the namespaces.
    let deadline = Instant::now() + grace + Duration::from_secs(5);
    while env.state.instance.is_alive() {
        if Instant::now() > deadline {
            return Err(
                Diagnostic::new(format!("the environment {} did not stop", env.state.id))
                    .hint(format!(
                        "kill its agent: `kill -9 {}`",
                        env.state.instance.pid
                    ))
                    .into(),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&env.dir);
    if args.rm {
        let dir = StateDirs::from_env()?.envs().join(&env.state.id);
        crate::util::remove_tree(&dir)
            .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))?;
    }
    Ok(0)
}
