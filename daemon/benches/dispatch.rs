//! Dispatch throughput through the durable outbox: rows claimed under the
//! fatigue guard, delivered by the built-in webhook plugin (signed, over
//! HTTP) to a receiver on loopback, and settled, all on a real SQLite file.
//!
//! Run: `cargo bench --bench dispatch` (20,000 sends;
//! `RELANCE_BENCH_SENDS` to resize, `RELANCE_BENCH_INSTANCES` for the
//! webhook channel's `instances`, 4 by default).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use relance::config::Config;
use relance::ingest::Patch;
use relance::model::{FollowUpKind, Timestamp};
use relance::outbox::dispatch::Dispatcher;
use relance::outbox::{NewSend, Payload, idempotency_key};
use relance::plugins::{PluginHost, builtin_tables};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() {
    let sends: usize = std::env::var("RELANCE_BENCH_SENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    runtime.spawn(async move { axum::serve(listener, app).await });

    let instances: u32 = std::env::var("RELANCE_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        r#"[store]
path = "{}"

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
consent = "opt_out"
instances = {instances}
settings = {{ url = "http://127.0.0.1:{port}/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", allow_networks = ["127.0.0.0/8"] }}

[templates.news]
channel = "hook"
text = "news for {{{{first_name}}}}"

[outbox]
batch = 500
"#,
        dir.path().join("dispatch.db").display()
    );
    let config = Config::parse(&text, &dir.path().join("relance.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let now: Timestamp = "2026-03-02T12:00:00Z".parse().expect("instant");
    let store = relance::store::open(&config).expect("store");
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
        store.upsert_contacts(chunk).expect("contacts");
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
        store.enqueue(chunk, now).expect("enqueue");
    }

    let host = Arc::new(PluginHost::new(
        config.plugins.clone(),
        &config.file,
        builtin_tables(),
    ));
    runtime
        .block_on(host.open_channel("hook", &config.channels["hook"]))
        .expect("channel");
    let dispatcher = Dispatcher::new(
        store,
        host,
        "bench".into(),
        relance::metrics::Metrics::new(),
    );
    let config = Arc::new(config);
    let started = Instant::now();
    let report = runtime
        .block_on(dispatcher.drain(config, now, move || now))
        .expect("drain");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "dispatch benchmark: {sends} sends to a webhook receiver on loopback, {instances} plugin instances"
    );
    println!(
        "dispatch               {secs:>8.2} s   ({:.0} sends/s; {} sent, {} retrying, {} dead; receiver got {})",
        report.sent as f64 / secs,
        report.sent,
        report.retrying,
        report.dead,
        received.load(Ordering::Relaxed)
    );
    println!(
        "peak resident memory   {:>8.0} MB",
        common::peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
}
