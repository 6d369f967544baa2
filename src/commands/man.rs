//! `rcrun man` and `rcrun completions`: man pages and shell completions, generated from the same
//! clap definitions as the parser, so they cannot drift.

use crate::cli::{self, Cli};
use anyhow::{Context, Result};

/// The man pages come from the same clap definitions as the parser, so they cannot drift.
/// (`Man::new` and `generate_to` build the whole tree, which runs `cli::Lazy`'s deferred parts.)
pub fn man_page(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

pub fn cmd_man(a: &cli::ManArgs) -> Result<i32> {
    use clap::CommandFactory;
    match &a.dir {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&man_page(Cli::command())?)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("rcrun man: cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("rcrun man: writing pages into {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("rcrun") && n.ends_with(".1"))
                .collect();
            pages.sort();
            for p in pages {
                println!("{}", dir.join(p).display());
            }
        }
    }
    Ok(0)
}

/// A completion script for `shell`, generated from the clap definitions.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> Result<()> {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "rcrun", out);
    Ok(())
}
