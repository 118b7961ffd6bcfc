//! `agentenv __man` (hidden): the manual page in roff, generated from the command line's own
//! definition, so it cannot drift from `--help`. The set-up script installs it.

use anyhow::Result;

pub fn run() -> Result<i32> {
    use clap::CommandFactory;
    let cmd = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    // One section per verb after the main page, as `git help` pages have them.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let title = format!("agentenv {}", sub.get_name());
        out.extend_from_slice(format!(".SH \"{}\"\n", title.to_uppercase()).as_bytes());
        let man = clap_mangen::Man::new(sub.clone().bin_name(title));
        man.render_description_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_options_section(&mut out)?;
    }
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(0)
}
