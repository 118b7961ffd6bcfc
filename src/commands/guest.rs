//! `agentenv __guest --spec FILE` (hidden): the guest program started on its own, as a VM's
//! `/init` does or a remote host's ssh session would: it reads its spec (JSON, see
//! `guest::entry::GuestSpec`) and runs it. No root is built unless the spec names one.

use std::path::Path;

use anyhow::Result;

use crate::guest::entry::{run_guest, GuestIo, GuestSpec};

pub fn run(spec: &Path) -> Result<i32> {
    let spec = GuestSpec::read(spec)?;
    Ok(run_guest(
        &spec,
        GuestIo {
            report: None,
            listener: None,
        },
    ))
}
