//! Dispatch on PostgreSQL with several daemons: 1, 2 and 4 dispatchers,
//! each with its own store handle (its own pool of connections) and its
//! own plugin host, as separate `relance run` processes have, drain one
//! outbox on one database to a webhook receiver on loopback. Each round
//! starts on a fresh database (created and dropped here).
//!
//! Run: `cargo bench --bench pg_dispatch` (20,000 sends per round;
//! `RELANCE_BENCH_SENDS` to resize, `RELANCE_BENCH_DAEMONS` for the
//! rounds, `1,2,4` by default, `RELANCE_BENCH_INSTANCES` for the webhook
//! channel's `instances`, 4 by default, `RELANCE_BENCH_PIPELINE` for the
//! webhook's `pipeline`, 16 by default, 1 for no pipelining, as in the
//! dispatch benchmark; `RELANCE_BENCH_PG` or
//! `RELANCE_TEST_PG` names another server than
//! postgres://postgres@127.0.0.1:5432, trust authentication).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use relance::adapters::plugins::{PluginHost, builtin_tables};
use relance::adapters::postgres::PgStore;
use relance::core::model::{FollowUpKind, Timestamp};
use relance::domain::ingest::Patch;
use relance::domain::outbox::{NewSend, Payload, State, idempotency_key};
use relance::pipeline::config::Config;
use relance::pipeline::dispatch::Dispatcher;
use relance::ports::store::StoreHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
    let sends: usize = env_or("RELANCE_BENCH_SENDS", 20_000);
    let instances: u32 = env_or("RELANCE_BENCH_INSTANCES", 4);
    let pipeline: u32 = env_or("RELANCE_BENCH_PIPELINE", 16);
    let daemons: Vec<usize> = std::env::var("RELANCE_BENCH_DAEMONS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let pg = common::PgBench::local();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    // Every thousandth request's instant: the rate between a round's first
    // and last tenth leaves out its start (every daemon's first claim) and
    // its end (daemons finishing their last batches one after the other).
    let marks: Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let marking = marks.clone();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(move || {
        let (counter, marking) = (counter.clone(), marking.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 1_000 == 0 {
                marking
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((n, Instant::now()));
            }
            "ok"
        }
    });
    runtime.spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("tmp");
    let now: Timestamp = "2026-03-02T12:00:00Z".parse().expect("instant");
    println!(
        "PostgreSQL dispatch benchmark: {sends} sends per round to a webhook receiver on loopback, {instances} plugin instances per daemon, pipeline {pipeline}"
    );
    for &n in &daemons {
        let db = pg.database(&format!("dispatch_{}_{n}", std::process::id()));
        pg.create(&db);
        let url = pg.url(&db);
        let text = format!(
            r#"[store]
url = "{url}"
pool = 8

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
consent = "opt_out"
instances = {instances}
settings = {{ url = "http://127.0.0.1:{port}/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", allow_networks = ["127.0.0.0/8"], pipeline = {pipeline} }}

[templates.news]
channel = "hook"
text = "news for {{{{first_name}}}}"

[outbox]
batch = 500
"#
        );
        let config = Config::parse(&text, &dir.path().join("relance.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let first: StoreHandle = Arc::new(PgStore::from_config(&config).expect("store"));
        let patches: Vec<Patch> = (0..sends)
            .map(|i| {
                let mut fields = serde_json::Map::new();
                fields.insert("email".into(), format!("c{i}@example.com").into());
                fields.insert("first_name".into(), format!("C{i}").into());
                Patch {
                    id: format!("c{i}"),
                    fields,
                    ..Patch::default()
                }
            })
            .collect();
        for chunk in patches.chunks(5_000) {
            first.upsert_contacts(chunk).expect("contacts");
        }
        let rows: Vec<NewSend> = (0..sends)
            .map(|i| {
                let contact = format!("c{i}");
                NewSend {
                    idem_key: idempotency_key(&contact, "launch", "broadcast:launch"),
                    contact,
                    followup: "launch".into(),
                    kind: FollowUpKind::Event,
                    priority: 20,
                    channel: "hook".into(),
                    due_at: now,
                    payload: Payload::template("news"),
                }
            })
            .collect();
        for chunk in rows.chunks(5_000) {
            first.enqueue(chunk, now).expect("enqueue");
        }
        // One store handle and one plugin host per daemon.
        let dispatchers: Vec<Arc<Dispatcher>> = (0..n)
            .map(|i| {
                let store: StoreHandle = if i == 0 {
                    first.clone()
                } else {
                    Arc::new(PgStore::from_config(&config).expect("store"))
                };
                let host = Arc::new(PluginHost::new(
                    config.plugins.clone(),
                    &config.file,
                    builtin_tables(),
                ));
                runtime
                    .block_on(host.open_channel("hook", &config.channels["hook"]))
                    .expect("channel");
                Arc::new(Dispatcher::new(
                    store,
                    host,
                    format!("bench-{i}"),
                    relance::core::metrics::Metrics::new(),
                ))
            })
            .collect();
        let config = Arc::new(config);
        let before = received.load(Ordering::Relaxed);
        marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let (cpu0, busy0) = (common::process_cpu_secs(), common::machine_busy_secs());
        let started = Instant::now();
        let reports = runtime.block_on(async {
            let runs: Vec<_> = dispatchers
                .iter()
                .map(|d| {
                    let (d, config) = (d.clone(), config.clone());
                    tokio::spawn(async move { d.drain(config, now, move || now).await })
                })
                .collect();
            let mut out = Vec::new();
            for r in runs {
                out.push(r.await.expect("task").expect("drain"));
            }
            out
        });
        let secs = started.elapsed().as_secs_f64();
        let sent: u64 = reports.iter().map(|r| r.sent).sum();
        // CPU per send: this process (daemons and receiver) and the whole
        // machine (the database server too), in microseconds.
        let per_send = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if sent > 0 => format!("{:.0}", (b - a) * 1e6 / sent as f64),
            _ => "?".into(),
        };
        let cpu = per_send(cpu0, common::process_cpu_secs());
        let busy = per_send(busy0, common::machine_busy_secs());
        let depth = first.outbox_depth().expect("depth");
        let steady = {
            let marks = marks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = |share: u64| {
                let n = before + sent * share / 10;
                marks.iter().find(|(m, _)| *m >= n).copied()
            };
            match (at(1), at(9)) {
                (Some((a, ta)), Some((b, tb))) if b > a => format!(
                    "{:.0} sends/s",
                    (b - a) as f64 / tb.duration_since(ta).as_secs_f64()
                ),
                _ => "?".into(),
            }
        };
        println!(
            "{n} daemon(s)            {secs:>8.2} s   ({:.0} sends/s, {steady} from the first to the last tenth; {sent} sent ({}), {} rows sent in the store, receiver got {}; CPU per send {cpu} µs here, {busy} µs over the machine)",
            sent as f64 / secs,
            reports
                .iter()
                .map(|r| r.sent.to_string())
                .collect::<Vec<_>>()
                .join(" + "),
            depth.get(&State::Sent).copied().unwrap_or(0),
            received.load(Ordering::Relaxed) - before
        );
        drop(dispatchers);
        drop(first);
        pg.drop_database(&db);
    }
    println!(
        "peak resident memory   {:>8.0} MB",
        common::peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
}
