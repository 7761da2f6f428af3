//! The call desk at a million contacts: the cost of duplicate detection on
//! an import (the same import without detection, checked batch by batch,
//! and as `relance import` loads a large file, alternated), then `calls
//! today`, `scores distribution` and `campaigns` read from what the passes
//! maintain, on the rescore
//! benchmark's store (1,000,000 contacts, 20,004,003 events) copied, with
//! a fortnight of calls, a broadcast and its reactions added.
//!
//! Run: `cargo bench -p relance --bench rescore` once (it generates the
//! store), then `cargo bench -p relance --bench desk`.
//! Size: RELANCE_BENCH_CONTACTS (default 1,000,000); RELANCE_BENCH_ROUNDS
//! (default 2) rounds of the three imports (0: none);
//! RELANCE_BENCH_IMPORTS_ONLY=1 stops after them; RELANCE_BENCH_IN_PLACE=1
//! adds the calls to the rescore store itself instead of a copy.

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

/// How an import treats duplicates.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// No detection: the key indexes dropped, the raw email indexed (as
    /// before migration 13, for the dashboard's search by email).
    Plain,
    /// Each batch checked in its transaction, the key indexes kept (the
    /// API's way, and `relance import` for a small file).
    Checked,
    /// As `relance import` of a large file: the first 20,000 lines
    /// checked, then a bulk load (`begin_contact_load`), the key indexes
    /// built at its end and every group read once.
    Bulk,
}

/// Imports `n` contacts in batches of 2,000 (as `relance import`). Returns
/// wall seconds, CPU seconds and flags.
fn import(path: &Path, n: usize, mode: Mode) -> (f64, f64, usize) {
    let store = SqliteStore::open(path, Duration::from_secs(30), 64).expect("open");
    if mode == Mode::Plain {
        rusqlite::Connection::open(path)
            .expect("raw")
            .execute_batch(
                "DROP INDEX contacts_by_email_key; DROP INDEX contacts_by_phone_key;
                 CREATE INDEX contacts_by_email ON contacts(email);",
            )
            .expect("drop");
    }
    let cpu = common::process_cpu_secs().unwrap_or(0.0);
    let started = Instant::now();
    let mut flagged = 0;
    let mut bulk = false;
    let ids: Vec<usize> = (0..n).collect();
    for (i, chunk) in ids.chunks(2_000).enumerate() {
        let batch: Vec<Patch> = chunk.iter().map(|i| patch(*i)).collect();
        match mode {
            Mode::Plain => {
                store.upsert_contacts(&batch).expect("upsert");
            }
            Mode::Bulk if i >= 10 => {
                if !bulk {
                    store.begin_contact_load().expect("begin");
                    bulk = true;
                }
                store.upsert_contacts(&batch).expect("upsert");
            }
            Mode::Checked | Mode::Bulk => {
                flagged += store
                    .upsert_contacts_checked(&batch)
                    .expect("upsert")
                    .1
                    .len();
            }
        }
    }
    if bulk {
        // Every contact is the file's: each member of a group is a flag.
        flagged = store
            .end_contact_load()
            .expect("end")
            .iter()
            .map(|g| g.contacts.len())
            .sum();
    }
    let wall = started.elapsed().as_secs_f64();
    (
        wall,
        common::process_cpu_secs().unwrap_or(0.0) - cpu,
        flagged,
    )
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let cpu = common::process_cpu_secs().unwrap_or(0.0);
    let started = Instant::now();
    let out = f();
    println!(
        "{what:<44} {:>8.3} s wall, {:>7.2} s cpu",
        started.elapsed().as_secs_f64(),
        common::process_cpu_secs().unwrap_or(0.0) - cpu
    );
    out
}

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let n: usize = std::env::var("RELANCE_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("desk benchmark: {n} contacts");

    let rounds: usize = std::env::var("RELANCE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // The three imports, alternated round by round.
    let kinds = [
        ("without duplicate detection", Mode::Plain),
        ("checked batch by batch", Mode::Checked),
        ("bulk load (shipped import)", Mode::Bulk),
    ];
    let mut wall = vec![Vec::new(); kinds.len()];
    let mut cpu = vec![Vec::new(); kinds.len()];
    let mut flagged = vec![0; kinds.len()];
    println!("load average before the imports: {}", load());
    for round in 0..rounds {
        for k in 0..kinds.len() {
            // Odd rounds in reverse order: neither side always runs first.
            let k = if round % 2 == 1 {
                kinds.len() - 1 - k
            } else {
                k
            };
            let (name, mode) = kinds[k];
            let path = fresh("desk-import.db");
            let (w, c, f) = import(&path, n, mode);
            remove(&path);
            println!("round {round}: import {name:<36} {w:>6.2} s wall, {c:>6.2} s cpu");
            wall[k].push(w);
            cpu[k].push(c);
            flagged[k] = f;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (k, (name, _)) in kinds.iter().enumerate() {
        let (w, c) = (median(&wall[k]), median(&cpu[k]));
        println!(
            "import {name:<36} median {w:>6.2} s wall ({:+.1} %), {c:>6.2} s cpu ({:+.1} %), {} flags",
            (w / median(&wall[0]) - 1.0) * 100.0,
            (c / median(&cpu[0]) - 1.0) * 100.0,
            flagged[k]
        );
    }
    println!("load average after the imports: {}", load());
    if std::env::var_os("RELANCE_BENCH_IMPORTS_ONLY").is_some() {
        return;
    }

    // The rescore benchmark's store, copied: the reports below run on
    // 20 M events without changing what that benchmark measures.
    let (contacts, _, source) = common::bench_store();
    assert!(
        source.exists() && contacts == n,
        "run `cargo bench -p relance --bench rescore` first: it generates {}",
        source.display()
    );
    // RELANCE_BENCH_IN_PLACE=1: on the rescore store itself (no second
    // 3 GB on a full disk); the calls and the broadcast then stay in it.
    let in_place = std::env::var_os("RELANCE_BENCH_IN_PLACE").is_some();
    let keyed = if in_place {
        source.clone()
    } else {
        let keyed = fresh("desk-20m.db");
        let started = Instant::now();
        for suffix in ["", "-wal"] {
            let from = format!("{}{suffix}", source.display());
            if Path::new(&from).exists() {
                std::fs::copy(&from, format!("{}{suffix}", keyed.display())).expect("copy");
            }
        }
        println!(
            "copied {} ({:.0} s, not measured)",
            source.display(),
            started.elapsed().as_secs_f64()
        );
        keyed
    };

    // A fortnight of calls, a broadcast to a fifth of the contacts and
    // reactions to it, then the pass that maintains the desk.
    // RELANCE_BENCH_REPORTS_ONLY=1 (with RELANCE_BENCH_IN_PLACE=1, after a
    // full run): the reports alone, on the store as that run left it.
    let now: Timestamp = "2026-11-20T12:00:00Z".parse().expect("instant");
    let store = SqliteStore::open(&keyed, Duration::from_secs(30), 64).expect("open");
    let config = common::shipped_config(&keyed);
    if std::env::var_os("RELANCE_BENCH_REPORTS_ONLY").is_none() {
        add_calls(&store, &keyed, &config, n, now);
    }
    reports(&store, &config, now);
    drop(store);
    if !in_place {
        remove(&keyed);
    }
}

/// A fortnight of calls, a broadcast to a fifth of the contacts and its
/// reactions, then the scoring pass that maintains the desk.
fn add_calls(
    store: &SqliteStore,
    keyed: &Path,
    config: &relance::pipeline::config::Config,
    n: usize,
    now: Timestamp,
) {
    let sent_at = now - chrono::Duration::days(3);
    rusqlite::Connection::open(keyed)
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
    println!(
        "{} events in the store; load average {}",
        common::count_events(keyed),
        load()
    );
    let cpu = common::process_cpu_secs().unwrap_or(0.0);
    time("full scoring pass (maintains the desk)", || {
        relance::pipeline::rescore::rescore(store, config, now, true).expect("rescore")
    });
    println!(
        "  cpu, all threads                           {:>8.3} s; load average {}",
        common::process_cpu_secs().unwrap_or(0.0) - cpu,
        load()
    );
}

/// The reports, each read as a user would ask for it; `calls today` first
/// right after the pass, then twice more.
fn reports(store: &SqliteStore, config: &relance::pipeline::config::Config, now: Timestamp) {
    let today = time("relance calls today", || {
        report::calls_today(store, config, now, None, 0, 100).expect("today")
    });
    // RELANCE_BENCH_TODAY_ONLY=N: `calls today` N times more, nothing else
    // (to profile it).
    if let Some(n) = std::env::var("RELANCE_BENCH_TODAY_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for _ in 0..n {
            time("relance calls today (again)", || {
                report::calls_today(store, config, now, None, 0, 100).expect("today")
            });
        }
        return;
    }
    for _ in 0..2 {
        time("relance calls today (again)", || {
            report::calls_today(store, config, now, None, 0, 100).expect("today")
        });
    }
    let ana = time("relance calls today --owner ana", || {
        report::calls_today(store, config, now, Some("ana"), 0, 100).expect("today")
    });
    time("relance calls today --offset 10000", || {
        report::calls_today(store, config, now, None, 10_000, 100).expect("today")
    });
    let dist = time("relance scores distribution", || {
        report::score_distribution(store, config, 10).expect("distribution")
    });
    let campaigns = time("relance campaigns", || {
        report::campaigns(store, config, now).expect("campaigns")
    });
    let kpis = time("relance calls kpis --by day (28 days)", || {
        let from = now - chrono::Duration::days(28);
        report::call_kpis(
            store,
            config,
            from,
            now,
            relance::domain::desk::kpis::By::Day,
            None,
        )
        .expect("kpis")
    });
    let lists = time("relance calls lists (1,000 per list)", || {
        report::call_lists(store, now, 1_000).expect("lists")
    });
    let groups = time("relance contacts duplicates", || {
        store.duplicate_groups().expect("duplicates")
    });
    let bench = campaigns.iter().find(|c| c.name == "bench");
    println!(
        "to call today {} (ana {}); scores {}; broadcast sent {:?} clicked {:?}; {} calls; \
         never called {}; {} duplicate groups",
        today.total,
        ana.total,
        dist.contacts,
        bench.map(|c| c.sent),
        bench.map(|c| c.clicked),
        kpis.total.calls,
        lists.never_called.total,
        groups.len()
    );
    println!("load average after the reports: {}", load());
}
