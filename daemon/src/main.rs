//! The `relance` binary: the command line and the daemon's edge, where
//! library errors become messages and exit codes.

mod cli;

/// Scoring and ingest allocate many small strings and maps, often freed on
/// another thread than the one that made them: mimalloc handles that far
/// better than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
