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
//! With `RELANCE_BENCH_PG` set (see the rescore benchmark), both run on
//! the PostgreSQL copy of the store.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use common::{Rng, peak_rss_kib};
use relance::pipeline::plan;
use relance::pipeline::rescore::rescore;
use std::time::Instant;

/// The daemon's upkeep once a pass is over and nothing new comes
/// (`Records::tidy`): timed apart, as it falls outside the passes there.
fn upkeep(store: &dyn relance::ports::store::Store) {
    let started = Instant::now();
    store.tidy().expect("upkeep");
    println!(
        "{:<22} {:>8.2} s   (the daemon's, when idle)",
        "store upkeep",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let (contacts, now, db) = common::bench_store();
    if !db.exists() {
        eprintln!(
            "{} is missing: run `RELANCE_BENCH_CONTACTS={contacts} cargo bench --bench rescore` first",
            db.display()
        );
        std::process::exit(2);
    }
    let mut config = common::shipped_config(&db);
    let (store, bench_db) = common::BenchDb::open(contacts, &db, &mut config, false);
    // Every run starts from an empty plan, but for
    // RELANCE_BENCH_INCREMENTAL_ONLY=1, which repeats the incremental pass
    // alone on the plan an earlier such run left (its first one plans
    // everything first, untimed), to profile that pass.
    const RESET: &str = "DELETE FROM outbox; DELETE FROM plan_wake; DELETE FROM decision_log;
             DELETE FROM plan_memo; DELETE FROM meta WHERE key LIKE 'plan.%';";
    let incremental_only = std::env::var_os("RELANCE_BENCH_INCREMENTAL_ONLY").is_some();
    let planned = store.meta("plan.at").expect("meta").is_some();
    if !incremental_only {
        bench_db.execute(RESET);
        bench_db.settle(&[
            "events",
            "outbox",
            "plan_wake",
            "plan_memo",
            "decision_log",
            "meta",
        ]);
    } else if !planned {
        plan::run(&*store, &config, now, true).expect("full pass");
    }
    // The last sequence number runs ahead of the count: numbers are never
    // reused.
    let events = store.last_event_seq().expect("seq");
    let stored = bench_db.count_events();
    println!(
        "plan benchmark ({}): {contacts} contacts, {stored} events, shipped rules",
        bench_db.label()
    );

    // Each phase: wall time, CPU time over every thread, and its own peak
    // resident memory (the peak is started again before each).
    let mut peaks = Vec::new();
    let mut phase = |label: &str, run: &mut dyn FnMut() -> plan::PassReport| {
        let reset = common::reset_peak_rss();
        let cpu = common::process_cpu_secs();
        let started = Instant::now();
        let r = run();
        let secs = started.elapsed().as_secs_f64();
        let cpu = match (cpu, common::process_cpu_secs()) {
            (Some(a), Some(b)) => format!("{:.2} s cpu", b - a),
            _ => "cpu unknown".into(),
        };
        let peak = peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
        peaks.push(peak);
        let peak = if reset {
            format!("peak {peak:.0} MB")
        } else {
            format!("peak so far {peak:.0} MB")
        };
        println!(
            "{label:<22} {secs:>8.2} s   ({} contacts, {:.0}/s; {} allowed, {} deferred, {} blocked; {cpu}, {peak})",
            r.examined,
            r.examined as f64 / secs,
            r.allowed,
            r.deferred,
            r.blocked
        );
    };
    if !incremental_only {
        phase("first full pass", &mut || {
            plan::run(&*store, &config, now, true).expect("full pass")
        });
        upkeep(&*store);
    }

    // 1 % of the contacts visit the pricing page, then are rescored; each
    // incremental-only run picks others (the sequence numbers move on).
    let mut rng = Rng(if incremental_only {
        0xBEEF ^ events as u64
    } else {
        0xBEEF
    });
    let prefix = if incremental_only {
        format!("bench-plan-{events}")
    } else {
        "bench-plan".into()
    };
    let fresh = common::pricing_visits(&mut rng, contacts, contacts / 100, now, &prefix);
    for chunk in fresh.chunks(1_000) {
        store.append_events(chunk).expect("append");
    }
    rescore(&*store, &config, now, false).expect("rescore");
    phase("incremental pass", &mut || {
        plan::run(&*store, &config, now, false).expect("incremental pass")
    });
    if incremental_only {
        // The plan and the new events stay, for the next such run.
        return;
    }
    upkeep(&*store);
    phase("full pass, a day later", &mut || {
        plan::run(&*store, &config, now + chrono::Duration::days(1), true).expect("full pass")
    });
    println!(
        "peak resident memory   {:>8.0} MB (the largest of the phases)",
        peaks.iter().copied().fold(0.0, f64::max)
    );
    // Leave the store as generated for the next run (scores are redone by
    // the rescore bench's full rebuild).
    drop(store);
    bench_db.delete_events_after(events);
    bench_db.execute(RESET);
}
