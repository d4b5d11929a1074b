//! `strata demo`: the paper's whole experiment in miniature on the embedded default (issue 9).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Accepted and ignored until the demo exists.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let _ = crate::base_model::ensure;
    eprintln!("error: `strata demo` is not implemented yet (issue 9); nothing was done");
    Ok(ExitCode::from(2))
}
