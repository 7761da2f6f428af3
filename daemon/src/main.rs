//! The `relance` binary: the command line and the daemon's edge, where
//! library errors become messages and exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
