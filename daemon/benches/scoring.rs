//! Scoring throughput under the shipped rules: 1,000,000 contacts with 20
//! events on average, generated deterministically in chunks so memory stays
//! bounded. Only the time spent in `ScoringModel::score` is counted.
//!
//! Run: `cargo bench --bench scoring` (`RELANCE_BENCH_CONTACTS` to resize,
//! `RELANCE_BENCH_THREADS=2` to score each chunk on two threads).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use relance::core::model::{Company, Contact, Event, Timestamp};
use relance::domain::scoring::ScoringModel;
use relance::pipeline::config::Config;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const CHUNK: usize = 10_000;

#[path = "common/mod.rs"]
mod common;

use common::{Rng, companies, contact, events, peak_rss_kib, thread_cpu_ns};

/// Scores a slice of contacts; returns the score checksum, the number of
/// hot contacts and the thread's CPU time.
fn score_part(
    model: &ScoringModel,
    companies: &[Company],
    contacts: &[Contact],
    events: &[Vec<Event>],
    now: Timestamp,
) -> (i64, usize, u64) {
    let cpu_start = thread_cpu_ns();
    let (mut checksum, mut hot) = (0i64, 0usize);
    for (c, evs) in contacts.iter().zip(events) {
        let company = c
            .company
            .as_deref()
            .and_then(|id| id.strip_prefix("co"))
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| &companies[n]);
        let card = model.score(c, company, evs, now);
        checksum += card.score.hundredths();
        hot += usize::from(&*card.band == "hot");
        black_box(&card);
    }
    let cpu = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    (checksum, hot, cpu)
}

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let model = ScoringModel::compile(&config.scoring).unwrap_or_else(|e| panic!("{e}"));
    let contacts: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let threads: usize = std::env::var("RELANCE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(1);
    let now: Timestamp = "2026-03-02T12:00:00Z".parse().expect("valid instant");

    let mut rng = Rng(0x5EED);
    let companies = companies(&mut rng, now);
    let mut scoring = Duration::ZERO;
    let mut cpu_ns = 0u64;
    let mut total_events = 0usize;
    let mut checksum = 0i64;
    let mut hot = 0usize;
    let mut chunk_contacts = Vec::with_capacity(CHUNK);
    let mut chunk_events: Vec<Vec<Event>> = (0..CHUNK).map(|_| Vec::new()).collect();
    let wall = Instant::now();
    let mut done = 0;
    while done < contacts {
        let n = CHUNK.min(contacts - done);
        chunk_contacts.clear();
        for (k, evs) in chunk_events.iter_mut().take(n).enumerate() {
            let c = contact(&mut rng, done + k);
            events(&mut rng, &c.id, now, evs);
            total_events += evs.len();
            chunk_contacts.push(c);
        }
        let start = Instant::now();
        let per_thread = n.div_ceil(threads);
        let parts: Vec<(i64, usize, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk_contacts
                .chunks(per_thread)
                .zip(chunk_events[..n].chunks(per_thread))
                .map(|(cs, es)| scope.spawn(|| score_part(&model, &companies, cs, es, now)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("scoring thread panicked"))
                .collect()
        });
        scoring += start.elapsed();
        for (sum, h, cpu) in parts {
            checksum += sum;
            hot += h;
            cpu_ns += cpu;
        }
        done += n;
    }
    let secs = scoring.as_secs_f64();
    println!("relance scoring benchmark (shipped rules, {threads} scoring thread(s))");
    println!("  contacts          {contacts}");
    println!("  events            {total_events}");
    println!(
        "  scoring time      {secs:.2} s (generation excluded; wall {:.2} s)",
        wall.elapsed().as_secs_f64()
    );
    println!("  contacts/s        {:.0}", contacts as f64 / secs);
    println!("  events/s          {:.0}", total_events as f64 / secs);
    if cpu_ns > 0 {
        let cpu = cpu_ns as f64 / 1e9;
        println!("  scoring CPU time  {cpu:.2} s (all scoring threads)");
        println!("  events/CPU-s      {:.0}", total_events as f64 / cpu);
    }
    println!("  hot contacts      {hot}");
    println!("  score checksum    {checksum}");
    match peak_rss_kib() {
        Some(kib) => println!("  peak RSS          {:.1} MiB", kib as f64 / 1024.0),
        None => println!("  peak RSS          unavailable"),
    }
}
