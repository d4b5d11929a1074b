//! Helpers shared by the CLI's integration tests.

use std::process::{Command, Output};

/// A command running the `strata` binary built for these tests.
pub fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// Runs `strata ARGS` to completion.
#[allow(dead_code)] // not every test file uses it
pub fn run(args: &[&str]) -> Output {
    strata().args(args).output().expect("runs strata")
}

/// A finished command's stdout and stderr as text.
#[allow(dead_code)]
pub fn texts(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}
