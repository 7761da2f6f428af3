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
    relance::process::small_pages();
    quiet_when_the_reader_leaves();
    cli::main()
}

/// `relance deals | head -6` must end quietly, with status 0, when `head`
/// has read enough: the next print fails with EPIPE, which `println!`
/// turns into a panic (Rust ignores SIGPIPE). The reader left by choice, so
/// this is no failure. Restoring SIGPIPE's default instead would kill the
/// process with status 141, which a script under `set -o pipefail` takes
/// for an error and stops on.
fn quiet_when_the_reader_leaves() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        let epipe = format!("(os error {})", libc::EPIPE);
        if message.starts_with("failed printing to stdout") && message.ends_with(&epipe) {
            std::process::exit(0);
        }
        default(info);
    }));
}
