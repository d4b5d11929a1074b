//! Helpers shared by the CLI's integration tests.

use std::process::Command;

/// A command running the `strata` binary built for these tests.
pub fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}
