//! Helpers of the tests that drive `relance run`: a webhook receiver on
//! loopback, a configuration sending to it, the daemon as a child process.
#![allow(clippy::unwrap_used)]

use super::{Env, repo, stderr, stdout};
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;
use std::process::{Child, Command};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every delivery the receiver got: (webhook-id, contact); it answers
/// after the delay in the second field (milliseconds).
#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<(String, String)>>>, pub Arc<AtomicU64>);

pub async fn receive(State(r): State<Received>, headers: HeaderMap, body: String) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let contact = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/data/contact/id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    r.0.lock().unwrap().push((id, contact));
    let delay = r.1.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    "ok"
}

/// A receiver on 127.0.0.1, port chosen by the system, in its own runtime.
pub fn receiver() -> (Received, u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = Received::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(receive).with_state(r.clone());
    rt.spawn(async move { axum::serve(listener, app).await });
    (r, port, rt)
}

/// Rows a dispatch round claims (`[outbox] batch`) in [`daemon_env`]. A
/// round settles its deliveries before the next claim, so a daemon killed
/// mid-round re-sends at most this many rows: the bound of the kill tests.
pub const OUTBOX_BATCH: usize = 200;

/// A configuration with one webhook channel to `port`, no fatigue costs,
/// and `extra` appended.
pub fn daemon_env(port: u16, extra: &str) -> Env {
    daemon_env_with(port, "timeout_secs = 5", extra)
}

/// [`daemon_env`] with the webhook's `settings` (besides url, secret and
/// allowed networks) given.
pub fn daemon_env_with(port: u16, settings: &str, extra: &str) -> Env {
    let env = Env::new();
    let outbox = format!(
        "lease = \"2s\"\nbackoff_base = \"1s\"\nbackoff_max = \"2s\"\nbatch = {OUTBOX_BATCH}\nshutdown_grace = \"5s\""
    );
    env.write(
        "relance.toml",
        &crate::common::webhook_config(port, SECRET, settings, &outbox, extra),
    );
    env
}

/// A broadcast of the `news` template on `hook` to every prospect.
pub fn broadcast_to_prospects(env: &Env, id: &str) {
    env.broadcast_news(id, "hook");
}

pub fn contacts_csv(n: usize) -> String {
    let mut csv = String::from("id,email,first_name,status\n");
    for i in 0..n {
        csv.push_str(&format!("c{i:05},c{i}@example.com,C{i},prospect\n"));
    }
    csv
}

pub fn spawn_daemon(env: &Env, log: &str) -> Child {
    env.spawn_daemon(log)
}

/// Sends `signal` (TERM, HUP …) with the `kill` command: the workspace
/// denies `unsafe`, so no libc call here.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

pub fn outbox(env: &Env) -> Vec<Value> {
    env.json(&["outbox", "--json", "--limit", "100000"])
        .as_array()
        .unwrap()
        .clone()
}

/// Small deterministic generator for kill moments.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Polls `done` every 100 ms; fails with `what` after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free port on loopback (bound, then released for the daemon).
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The daemon's log file `name`, without terminal colour codes.
pub fn log_text(env: &Env, name: &str) -> String {
    let raw = std::fs::read_to_string(env.path(name)).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the log `name` holds `needle`; returns the whole log.
pub fn wait_for_log(env: &Env, name: &str, needle: &str, secs: u64) -> String {
    let started = Instant::now();
    loop {
        let log = log_text(env, name);
        if log.contains(needle) {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "no `{needle}` in the log after {secs} s: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The owner name a daemon process writes into leases and job runs.
pub fn owner_of(child: &Child) -> String {
    format!("relance-{}", child.id())
}

/// Job runs of `schedule` by `owner` in the store: (started, finished).
pub fn job_runs_of(env: &Env, schedule: &str, owner: &str) -> (u64, u64) {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        env.path("store.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return (0, 0);
    };
    let _ = conn.busy_timeout(Duration::from_secs(10));
    conn.query_row(
        "SELECT count(*), count(finished_at) FROM job_runs WHERE schedule = ?1 AND owner = ?2",
        [schedule, owner],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap_or((0, 0))
}

/// Writes `name` with every `(from, to)` replaced; each must occur.
pub fn rewrite(env: &Env, name: &str, text: &str, changes: &[(&str, &str)]) {
    let mut out = text.to_string();
    for (from, to) in changes {
        assert!(out.contains(from), "`{from}` not in {name}");
        out = out.replace(from, to);
    }
    env.write(name, &out);
}

/// Starts the daemon and waits until it says it runs (signals are handled).
pub fn start_daemon(env: &Env, log: &str) -> Child {
    let child = spawn_daemon(env, log);
    wait_for_log(env, log, "relance running", 60);
    child
}

/// SIGTERM, then the daemon must exit with success.
pub fn stop_daemon(mut child: Child) {
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

/// `relance run --once` at `now`, which must succeed.
pub fn once(env: &Env, now: &str) {
    let out = env.run_at(now, &["run", "--once"]);
    assert!(
        out.status.success(),
        "run --once at {now}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The shipped rules with every channel sent to a loopback webhook receiver.
pub fn shipped_to_loopback(env: &Env, port: u16) {
    let settings = format!(
        "plugin = \"webhook\"\nsettings = {{ url = \"http://127.0.0.1:{port}/hook\", secret = \"{SECRET}\", allow_networks = [\"127.0.0.0/8\"] }}"
    );
    let text = std::fs::read_to_string(repo().join("config/relance.toml"))
        .expect("shipped config")
        .replace("plugin = \"email\"", &settings)
        .replace(
            "plugin = \"webhook\"\nevent = \"sms_sent\"",
            &format!("{settings}\nevent = \"sms_sent\""),
        )
        .replace("plugin = \"crm\"", &settings);
    env.write("relance.toml", &text);
}
