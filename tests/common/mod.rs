//! The harness of the end-to-end tests: a scratch folder with the shipped
//! configuration and its own SQLite file, and the real `relance` binary.
#![allow(dead_code)]

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Standard Webhooks secret of the loopback receivers.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub const BIN: &str = env!("CARGO_BIN_EXE_relance");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::copy(
            repo().join("config/relance.toml"),
            dir.path().join("relance.toml"),
        )
        .expect("config");
        Self { dir }
    }

    /// A store with the demo data of `config/demo/` imported.
    pub fn demo() -> Self {
        let env = Self::new();
        env.import_demo();
        env
    }

    pub fn import_demo(&self) {
        for (what, file) in [
            ("companies", "companies.csv"),
            ("contacts", "contacts.csv"),
            ("deals", "deals.csv"),
            ("events", "events.jsonl"),
        ] {
            self.import(what, &repo().join("config/demo").join(file));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Imports a file; every line must pass.
    pub fn import(&self, what: &str, file: &Path) {
        let out = self.run(&["import", what, file.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "import {what}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Writes `text` to `name` and imports it.
    pub fn import_text(&self, what: &str, name: &str, text: &str) {
        self.import(what, &self.write(name, text));
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.path("relance.toml"))
            .args(args)
            .env("RELANCE_DB", self.path("store.db"))
            .env_remove("RELANCE_CONFIG")
            .env_remove("RELANCE_LOG")
            .output()
            .expect("run relance")
    }

    pub fn run_at(&self, now: &str, args: &[&str]) -> Output {
        let mut all = vec!["--now", now];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// The JSON a successful command printed.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    pub fn json_at(&self, now: &str, args: &[&str]) -> Value {
        let mut all = vec!["--now", now];
        all.extend_from_slice(args);
        self.json(&all)
    }

    /// The JSON a command printed whatever its exit code (imports exit 1
    /// when lines were rejected).
    pub fn json_any(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stderr(&out)))
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `relance run` on `env`, its log in `log`.
pub fn spawn_daemon(env: &Env, log: &str) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(env.path("relance.toml"))
        .arg("run")
        .env("RELANCE_DB", env.path("store.db"))
        .env_remove("RELANCE_CONFIG")
        .env_remove("RELANCE_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path(log)).expect("log file"))
        .spawn()
        .expect("start relance run")
}

/// Every outbox row.
pub fn outbox(env: &Env) -> Vec<Value> {
    env.json(&["outbox", "--json", "--limit", "100000"])
        .as_array()
        .expect("an array")
        .clone()
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

/// Polls `done` every 100 ms; fails with `what` after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    r.0.lock().expect("receiver").push((id, contact));
    let delay = r.1.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    "ok"
}

/// A receiver on 127.0.0.1, port chosen by the system, in its own runtime.
pub fn receiver() -> (Received, u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().expect("receiver");
    let r = Received::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("receiver");
    let port = listener.local_addr().expect("receiver").port();
    let app = axum::Router::new().fallback(receive).with_state(r.clone());
    rt.spawn(async move { axum::serve(listener, app).await });
    (r, port, rt)
}
