//! Rescoring passes over a real SQLite store, under the shipped rules:
//! a full rebuild from the events, then an incremental pass after 1 % of
//! the contacts received a new event, and the peak resident memory.
//!
//! Run: `cargo bench --bench rescore` (1,000,000 contacts, about 20,000,000
//! events; `RELANCE_BENCH_CONTACTS` to resize). The store is generated once
//! under target/bench/ and reused; generating it is not measured.
//!
//! On PostgreSQL: `RELANCE_BENCH_PG=postgres://postgres@127.0.0.1:5432
//! cargo bench --bench rescore` runs the same passes on the database
//! `relance_bench_rescore_N` (prefix: `RELANCE_BENCH_PG_PREFIX`), which it
//! creates and fills from the SQLite store (`relance store copy`'s code)
//! when missing, and keeps for the plan benchmark.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use common::{Rng, companies, contact, events, peak_rss_kib, process_cpu_secs};
use relance::core::model::Timestamp;
use relance::pipeline::rescore::rescore;
use rusqlite::params;
use std::collections::HashMap;
use std::time::Instant;

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let (contacts, now, db) = common::bench_store();
    let mut config = common::shipped_config(&db);

    if !db.exists() {
        // Opened (created, migrated) by the store, then written straight
        // through SQL.
        drop(relance::adapters::sqlite::open(&config).expect("store"));
        let raw = rusqlite::Connection::open(&db).expect("open");
        let started = Instant::now();
        let total = generate(&raw, contacts, now);
        println!(
            "generated {contacts} contacts and {total} events in {:.0} s (not measured)",
            started.elapsed().as_secs_f64()
        );
        // RELANCE_BENCH_GENERATE_ONLY=1: stop here, the store never scored
        // (to copy it, and time first builds of two versions from it).
        if std::env::var_os("RELANCE_BENCH_GENERATE_ONLY").is_some() {
            return;
        }
    }
    let (store, bench_db) = common::BenchDb::open(contacts, &db, &mut config, true);
    // The last sequence number marks this run's events for the cleanup; it
    // runs ahead of the count, as numbers are never reused.
    let events = store.last_event_seq().expect("seq");
    let stored = bench_db.count_events();
    println!(
        "rescore benchmark ({}): {contacts} contacts, {stored} events, shipped rules",
        bench_db.label()
    );

    // RELANCE_BENCH_INCREMENTAL_ONLY=1 skips the rebuild (the store must have
    // been scored by an earlier run), to profile the incremental pass alone.
    if std::env::var_os("RELANCE_BENCH_INCREMENTAL_ONLY").is_none() {
        let cpu = process_cpu_secs();
        let started = Instant::now();
        let full = rescore(&*store, &config, now, true).expect("full rebuild");
        let full_secs = started.elapsed().as_secs_f64();
        println!(
            "full rebuild           {full_secs:>8.2} s   ({} contacts, {:.0} events/s)",
            full.examined,
            stored as f64 / full_secs
        );
        if let (Some(a), Some(b)) = (cpu, process_cpu_secs()) {
            println!("  cpu, all threads     {:>8.3} s", b - a);
        }
        // For bench/baselines.sh, which checks its own bands against these.
        let bands = store.band_counts().expect("bands");
        println!("bands after the rebuild {bands:?}");
    }

    // 1 % of the contacts get a new event, as between two passes of a busy day.
    // Each run picks other contacts (the sequence numbers move on even though
    // the cleanup below deletes the events): the same ones again would find
    // their scores already up to date and write nothing.
    let mut rng = Rng(0xC0FFEE ^ events as u64);
    let fresh = common::pricing_visits(&mut rng, contacts, contacts / 100, now, "bench-late");
    for chunk in fresh.chunks(1_000) {
        store.append_events(chunk).expect("append");
    }
    let cpu_start = process_cpu_secs();
    let started = Instant::now();
    let pass = rescore(&*store, &config, now, false).expect("incremental pass");
    let inc_secs = started.elapsed().as_secs_f64();
    println!(
        "incremental pass       {inc_secs:>8.3} s   ({} contacts rescored, {} changed)",
        pass.examined, pass.changed
    );
    // Wall time depends on what else the machine runs; CPU time much less.
    if let (Some(a), Some(b)) = (cpu_start, process_cpu_secs()) {
        println!("  cpu, all threads     {:>8.3} s", b - a);
    }
    let bands = store.band_counts().expect("bands");
    println!("bands                  {bands:?}");
    println!(
        "peak resident memory   {:>8.0} MB",
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    // Leave the store as generated for the next run.
    drop(store);
    bench_db.delete_events_after(events);
}

/// Writes the data set straight through SQL in large transactions, in the
/// store's own layout (see adapters/sqlite/events.rs: names and props
/// interned, each contact's newest number in the feed); events are
/// produced per contact, already in order.
fn generate(conn: &rusqlite::Connection, contacts: usize, now: Timestamp) -> usize {
    let mut rng = Rng(0x5EED);
    let companies = companies(&mut rng, now);
    conn.execute_batch("BEGIN").expect("begin");
    for co in &companies {
        conn.execute(
            "INSERT INTO companies (id, name, attributes) VALUES (?1, ?2, ?3)",
            params![
                co.id,
                co.name,
                serde_json::to_string(&co.attributes).expect("json")
            ],
        )
        .expect("company");
        for s in &co.signals {
            conn.execute(
                "INSERT INTO company_signals (company, dedup, kind, at, props)
                 SELECT rowid, randomblob(16), ?2, ?3, '{}' FROM companies WHERE id = ?1",
                params![co.id, s.kind, s.at.timestamp_micros()],
            )
            .expect("signal");
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    let mut seq: i64 = 0;
    let mut buf = Vec::new();
    let (mut names, mut props_ids) = (HashMap::new(), HashMap::new());
    for start in (0..contacts).step_by(10_000) {
        conn.execute_batch("BEGIN").expect("begin");
        {
            let mut ins_contact = conn
                .prepare_cached(
                    "INSERT INTO contacts (id, record, company, email) VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            let mut ins_event = conn
                .prepare_cached(
                    "INSERT INTO events (contact, at, seq, type, channel, props)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                )
                .expect("prepare");
            let mut ins_feed = conn
                .prepare_cached("INSERT INTO event_feed (contact, seq) VALUES (?1, ?2)")
                .expect("prepare");
            for i in start..(start + 10_000).min(contacts) {
                let c = contact(&mut rng, i);
                ins_contact
                    .execute(params![
                        c.id,
                        serde_json::to_string(&c).expect("json"),
                        c.company,
                        c.email
                    ])
                    .expect("contact");
                let rowid = conn.last_insert_rowid();
                events(&mut rng, &c.id, now, &mut buf);
                for e in &buf {
                    seq += 1;
                    let props = if e.props.is_empty() {
                        None
                    } else {
                        let text = serde_json::to_string(&e.props).expect("json");
                        Some(intern(conn, &mut props_ids, "event_props", "props", &text))
                    };
                    ins_event
                        .execute(params![
                            rowid,
                            e.at.timestamp_micros(),
                            seq,
                            intern(conn, &mut names, "event_names", "name", &e.kind),
                            props
                        ])
                        .expect("event");
                }
                if !buf.is_empty() {
                    ins_feed.execute(params![rowid, seq]).expect("feed");
                }
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('events.last_seq', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [seq.to_string()],
    )
    .expect("last seq");
    seq as usize
}

/// The id of `value` in a dictionary table of the store, added if new.
fn intern(
    conn: &rusqlite::Connection,
    ids: &mut HashMap<String, i64>,
    table: &str,
    column: &str,
    value: &str,
) -> i64 {
    if let Some(&id) = ids.get(value) {
        return id;
    }
    let id = conn
        .prepare_cached(&format!(
            "INSERT INTO {table} ({column}) VALUES (?1)
             ON CONFLICT({column}) DO UPDATE SET {column} = excluded.{column} RETURNING id"
        ))
        .expect("prepare")
        .query_row([value], |r| r.get(0))
        .expect("intern");
    ids.insert(value.to_owned(), id);
    id
}
