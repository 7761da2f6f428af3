//! The harness of the end-to-end tests: a scratch folder with the shipped
//! configuration and its own SQLite file, and the real `relance` binary.
#![allow(dead_code)]

pub mod daemon;
pub mod pg;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

/// A configuration with one webhook channel `hook` to `127.0.0.1:port`
/// signing with `secret` (more `settings` fields after a comma), a `news`
/// template on it, the `[outbox]` lines `outbox`, then `extra`.
pub fn webhook_config(
    port: u16,
    secret: &str,
    settings: &str,
    outbox: &str,
    extra: &str,
) -> String {
    format!(
        r#"[store]
path = "${{RELANCE_DB}}"

[log]
level = "info"

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
consent = "opt_out"
settings = {{ url = "http://127.0.0.1:{port}/hook", secret = "{secret}", {settings}, allow_networks = ["127.0.0.0/8"] }}

[templates.news]
channel = "hook"
text = "news for {{{{first_name}}}}"

[outbox]
{outbox}
{extra}"#
    )
}

impl Env {
    /// `relance run` in the background; its stderr goes to `log` in the folder.
    pub fn spawn_daemon(&self, log: &str) -> Child {
        Command::new(BIN)
            .arg("--config")
            .arg(self.path("relance.toml"))
            .arg("run")
            .env("RELANCE_DB", self.path("store.db"))
            .env_remove("RELANCE_CONFIG")
            .env_remove("RELANCE_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path(log)).expect("log file"))
            .spawn()
            .expect("start relance run")
    }

    /// A broadcast `id` of the `news` template on `channel` to every prospect.
    pub fn broadcast_news(&self, id: &str, channel: &str) {
        self.broadcast_news_at(None, id, channel, "2100-01-01T00:00:00Z");
    }

    /// The same, created at `now` (the clock's, when `None`) and over at `end`.
    pub fn broadcast_news_at(&self, now: Option<&str>, id: &str, channel: &str, end: &str) {
        let mut args = Vec::new();
        if let Some(now) = now {
            args.extend(["--now", now]);
        }
        args.extend([
            "broadcast",
            "create",
            "--id",
            id,
            "--name",
            id,
            "--segment",
            r#"{ field = "status", eq = "prospect" }"#,
            "--channel",
            channel,
            "--template",
            "news",
            "--end",
            end,
        ]);
        let out = self.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// A free port on loopback (bound, then released for the daemon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
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
