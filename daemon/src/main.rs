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
    restore_sigpipe();
    cli::main()
}

/// `relance deals | head` must end quietly when `head` closes the pipe, as
/// every command-line tool does; Rust ignores SIGPIPE by default, which
/// turns that into a panic on the next print.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
