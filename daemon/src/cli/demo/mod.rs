//! `relance demo`: the main job, live, on the embedded store. It writes the
//! shipped configuration with the demo's overlay into its folder, imports
//! the demo data into a fresh store with every instant moved so that the
//! data's reference instant is now, then runs the daemon (`relance run`)
//! with the API on loopback, while a feeder posts a stream of events to
//! that API and a watcher prints what follows: follow-ups planned,
//! deferred, blocked and sent, and a one-line summary every few seconds.
//! Ctrl-C (or `--for`) stops it as it stops `relance run`.

mod feed;
mod setup;
mod watch;

use super::{Failure, exit};
use relance::core::clock::Clock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The demo's data: companies.csv, contacts.csv, deals.csv,
    /// events.jsonl, the live stream.jsonl and the overlay demo.toml.
    #[arg(long, default_value = "config/demo")]
    data: PathBuf,
    /// The demo's folder: configuration, store, log and the channels'
    /// output. The store and the output are replaced at each start.
    #[arg(long, default_value = "target/demo")]
    dir: PathBuf,
    /// The API's address, on loopback [default: 127.0.0.1:8080, or a free
    /// port when it is taken].
    #[arg(long)]
    listen: Option<String>,
    /// One event of the stream this often (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_pace)]
    pace: Duration,
    /// Stop by itself after this long (e.g. 20s, 5m), as Ctrl-C would.
    #[arg(long = "for", value_parser = parse_pace)]
    duration: Option<Duration>,
    /// A summary line this often.
    #[arg(long, default_value = "5s", value_parser = parse_pace)]
    every: Duration,
}

fn parse_pace(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        let ms: u64 = ms
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a whole number of milliseconds"))?;
        return Ok(Duration::from_millis(ms.max(1)));
    }
    let d: relance::core::config::Duration = s.parse()?;
    d.0.to_std()
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` must be positive"))
}

/// Runs the demo until SIGINT / SIGTERM or the end of `--for`.
pub fn run(base: &Path, clock: &Clock, args: &Args) -> Result<u8, Failure> {
    if clock.is_fixed() {
        return Err(Failure::Input(
            "the demo runs live: it moves the data to now, so --now has no place here".into(),
        ));
    }
    let prepared = setup::prepare(base, clock, args)?;
    let config = prepared.config.clone();
    let shared = Arc::new(watch::Shared::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    println!("relance demo (times are UTC)");
    for line in &prepared.told {
        println!("  {line}");
    }
    println!(
        "API  http://{}  token {}\n  e.g. curl -H 'Authorization: Bearer {}' http://{}/v1/outbox?status=sent",
        prepared.listen, prepared.token, prepared.token, prepared.listen
    );
    println!(
        "Posting one event every {} through the API; Ctrl-C stops.\n",
        feed::human(args.pace)
    );

    let feeder = feed::Feeder {
        address: prepared.listen.clone(),
        token: prepared.token.clone(),
        stream: prepared.stream.clone(),
        contacts: prepared.contacts.clone(),
        members: prepared.members.clone(),
        pace: args.pace,
        duration: args.duration,
        clock: clock.clone(),
        shared: shared.clone(),
        stop: stop.clone(),
    };
    let feeding = std::thread::Builder::new()
        .name("relance-demo-feed".into())
        .spawn(move || feeder.run())
        .map_err(anyhow::Error::from)?;
    let watcher = watch::Watcher::new(
        prepared.store.clone(),
        clock.clone(),
        shared,
        prepared.contacts.clone(),
        args.every,
    )
    .map_err(anyhow::Error::from)?;
    let stop2 = stop.clone();
    let watching = std::thread::Builder::new()
        .name("relance-demo-watch".into())
        .spawn(move || watcher.run(&stop2))
        .map_err(anyhow::Error::from)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    let result = runtime.block_on(relance::daemon::run(
        config.clone(),
        clock.clone(),
        prepared.store.clone(),
    ));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let fed = feeding.join();
    let _ = watching.join();
    result.map_err(anyhow::Error::from)?;
    if let Ok(Err(e)) = fed {
        return Err(Failure::Other(e));
    }
    println!(
        "\nStopped. The store stays: relance --config {} outbox",
        prepared.config.file.display()
    );
    Ok(exit::OK)
}
