//! The call desk at a million contacts: the cost of duplicate detection on
//! an import (same import with and without the normalised-key indexes and
//! the flag check), then `calls today`, `scores distribution` and
//! `campaigns` read from what the scoring pass maintains.
//!
//! Run: `cargo bench -p relance --bench desk`
//! Size: RELANCE_BENCH_CONTACTS (default 1,000,000).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use common::Rng;
use relance::adapters::sqlite::SqliteStore;
use relance::core::model::{Event, Timestamp};
use relance::domain::followups::BroadcastSpec;
use relance::domain::ingest::{Incoming, Patch};
use relance::pipeline::report;
use relance::ports::store::{DeskStore, PlanStore, Records};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OWNERS: [&str; 10] = [
    "ana", "bob", "carl", "dina", "eve", "fred", "gina", "hugo", "ines", "jon",
];
const CODES: [&str; 11] = [
    "NRP", "NRP", "NRP", "OCC", "RAPP", "PISTE", "PROJET", "MAIL", "REFUS", "RDV", "ERR",
];

fn fresh(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn patch(i: usize) -> Patch {
    let mut p = Patch {
        id: format!("c{i}"),
        ..Patch::default()
    };
    // One contact in a hundred is the previous one again, under another id,
    // its email in capitals.
    let email = if i % 100 == 99 {
        format!("C{}@EXAMPLE.COM", i - 1)
    } else {
        format!("c{i}@example.com")
    };
    p.fields.insert("email".into(), Value::String(email));
    p.fields.insert(
        "phone".into(),
        Value::String(format!(
            "06 {:02} {:02} {:02} {:02}",
            i / 1_000_000 % 100,
            i / 10_000 % 100,
            i / 100 % 100,
            i % 100
        )),
    );
    p.fields
        .insert("status".into(), Value::String("prospect".into()));
    p.fields.insert(
        "owner".into(),
        Value::String(OWNERS[i % OWNERS.len()].into()),
    );
    p
}

/// Imports `n` contacts in batches of 2,000 (as `relance import`); with
/// `keys`, the key indexes kept, without, dropped; with `check`, the flag
/// check on each batch (as shipped: both). Returns seconds and flags.
fn import(path: &Path, n: usize, keys: bool, check: bool) -> (f64, usize) {
    let store = SqliteStore::open(path, Duration::from_secs(30), 64).expect("open");
    if !keys {
        rusqlite::Connection::open(path)
            .expect("raw")
            .execute_batch("DROP INDEX contacts_by_email_key; DROP INDEX contacts_by_phone_key;")
            .expect("drop");
    }
    let started = Instant::now();
    let mut flagged = 0;
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(2_000) {
        let batch: Vec<Patch> = chunk.iter().map(|i| patch(*i)).collect();
        store.upsert_contacts(&batch).expect("upsert");
        if check {
            let ids: Vec<String> = batch.iter().map(|p| p.id.clone()).collect();
            flagged += store.duplicates_of(&ids).expect("flags").len();
        }
    }
    (started.elapsed().as_secs_f64(), flagged)
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    println!("{what:<44} {:>8.3} s", started.elapsed().as_secs_f64());
    out
}

fn main() {
    let n: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("desk benchmark: {n} contacts");

    let plain = fresh("desk-plain.db");
    let (base, _) = import(&plain, n, false, false);
    let indexed = fresh("desk-indexed.db");
    let (with_indexes, _) = import(&indexed, n, true, false);
    let keyed = fresh("desk.db");
    let (with_keys, flagged) = import(&keyed, n, true, true);
    println!(
        "import without key indexes and check    {base:>8.1} s\n\
         import with key indexes, no check       {with_indexes:>8.1} s  ({:+.1} %)\n\
         import with duplicate detection         {with_keys:>8.1} s  ({:+.1} %, {flagged} flagged)",
        (with_indexes / base - 1.0) * 100.0,
        (with_keys / base - 1.0) * 100.0
    );
    for path in [&plain, &indexed] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    // A fortnight of calls, a broadcast to a fifth of the contacts and
    // reactions to it, then the pass that maintains the desk.
    let now: Timestamp = "2026-11-20T12:00:00Z".parse().expect("instant");
    let store = SqliteStore::open(&keyed, Duration::from_secs(30), 64).expect("open");
    let sent_at = now - chrono::Duration::days(3);
    rusqlite::Connection::open(&keyed)
        .expect("raw")
        .execute(
            "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel, state,
               due_at, first_due, updated_at)
             SELECT 'k' || rowid, rowid, 'bench', 'event', 20, 'email', 'sent', ?1, ?1, ?1
             FROM contacts WHERE rowid % 5 = 0",
            [sent_at.timestamp_micros()],
        )
        .expect("sends");
    let segment = toml::from_str("field = \"status\"\neq = \"prospect\"").expect("segment");
    store
        .create_broadcast(
            &BroadcastSpec {
                id: "bench".into(),
                name: "bench".into(),
                segment,
                channel: "email".into(),
                template: "news".into(),
                start: sent_at,
                end: now + chrono::Duration::days(30),
                exempt: false,
                priority: None,
            },
            sent_at,
        )
        .expect("broadcast");
    let mut rng = Rng(7);
    let mut batch = Vec::with_capacity(10_000);
    let mut events = 0usize;
    let started = Instant::now();
    for i in 0..n {
        let contact = format!("c{i}");
        let mut push = |kind: &str, at: Timestamp, props: Map<String, Value>| {
            batch.push(Incoming::Contact(Event {
                id: None,
                contact: contact.clone(),
                kind: kind.into(),
                at,
                channel: None,
                props,
            }));
        };
        if rng.below(10) < 3 {
            for _ in 0..=rng.below(3) {
                let mut props = Map::new();
                props.insert("outcome".into(), json!(*rng.pick(&CODES)));
                props.insert("owner".into(), json!(OWNERS[i % OWNERS.len()]));
                let at = now - chrono::Duration::minutes(rng.below(14 * 24 * 60) as i64);
                push("call", at, props);
            }
        }
        let rowid = i + 1;
        if rowid % 5 == 0 {
            let key = |k: usize| {
                let mut p = Map::new();
                p.insert("key".into(), json!(format!("k{k}")));
                p
            };
            if rng.below(4) == 0 {
                push(
                    "email_open",
                    sent_at + chrono::Duration::hours(2),
                    key(rowid),
                );
            }
            if rng.below(50) == 0 {
                push(
                    "email_click",
                    sent_at + chrono::Duration::hours(3),
                    key(rowid),
                );
            }
        }
        if batch.len() >= 10_000 {
            events += batch.len();
            store.append_events(&batch).expect("append");
            batch.clear();
        }
    }
    events += batch.len();
    store.append_events(&batch).expect("append");
    println!(
        "{events} events appended                  {:>8.1} s",
        started.elapsed().as_secs_f64()
    );
    let config = common::shipped_config(&keyed);
    time("full scoring pass (maintains the desk)", || {
        relance::pipeline::rescore::rescore(&store, &config, now, true).expect("rescore")
    });
    let today = time("relance calls today", || {
        report::calls_today(&store, &config, now, None).expect("today")
    });
    let ana = time("relance calls today --owner ana", || {
        report::calls_today(&store, &config, now, Some("ana")).expect("today")
    });
    let dist = time("relance scores distribution", || {
        report::score_distribution(&store, &config, 10).expect("distribution")
    });
    let campaigns = time("relance campaigns", || {
        report::campaigns(&store, &config, now).expect("campaigns")
    });
    let kpis = time("relance calls kpis --by day (28 days)", || {
        let from = now - chrono::Duration::days(28);
        report::call_kpis(
            &store,
            &config,
            from,
            now,
            relance::domain::desk::kpis::By::Day,
            None,
        )
        .expect("kpis")
    });
    let lists = time("relance calls lists (1,000 per list)", || {
        report::call_lists(&store, now, 1_000).expect("lists")
    });
    let groups = time("relance contacts duplicates", || {
        store.duplicate_groups().expect("duplicates")
    });
    let bench = campaigns.iter().find(|c| c.name == "bench");
    println!(
        "to call today {} (ana {}); scores {}; broadcast sent {:?} clicked {:?}; {} calls; \
         never called {}; {} duplicate groups",
        today.len(),
        ana.len(),
        dist.contacts,
        bench.map(|c| c.sent),
        bench.map(|c| c.clicked),
        kpis.total.calls,
        lists.never_called.total,
        groups.len()
    );
}
