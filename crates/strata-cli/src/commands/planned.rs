//! Stages whose issue has not landed yet: listed in `--help` so the pipeline is visible, and
//! refused with a clear message instead of pretending to work.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Accepted and ignored until the stage exists.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(stage: &str, issue: u32, _args: Args) -> anyhow::Result<ExitCode> {
    eprintln!(
        "error: `strata {stage}` is not implemented in this version (tracked as issue {issue}); \
         nothing was done"
    );
    Ok(ExitCode::from(2))
}
