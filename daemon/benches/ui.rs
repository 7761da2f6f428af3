//! The dashboard's pages over HTTP on loopback, against the benchmark
//! store (a million contacts, about 20,000,000 events, scored and
//! planned): each page's median time over a few loads, with a session.
//!
//! Run: `cargo bench --bench rescore`, then `cargo bench --bench plan`
//! (they generate, score and plan the store), then
//! `cargo bench --bench ui`. `RELANCE_BENCH_CONTACTS` resizes all three.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use relance::adapters::api::ui::session::{self, Role};
use relance::adapters::api::{ApiState, serve};
use relance::core::clock::Clock;
use relance::core::metrics::Metrics;
use relance::core::shutdown::Coordinator;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

const TOKEN: &str = "bench-token-0123456789abcdef";
/// Loads per page; the median is reported.
const LOADS: usize = 5;

fn main() {
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
            "contact search by name (scan)",
            "/ui/contact?q=zzz-nobody".to_string(),
        ),
        ("follow-ups", "/ui/followups".to_string()),
        ("call desk", "/ui/calls".to_string()),
        // The grid scans every customer once, then serves its cache.
        ("pressure (first load: scan)", "/ui/pressure".to_string()),
        ("pressure (cached)", "/ui/pressure".to_string()),
    ];
    for (name, path) in pages {
        let loads = if name.contains("first load") {
            1
        } else {
            LOADS
        };
        let mut took = Vec::new();
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
        took.sort();
        println!(
            "  {name:<32} median {:>9.1} ms (min {:.1}, max {:.1}, {} loads)",
            took[took.len() / 2].as_secs_f64() * 1e3,
            took[0].as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3,
            took.len()
        );
    }
    drop(coordinator);
}
