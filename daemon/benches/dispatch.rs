//! Dispatch throughput through the durable outbox: rows claimed under the
//! fatigue guard, delivered by the built-in webhook plugin (signed, over
//! HTTP) to a receiver on loopback, and settled, all on a real SQLite file.
//!
//! Run: `cargo bench --bench dispatch` (20,000 sends;
//! `RELANCE_BENCH_SENDS` to resize, `RELANCE_BENCH_INSTANCES` for the
//! webhook channel's `instances`, 4 by default; `RELANCE_BENCH_PIPELINE`
//! for the webhook's `pipeline`, 16 by default, 1 for no pipelining). With `RELANCE_BENCH_WRK`
//! naming the wrk binary, `wrk -t1 -c4` POSTs a body of the same size to
//! the same receiver for 5 s before and after the dispatch: the raw
//! loopback request rate, measured in the same run.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use relance::adapters::plugins::{PluginHost, builtin_tables};
use relance::core::model::{FollowUpKind, Timestamp};
use relance::domain::ingest::Patch;
use relance::domain::outbox::{NewSend, Payload, idempotency_key};
use relance::pipeline::config::Config;
use relance::pipeline::dispatch::Dispatcher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() {
    // As the binary does (src/process.rs).
    relance::process::small_pages();
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
    let pipeline: u32 = std::env::var("RELANCE_BENCH_PIPELINE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        r#"[store]
path = "{}"

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
"#,
        dir.path().join("dispatch.db").display()
    );
    let config = Config::parse(&text, &dir.path().join("relance.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let now: Timestamp = "2026-03-02T12:00:00Z".parse().expect("instant");
    let store = relance::adapters::sqlite::open(&config).expect("store");
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
        relance::core::metrics::Metrics::new(),
    );
    let config = Arc::new(config);
    let wrk = std::env::var_os("RELANCE_BENCH_WRK");
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut raw = Vec::new();
    if let Some(wrk) = &wrk {
        raw.push(wrk_rate(wrk, &url, dir.path()));
    }
    let started = Instant::now();
    let cpu_before = common::process_cpu_secs();
    let report = runtime
        .block_on(dispatcher.drain(config, now, move || now))
        .expect("drain");
    let secs = started.elapsed().as_secs_f64();
    let cpu = common::process_cpu_secs()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    println!(
        "dispatch benchmark: {sends} sends to a webhook receiver on loopback, {instances} plugin instances, pipeline {pipeline}"
    );
    println!(
        "dispatch               {secs:>8.2} s   ({:.0} sends/s; {} sent, {} retrying, {} dead; receiver got {})",
        report.sent as f64 / secs,
        report.sent,
        report.retrying,
        report.dead,
        received.load(Ordering::Relaxed)
    );
    if let Some(cpu) = cpu {
        println!(
            "process CPU            {cpu:>8.2} s   (user + system over every thread, the receiver's included: {:.0} µs per send)",
            cpu * 1e6 / report.sent.max(1) as f64
        );
    }
    if let Some(wrk) = &wrk {
        raw.push(wrk_rate(wrk, &url, dir.path()));
        let mean = raw.iter().sum::<f64>() / raw.len() as f64;
        println!(
            "wrk -t1 -c4, mean      {mean:>8.0} requests/s (before {:.0}, after {:.0}); dispatch at {:.2} of it",
            raw[0],
            raw[1],
            report.sent as f64 / secs / mean
        );
    }
    println!(
        "peak resident memory   {:>8.0} MB",
        common::peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
}

/// Requests per second `wrk -t1 -c4 -d5s` gets from the receiver, POSTing
/// a JSON body as large as a follow-up's.
fn wrk_rate(wrk: &std::ffi::OsStr, url: &str, dir: &std::path::Path) -> f64 {
    let body = format!(
        r#"{{"type":"relance.follow_up","data":{{"pad":"{}"}}}}"#,
        "x".repeat(560)
    );
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.body = '{body}'\n"
        ),
    )
    .expect("wrk script");
    let out = std::process::Command::new(wrk)
        .args(["-t1", "-c4", "-d5s", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"))
}
