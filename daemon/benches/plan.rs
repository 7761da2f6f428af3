//! Planning passes over a real SQLite store under the shipped rules:
//! - the first full pass (every contact: nurture enrolment, triggers,
//!   arbitration, outbox rows), which reads every contact's whole history
//!   and folds it into the contacts' memos;
//! - the incremental pass a busy day runs, after 1 % of the contacts
//!   received a new event and were rescored;
//! - a full pass a day later, as after a change of the follow-up rules:
//!   every contact again, reading its memo and recent events only (and
//!   folding the events that left the recent window since).
//!
//! Run: `cargo bench --bench rescore` first (it generates and scores the
//! store, 1,000,000 contacts and about 20,000,000 events), then
//! `cargo bench --bench plan`. `RELANCE_BENCH_CONTACTS` resizes both.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use common::{Rng, peak_rss_kib};
use relance::followups::pass;
use relance::scoring::pass::rescore;
use std::time::Instant;

fn main() {
    let (contacts, now, db) = common::bench_store();
    if !db.exists() {
        eprintln!(
            "{} is missing: run `RELANCE_BENCH_CONTACTS={contacts} cargo bench --bench rescore` first",
            db.display()
        );
        std::process::exit(2);
    }
    let config = common::shipped_config(&db);
    let store = relance::store::open(&config).expect("store");
    // Straight SQL on the file, for the bench's own bookkeeping.
    let raw = rusqlite::Connection::open(&db).expect("open");
    // Every run starts from an empty plan.
    raw.execute_batch(
        "DELETE FROM outbox; DELETE FROM plan_wake; DELETE FROM decision_log;
             DELETE FROM plan_memo; DELETE FROM meta WHERE key LIKE 'plan.%';",
    )
    .expect("reset");
    // The last sequence number runs ahead of the count: numbers are never
    // reused.
    let events = store.last_event_seq().expect("seq");
    let stored = common::count_events(&db);
    println!("plan benchmark: {contacts} contacts, {stored} events, shipped rules");

    let full = |label: &str, at| {
        let started = Instant::now();
        let full = pass::run(&*store, &config, at, true).expect("full pass");
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{label:<22} {secs:>8.2} s   ({} contacts, {:.0}/s; {} allowed, {} deferred, {} blocked)",
            full.examined,
            full.examined as f64 / secs,
            full.allowed,
            full.deferred,
            full.blocked
        );
    };
    full("first full pass", now);

    // 1 % of the contacts visit the pricing page, then are rescored.
    let mut rng = Rng(0xBEEF);
    let fresh = common::pricing_visits(&mut rng, contacts, contacts / 100, now, "bench-plan");
    for chunk in fresh.chunks(1_000) {
        store.append_events(chunk).expect("append");
    }
    rescore(&*store, &config, now, false).expect("rescore");
    let started = Instant::now();
    let inc = pass::run(&*store, &config, now, false).expect("incremental pass");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "incremental pass       {secs:>8.3} s   ({} contacts; {} allowed, {} deferred)",
        inc.examined, inc.allowed, inc.deferred
    );
    full("full pass, a day later", now + chrono::Duration::days(1));
    println!(
        "peak resident memory   {:>8.0} MB",
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    // Leave the store as generated for the next run (scores are redone by
    // the rescore bench's full rebuild).
    raw.execute_batch(&format!(
        "DELETE FROM events WHERE seq > {events};
             DELETE FROM outbox; DELETE FROM plan_wake; DELETE FROM decision_log;
             DELETE FROM plan_memo; DELETE FROM meta WHERE key LIKE 'plan.%';"
    ))
    .expect("cleanup");
}
