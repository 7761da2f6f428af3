//! Store throughput on a real SQLite file: contact upserts, event appends
//! in batches of 1,000, a full history scan (what a rebuild reads) and the
//! lookup of contacts with new events (what an incremental pass reads).
//!
//! Run: `cargo bench --bench store`
//! Size: RELANCE_BENCH_CONTACTS (default 1,000,000) and
//! RELANCE_BENCH_EVENTS (events per contact, default 20).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use relance::core::model::Event;
use relance::domain::ingest::{Incoming, Patch};
use relance::ports::store::Records;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

const KINDS: [&str; 8] = [
    "email_open",
    "email_click",
    "page_visit",
    "download",
    "email_sent",
    "call",
    "form_submit",
    "webinar_signup",
];

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let contacts = env("RELANCE_BENCH_CONTACTS", 1_000_000);
    let per_contact = env("RELANCE_BENCH_EVENTS", 20);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("store.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = relance::adapters::sqlite::SqliteStore::open(&path, Duration::from_secs(30), 64)
        .expect("open");
    println!(
        "store benchmark: {contacts} contacts, {} events",
        contacts * per_contact
    );

    let started = Instant::now();
    for chunk in (0..contacts).collect::<Vec<_>>().chunks(5_000) {
        let batch: Vec<Patch> = chunk
            .iter()
            .map(|i| {
                let mut p = Patch {
                    id: format!("c{i:07}"),
                    ..Patch::default()
                };
                p.fields
                    .insert("email".into(), Value::String(format!("c{i}@example.com")));
                p.fields
                    .insert("status".into(), Value::String("prospect".into()));
                p.attributes
                    .insert("headcount".into(), Value::from((i % 900) as i64));
                p
            })
            .collect();
        store.upsert_contacts(&batch).expect("upsert");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "contacts upserted      {:>10.0} /s   ({secs:.1} s)",
        contacts as f64 / secs
    );

    // Events arrive in time order across contacts, as they would in life.
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&chrono::Utc);
    let total = contacts * per_contact;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1_000);
    for n in 0..total {
        let contact = (n.wrapping_mul(2_654_435_761)) % contacts;
        let mut props = Map::new();
        if n % 8 == 2 {
            props.insert(
                "url".into(),
                Value::String(if n % 3 == 0 {
                    "/pricing".into()
                } else {
                    "/blog".into()
                }),
            );
        }
        batch.push(Incoming::Contact(Event {
            id: Some(format!("e{n}")),
            contact: format!("c{contact:07}"),
            kind: KINDS[n % KINDS.len()].into(),
            at: base + chrono::Duration::seconds((n as i64) * 300 / per_contact as i64),
            channel: None,
            props,
        }));
        if batch.len() == 1_000 {
            store.append_events(&batch).expect("append");
            batch.clear();
        }
    }
    store.append_events(&batch).expect("append");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "events appended        {:>10.0} /s   ({secs:.1} s, batches of 1,000)",
        total as f64 / secs
    );

    let mark = store.last_event_seq().expect("seq");
    let started = Instant::now();
    let (mut seen, mut events) = (0usize, 0usize);
    store
        .scan_histories(&mut |_, history| {
            seen += 1;
            events += history.len();
        })
        .expect("scan");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!((seen, events), (contacts, total));
    println!(
        "full history scan      {:>10.0} events/s ({secs:.1} s)",
        total as f64 / secs
    );

    // 1 % of contacts receive a new event; find them as an incremental pass would.
    let changed: Vec<Incoming> = (0..contacts / 100)
        .map(|i| {
            Incoming::Contact(Event {
                id: Some(format!("late{i}")),
                contact: format!("c{:07}", i * 100),
                kind: "page_visit".into(),
                at: base + chrono::Duration::days(400),
                channel: None,
                props: Map::new(),
            })
        })
        .collect();
    for chunk in changed.chunks(1_000) {
        store.append_events(chunk).expect("append");
    }
    let started = Instant::now();
    let ids = store.contacts_with_events_after(mark).expect("changed");
    let mut loaded = 0usize;
    for id in &ids {
        loaded += store.events_of(id).expect("events").len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "incremental read       {:>10} contacts, {loaded} events in {:.3} s",
        ids.len(),
        secs
    );
    println!("peak resident memory   {:>10.0} MB", peak_rss_mb());
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("store file             {:>10.0} MB", size as f64 / 1e6);
    drop(store);
    stored_bytes(&path);
}

/// Pages of the events and what serves them (de-duplication keys, change
/// feed, dictionaries, their indexes), per stored event (SQLite's dbstat).
fn stored_bytes(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    let mut stmt = conn
        .prepare(
            "SELECT name, sum(pgsize) FROM dbstat WHERE name IN (
                 SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND tbl_name IN
                   ('events', 'event_ids', 'event_feed', 'event_names', 'event_props'))
             GROUP BY name ORDER BY 2 DESC",
        )
        .expect("dbstat");
    let sizes: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("dbstat")
        .collect::<Result<_, _>>()
        .expect("dbstat");
    let total: i64 = sizes.iter().map(|(_, n)| n).sum();
    let each = |n: i64| n as f64 / events.max(1) as f64;
    println!(
        "stored bytes per event {:>10.1}   ({})",
        each(total),
        sizes
            .iter()
            .map(|(name, n)| format!("{name} {:.1}", each(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
