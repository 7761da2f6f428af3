//! The dashboard's pages over HTTP on loopback, against the benchmark
//! store (a million contacts, about 20,000,000 events, scored): each
//! page's median and maximum time over a few loads, with a session, and
//! the CPU time of the process (server and client) per load.
//!
//! Run: `cargo bench -p relance --bench rescore` (it generates and scores
//! the store), optionally `--bench plan` (it fills the outbox), then
//! `cargo bench -p relance --bench ui`. Before the pages, this benchmark
//! runs the pressure pass once if the store has no grid yet, and reports
//! its time (the pass is a schedule of the daemon, not a page).
//! `RELANCE_BENCH_CONTACTS` resizes all three.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use relance::adapters::api::ui::session::{self, Role};
use relance::adapters::api::{ApiState, serve};
use relance::core::clock::Clock;
use relance::core::metrics::Metrics;
use relance::core::model::Timestamp;
use relance::core::shutdown::Coordinator;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

const TOKEN: &str = "bench-token-0123456789abcdef";
/// Loads per page; the median is reported.
const LOADS: usize = 5;

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let (contacts, now, db) = common::bench_store();
    if !db.exists() {
        eprintln!(
            "{} is missing: run `RELANCE_BENCH_CONTACTS={contacts} cargo bench --bench rescore` then `--bench plan` first",
            db.display()
        );
        std::process::exit(2);
    }
    let mut config = common::shipped_config(&db);
    config.api.enabled = true;
    config.api.tokens = vec![TOKEN.into()];
    config.api.tracking_secret = "bench-secret-0123456789abcdef".into();
    let config = Arc::new(config);
    let cookie = format!(
        "relance_ui={}",
        session::open(&config, TOKEN, Role::Admin, now)
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_tx, rx) = watch::channel(config.clone());
    let store = relance::adapters::sqlite::open(&config).expect("store");
    let state = ApiState::new(
        store,
        rx,
        Clock::fixed(now),
        Metrics::new(),
        Arc::new(Notify::new()),
    )
    .expect("state");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let coordinator = Coordinator::default();
    rt.spawn(serve(listener, state, coordinator.listener()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .expect("client");
    println!(
        "ui benchmark: {contacts} contacts, {} events",
        common::count_events(&db)
    );
    if store_has_no_grid(&config) {
        let store = relance::adapters::sqlite::open(&config).expect("store");
        purchases(&*store, contacts, now);
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let r = relance::pipeline::pressure::refresh(&*store, &config, now).expect("pressure pass");
        println!(
            "  pressure pass (a schedule, once): {:.1} s, {:.1} s of CPU: {r}",
            started.elapsed().as_secs_f64(),
            cpu_seconds() - cpu
        );
    }
    let id = format!("c{}", contacts / 2);
    let pages = [
        ("overview", "/ui/".to_string()),
        ("scores", "/ui/scores".to_string()),
        ("contact by id", format!("/ui/contact?id={id}")),
        (
            "contact search by email",
            format!("/ui/contact?q={id}%40example.com"),
        ),
        (
            "contact search by name",
            "/ui/contact?q=zzz-nobody".to_string(),
        ),
        ("follow-ups", "/ui/followups".to_string()),
        ("call desk", "/ui/calls".to_string()),
        ("call desk, page 20", "/ui/calls?page=20".to_string()),
        ("pressure", "/ui/pressure".to_string()),
        (
            "pressure cell, page 1",
            "/ui/pressure/contacts?p=0&v=2".to_string(),
        ),
        (
            "pressure cell, page 20",
            "/ui/pressure/contacts?p=0&v=2&page=20".to_string(),
        ),
        (
            "over-pressured, page 1",
            "/ui/pressure/contacts?list=over".to_string(),
        ),
    ];
    for (name, path) in pages {
        let loads = LOADS;
        let mut took = Vec::new();
        let cpu = cpu_seconds();
        for _ in 0..loads {
            let started = Instant::now();
            let (status, len) = rt.block_on(async {
                let r = http
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                (status, r.bytes().await.expect("body").len())
            });
            took.push(started.elapsed());
            assert_eq!(status, 200, "{path}");
            assert!(len > 1000, "{path}: a page");
        }
        let cpu_ms = (cpu_seconds() - cpu) * 1e3 / loads as f64;
        took.sort();
        println!(
            "  {name:<32} median {:>7.1} ms, max {:>7.1} ms (min {:.1}; {:.1} ms of CPU per load; {} loads)",
            took[took.len() / 2].as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3,
            took[0].as_secs_f64() * 1e3,
            cpu_ms,
            took.len()
        );
    }
    drop(coordinator);
}

/// The generated store has no customers: one contact in ten buys, 1 to 3
/// times over the last year (once per store: the events are kept).
fn purchases(store: &dyn relance::ports::store::Store, contacts: usize, now: Timestamp) {
    use relance::domain::ingest::Incoming;
    let started = Instant::now();
    let mut rng = common::Rng(19);
    let mut batch = Vec::new();
    let mut n = 0;
    for i in (0..contacts).step_by(10) {
        for k in 0..=rng.below(3) {
            let mut props = serde_json::Map::new();
            props.insert("amount".into(), (100 + rng.below(20_000)).into());
            if rng.below(50) == 0 {
                props.insert("margin".into(), (-100).into());
            }
            batch.push(Incoming::Contact(relance::core::model::Event {
                id: Some(format!("bench-purchase-{i}-{k}")),
                contact: format!("c{i}"),
                kind: "purchase".into(),
                at: now - chrono::Duration::days(rng.below(365) as i64 + 1),
                channel: None,
                props,
            }));
            n += 1;
        }
        if batch.len() >= 1000 {
            store.append_events(&batch).expect("purchases");
            batch.clear();
        }
    }
    store.append_events(&batch).expect("purchases");
    println!(
        "  {n} purchases added to {} customers ({:.1} s, not measured)",
        contacts.div_ceil(10),
        started.elapsed().as_secs_f64()
    );
}

fn store_has_no_grid(config: &relance::pipeline::config::Config) -> bool {
    relance::adapters::sqlite::open(config)
        .and_then(|s| s.pressure_grid())
        .map(|g| g.counts.iter().flatten().sum::<u64>() == 0)
        .unwrap_or(true)
}

/// User and system CPU time of this process so far, in seconds (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
