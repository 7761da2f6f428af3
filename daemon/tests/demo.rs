//! `relance demo`, the README's first command, driven as a user runs it:
//! the real binary, the shipped configuration with the demo's overlay, the
//! API on loopback, the channels writing into the demo's folder. And the
//! command line's hygiene the demo relies on: a closed pipe, plain logs,
//! readable guard reasons.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Env, code, free_port, repo, stderr, stdout};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the demo printed, each line with when it arrived.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

struct Demo {
    child: Child,
    lines: Lines,
    dir: tempfile::TempDir,
}

impl Demo {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(repo().join("config/relance.toml"))
            .arg("demo")
            .arg("--data")
            .arg(repo().join("config/demo"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .env_remove("RELANCE_CONFIG")
            .env_remove("RELANCE_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start relance demo");
        let lines: Lines = Arc::default();
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Self { child, lines, dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The first line holding every one of `parts`, with when it came.
    fn line(&self, parts: &[&str]) -> Option<(Instant, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| parts.iter().all(|p| l.contains(p)))
            .cloned()
    }

    fn text(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for `done`, failing with the demo's output after `secs`.
    fn wait_for(&mut self, what: &str, secs: u64, mut done: impl FnMut(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what}: the demo ended ({status:?}):\n{}", self.text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "{what}: not within {secs} s; the demo printed:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the process to end by itself.
    fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "the demo did not stop within {secs} s:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// A command against the demo's store, through the configuration it wrote.
    fn relance(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.path("relance.toml"))
            .args(args)
            .env_remove("RELANCE_CONFIG")
            .env_remove("RELANCE_LOG")
            .output()
            .expect("run relance")
    }

    fn sent_on(&self, channel: &str) -> usize {
        let out = self.relance(&["outbox", "--status", "sent", "--json"]);
        assert!(out.status.success(), "outbox: {}", stderr(&out));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("outbox JSON");
        rows.iter().filter(|r| r["channel"] == channel).count()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// NDJSON lines under `path`, a file or a folder of files.
fn ndjson_lines(path: &Path) -> usize {
    let count = |p: &Path| {
        std::fs::read_to_string(p).map_or(0, |t| {
            t.lines()
                .filter(|l| serde_json::from_str::<Value>(l).is_ok())
                .count()
        })
    };
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| count(&e.path()))
            .sum(),
        Err(_) => count(path),
    }
}

#[test]
fn the_demo_plans_and_sends_live_and_stops_cleanly_on_sigint() {
    // Bounded: even if nothing below stopped it, it ends by itself.
    let mut demo = Demo::start(&["--pace", "500ms", "--every", "2s", "--for", "600s"]);

    // The API's address and token are printed for the user.
    demo.wait_for("the API line", 120, |d| {
        d.line(&["API  http://127.0.0.1:", "token "]).is_some()
    });

    // The stream's first event, a pricing page visit, fires its trigger
    // within seconds: a call task sent.
    demo.wait_for("the pricing visit's call task", 120, |d| {
        d.line(&["sent", "beltrani", "pricing_visit_call → phone"])
            .is_some()
    });
    let (posted, _) = demo
        .line(&["event", "beltrani", "page_visit", "/pricing"])
        .expect("the event line");
    let (fired, line) = demo
        .line(&["sent", "beltrani", "pricing_visit_call → phone"])
        .unwrap();
    let lag = fired.saturating_duration_since(posted);
    assert!(
        lag < Duration::from_secs(30),
        "the trigger fired {lag:?} after its event: {line}"
    );
    assert!(line.contains("s after the event"), "{line}");

    // Emails as .eml files; call tasks and SMS delivered on their channels;
    // deferrals and blocks shown with readable reasons.
    demo.wait_for("an email file", 120, |d| files_in(&d.path("mail")) > 0);
    demo.wait_for("a call task and an SMS sent", 120, |d| {
        d.sent_on("phone") > 0 && d.sent_on("sms") > 0
    });
    // Rajati had a call task at the start: her pricing visit's is deferred
    // (by the phone cap, or by arbitration if that one is still pending).
    demo.wait_for("a deferral with its reason", 120, |d| {
        d.line(&[
            "deferred",
            "rajati",
            "pricing_visit_call → phone",
            "after the event: ",
        ])
        .is_some()
    });
    demo.wait_for("a summary line", 120, |d| {
        d.line(&["── events in", "rescored", "sent email", "blocked"])
            .is_some()
    });
    assert!(
        !demo.text().contains("{\""),
        "no raw JSON in the demo's output:\n{}",
        demo.text()
    );

    // Ctrl-C: a clean stop, status 0.
    let status = Command::new("kill")
        .arg("-INT")
        .arg(demo.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let status = demo.wait_exit(120);
    let err = demo.stderr();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGINT: {status:?}\n{}\n{err}",
        demo.text()
    );
    assert!(demo.line(&["Stopped."]).is_some(), "{}", demo.text());
    assert!(!err.contains('\u{1b}'), "no colour on a pipe: {err}");

    // The built-in channels' own output: call tasks and spool lines.
    let out = demo.relance(&["tasks", "list", "--json"]);
    assert!(out.status.success(), "tasks list: {}", stderr(&out));
    let tasks: Vec<Value> = serde_json::from_slice(&out.stdout).expect("tasks JSON");
    assert!(!tasks.is_empty(), "no call task: {}", stdout(&out));
    let spool = demo.path("sms.ndjson");
    assert!(ndjson_lines(&spool) > 0, "no spool line in {spool:?}");
}

#[test]
fn the_demo_for_a_while_stops_by_itself_with_status_0() {
    let mut demo = Demo::start(&["--pace", "500ms", "--every", "1s", "--for", "3s"]);
    let status = demo.wait_exit(180);
    let err = demo.stderr();
    assert_eq!(status.code(), Some(0), "{}\n{err}", demo.text());
    assert!(
        demo.line(&["imported", "328 contacts", "2824 events", "moved by"])
            .is_some(),
        "{}",
        demo.text()
    );
    // Moved to now, the data scores as at its reference instant: the
    // articles' personas land where the articles put them.
    assert!(
        demo.line(&[
            "personas",
            "martino 215 (hot), rajati 140 (warm), beltrani 30 (cold), martin 250 (hot), nathalie 235 (hot)"
        ])
        .is_some(),
        "{}",
        demo.text()
    );
    assert!(demo.line(&["── events in"]).is_some(), "{}", demo.text());
    assert!(demo.line(&["Stopped."]).is_some(), "{}", demo.text());
}

#[test]
fn the_demo_refuses_an_address_off_loopback_and_a_fixed_clock() {
    let out = Command::new(BIN)
        .args([
            "--config",
            "config/relance.toml",
            "demo",
            "--listen",
            "0.0.0.0:8080",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("loopback only"), "{}", stderr(&out));
    let out = Command::new(BIN)
        .args([
            "--config",
            "config/relance.toml",
            "--now",
            "2026-11-20T12:00:00Z",
            "demo",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--now"), "{}", stderr(&out));
}

/// `relance … | head` under `set -o pipefail`: the reader leaving early is
/// no failure (the old binary died of SIGPIPE, status 141, and stopped the
/// demo script).
#[test]
fn a_reader_closing_the_pipe_early_ends_a_command_with_status_0() {
    let env = Env::demo();
    let script = format!(
        "set -o pipefail; '{BIN}' --config '{}' contacts list --json | head -c 100 >/dev/null",
        env.path("relance.toml").display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("RELANCE_DB", env.path("store.db"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    // The same without a shell: the reader takes a few bytes and leaves
    // (the output, 119 kB, is larger than a pipe's buffer).
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(env.path("relance.toml"))
        .args(["contacts", "list", "--json"])
        .env("RELANCE_DB", env.path("store.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn logs_to_a_pipe_carry_no_colour() {
    let env = Env::new();
    let out = env.run(&[
        "import",
        "companies",
        repo().join("config/demo/companies.csv").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("INFO"),
        "the first import logs its migrations: {err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes on a pipe: {err:?}");
}

#[test]
fn guard_reasons_read_as_sentences_in_text_mode() {
    let env = Env::demo();
    // 23:00 in Paris: P's call waits for the cap, then the phone window.
    let out = env.run_at(
        "2026-11-20T22:00:00Z",
        &[
            "guard",
            "p",
            "--channel",
            "phone",
            "--kind",
            "opportunistic",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("defer until 2026-11-23T08:00:00"),
        "{text}"
    );
    // P's call of the 19th holds the phone cap (one call in 3 days) until
    // Sunday 12:00Z; the window is then shut until Monday 09:00 in Paris.
    assert!(
        text.contains("cap: 1 of 1 sends on phone in 3d; frees at 2026-11-22T12:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains(
            "outside the phone send window (2026-11-22T13:00:00 in Europe/Paris); \
             opens at 2026-11-23T09:00:00 (2026-11-23T08:00:00Z)"
        ),
        "{text}"
    );
    assert!(!text.contains('{'), "raw JSON: {text}");
}
