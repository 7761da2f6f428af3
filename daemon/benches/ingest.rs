//! Sustained ingest through the HTTP API over loopback into the embedded
//! store, or PostgreSQL: clients post batches of 1,000 events (JSON arrays)
//! side by side, as producers would; the figure is events accepted per
//! second.
//!
//! Run: `cargo bench --bench ingest`; on PostgreSQL,
//! `RELANCE_BENCH_PG=postgres://postgres@127.0.0.1:5432 cargo bench --bench
//! ingest` (a database created for the run and dropped after it, named
//! with `RELANCE_BENCH_PG_PREFIX`, `relance_bench_` by default).
//! Size: RELANCE_BENCH_CONTACTS (default 50,000), RELANCE_BENCH_EVENTS
//! (total, default 1,000,000), RELANCE_BENCH_CLIENTS (default 64: a group
//! commit carries what the clients have in flight, so few clients make
//! small transactions).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use relance::adapters::api::{ApiState, serve};
use relance::core::clock::Clock;
use relance::core::metrics::Metrics;
use relance::core::shutdown::Coordinator;
use relance::domain::ingest::Patch;
use relance::pipeline::config::Config;

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token-0123456789";
const BATCH: usize = 1_000;
const KINDS: [&str; 6] = [
    "email_open",
    "email_click",
    "page_visit",
    "download",
    "form_submit",
    "webinar_signup",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let contacts = env("RELANCE_BENCH_CONTACTS", 50_000);
    let total = env("RELANCE_BENCH_EVENTS", 1_000_000);
    let clients = env("RELANCE_BENCH_CLIENTS", 64);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/ingest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let file = dir.join("relance.toml");
    let pg = common::PgBench::from_env();
    let database = pg
        .as_ref()
        .map(|pg| pg.database(&format!("ingest_{}", std::process::id())));
    let store_section = match (&pg, &database) {
        (Some(pg), Some(db)) => {
            pg.create(db);
            format!("url = \"{}\"\npool = 16", pg.url(db))
        }
        _ => "path = \"ingest.db\"".to_string(),
    };
    std::fs::write(
        &file,
        format!(
            "[store]\n{store_section}\n\n[api]\nenabled = true\ntokens = [\"{TOKEN}\"]\n\
             tracking_secret = \"bench-secret-0123456789\"\nmax_batch = {BATCH}\n"
        ),
    )
    .expect("config");
    let config = Arc::new(Config::load(&file).unwrap_or_else(|e| panic!("{e}")));

    let store = relance::adapters::open_store(&config).expect("open");
    for chunk in (0..contacts).collect::<Vec<_>>().chunks(5_000) {
        let batch: Vec<Patch> = chunk
            .iter()
            .map(|i| Patch {
                id: format!("c{i:07}"),
                ..Patch::default()
            })
            .collect();
        store.upsert_contacts(&batch).expect("contacts");
    }
    let reopen = config.clone();

    // Bodies are built before the clock starts: the figure is the server's.
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&chrono::Utc);
    let bodies: Vec<Vec<u8>> = (0..total.div_ceil(BATCH))
        .map(|b| {
            let items: Vec<Value> = (b * BATCH..((b + 1) * BATCH).min(total))
                .map(|n| {
                    let contact = n.wrapping_mul(2_654_435_761) % contacts;
                    let mut e = json!({
                        "id": format!("e{n}"),
                        "contact": format!("c{contact:07}"),
                        "type": KINDS[n % KINDS.len()],
                        "at": (base + chrono::Duration::seconds(n as i64 * 15)).to_rfc3339(),
                    });
                    if n % 6 == 2 {
                        e["props"] = json!({"url": if n % 3 == 0 { "/pricing" } else { "/blog" }});
                    }
                    e
                })
                .collect();
            serde_json::to_vec(&items).expect("json")
        })
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let backend = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    rt.block_on(async move {
        let (_tx, rx) = tokio::sync::watch::channel(config.clone());
        let state = ApiState::new(
            store,
            rx,
            Clock::system(),
            Metrics::new(),
            Arc::new(tokio::sync::Notify::new()),
        )
        .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1/events", listener.local_addr().expect("addr"));
        let coordinator = Coordinator::default();
        tokio::spawn(serve(listener, state, coordinator.listener()));
        let http = reqwest::Client::new();
        println!(
            "ingest benchmark ({}): {contacts} contacts, {total} events in batches of {BATCH} ({:.0} MB of JSON), {clients} clients",
            backend,
            bytes as f64 / 1e6
        );

        let bodies = Arc::new(bodies);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (http, url, bodies, next) =
                    (http.clone(), url.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    let mut accepted = 0u64;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else {
                            return accepted;
                        };
                        let res = http
                            .post(&url)
                            .bearer_auth(TOKEN)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("request");
                        assert_eq!(res.status(), 200);
                        let answer: Value =
                            serde_json::from_slice(&res.bytes().await.expect("body"))
                                .expect("json");
                        accepted += answer["counts"]["accepted"].as_u64().unwrap_or(0);
                    }
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await.expect("client");
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(accepted, total as u64, "every event accepted");
        println!(
            "events ingested over HTTP {:>10.0} /s   ({secs:.1} s)",
            total as f64 / secs
        );
        assert!(coordinator.shutdown(Duration::from_secs(30)).await);
    });
    let store = relance::adapters::open_store(&reopen).expect("open");
    assert_eq!(store.counts().expect("counts").events, total as u64);
    drop(store);
    if let (Some(pg), Some(db)) = (&pg, &database) {
        pg.drop_database(db);
    }
}
