//! Faults on the delivery path, end to end: the real `relance run` against a
//! raw HTTP receiver on loopback that answers absurd `Retry-After` values,
//! is slow, hangs or closes the connection mid-request, and against SMTP
//! servers (smtp-sink, aiosmtpd) that are slow, refuse, drop the connection
//! after DATA or lack SMTPUTF8. Whatever the peer does, every row ends
//! `sent` or `dead` with its reason, in bounded time, nothing is sent under
//! two keys, and the daemon neither panics nor stops.

#![allow(clippy::unwrap_used)]

mod common;
mod plugins_support;

use common::Env;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use plugins_support::{aiosmtpd, smtp_sink};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every request the receiver read in full: contact id → webhook-ids.
type Log = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// How the receiver treats a contact, from the prefix of its id.
fn answer_for(contact: &str) -> Option<&'static [u8]> {
    let mode = contact.split('-').next().unwrap_or_default();
    Some(match mode {
        "ok" | "slow" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        "huge" => {
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10000000000000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        "far" => {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 250000000000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        "date" => {
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        "overflow" => {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 99999999999999999999999999999\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        // `hang` never answers; `cut` closes before the body was read.
        _ => return None,
    })
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(mut conn: tokio::net::TcpStream, log: Log, slow: Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let id = header(&head, "webhook-id").unwrap_or_default().to_string();
    // A `cut` contact's request is dropped halfway through its body.
    let peek = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    if peek.contains("\"id\":\"cut-") {
        return;
    }
    while buf.len() < head_end + len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
    let contact = body
        .pointer("/data/contact/id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if contact.starts_with("cut-") {
        return;
    }
    log.lock()
        .unwrap()
        .entry(contact.clone())
        .or_default()
        .push(id);
    if contact.starts_with("slow-") {
        tokio::time::sleep(slow).await;
    }
    match answer_for(&contact) {
        Some(answer) => {
            let _ = conn.write_all(answer).await;
            let _ = conn.shutdown().await;
        }
        // Holds the connection open, answering nothing.
        None => tokio::time::sleep(Duration::from_secs(3600)).await,
    }
}

/// A raw HTTP receiver on 127.0.0.1 (port chosen by the system), in its own
/// runtime; `slow` contacts are answered after `slow`.
fn receiver(slow: Duration) -> (Log, u16, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = Log::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let l = log.clone();
    rt.spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, l.clone(), slow));
        }
    });
    (log, port, rt)
}

/// One webhook channel to `port`, short backoffs, three attempts, a plan
/// pass every second, `contacts` as prospects with a broadcast to them;
/// `extra` appended.
fn env_for(port: u16, contacts: &[String], extra: &str) -> Env {
    let env = Env::new();
    let outbox = "lease = \"60s\"\nmax_attempts = 3\nbackoff_base = \"1s\"\nbackoff_max = \"2s\"\nbatch = 200\nshutdown_grace = \"5s\"";
    let extra = format!("\n[schedules.plan]\njob = \"plan\"\ncron = \"* * * * * *\"\n{extra}");
    env.write(
        "relance.toml",
        &common::webhook_config(port, SECRET, "timeout_secs = 2", outbox, &extra),
    );
    let with_emails: Vec<_> = contacts
        .iter()
        .map(|c| (c.clone(), format!("{c}@example.com")))
        .collect();
    prospects_with_news(&env, &with_emails, "hook");
    env
}

/// `contacts` (id, email) as prospects, and a broadcast of `news` to them
/// on `channel`.
fn prospects_with_news(env: &Env, contacts: &[(String, String)], channel: &str) {
    let mut csv = String::from("id,email,first_name,status\n");
    for (id, email) in contacts {
        csv.push_str(&format!("{id},{email},{id},prospect\n"));
    }
    env.import_text("contacts", "contacts.csv", &csv);
    env.broadcast_news("news", channel);
}

/// One email channel `mail` to the SMTP server on `port`; otherwise as
/// [`env_for`].
fn email_env(port: u16, contacts: &[(String, String)]) -> Env {
    let env = Env::new();
    env.write(
        "relance.toml",
        &format!(
            r#"[store]
path = "${{RELANCE_DB}}"

[channels.mail]
plugin = "email"
event = "email_sent"
consent = "opt_out"
settings = {{ host = "127.0.0.1", allow_networks = ["127.0.0.1"], port = {port}, tls = "none", from = "ventes@example.com", timeout_secs = 10 }}

[templates.news]
channel = "mail"
subject = "News for {{{{first_name}}}}"
text = "Hello {{{{first_name}}}}"

[schedules.plan]
job = "plan"
cron = "* * * * * *"

[outbox]
max_attempts = 3
backoff_base = "1s"
backoff_max = "2s"
"#
        ),
    );
    prospects_with_news(&env, contacts, "mail");
    env
}

/// Outbox rows by contact.
fn rows(env: &Env) -> BTreeMap<String, Value> {
    let out = env.run(&["outbox", "--json", "--limit", "100000"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    all.as_array()
        .map(|a| {
            a.iter()
                .map(|r| (r["contact"].as_str().unwrap_or("").to_string(), r.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the daemon until every row of `contacts` is `sent` or `dead`
/// (bounded by `secs`), checks it is still running and never panicked,
/// stops it with SIGTERM and returns the rows and its log.
fn run_until_settled(
    env: &Env,
    contacts: &[String],
    secs: u64,
) -> (BTreeMap<String, Value>, String) {
    let mut child = env.spawn_daemon("run.log");
    let started = Instant::now();
    let settled = loop {
        let r = rows(env);
        let done = r.len() == contacts.len()
            && r.values()
                .all(|row| row["state"] == "sent" || row["state"] == "dead");
        if done {
            break r;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon stopped: {}",
            std::fs::read_to_string(env.path("run.log")).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "rows not settled after {secs}s: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(env.path("run.log")).unwrap();
    assert!(
        !log.contains("panicked") && !log.contains("overflow"),
        "{log}"
    );
    (settled, log)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Every contact was received under a single key (its row's), `times` times.
fn received_under_one_key(log: &Log, contact: &str, times: usize) {
    let got = log
        .lock()
        .unwrap()
        .get(contact)
        .cloned()
        .unwrap_or_default();
    assert_eq!(got.len(), times, "{contact}: {got:?}");
    assert!(got.iter().all(|k| *k == got[0]), "{contact}: {got:?}");
}

#[test]
fn absurd_retry_after_values_are_capped_and_the_healthy_rows_are_sent_once() {
    let (log, port, _rt) = receiver(Duration::ZERO);
    let contacts: Vec<String> = ["ok-1", "ok-2", "huge-1", "far-1", "date-1", "overflow-1"]
        .map(String::from)
        .to_vec();
    let env = env_for(port, &contacts, "");
    let started = Instant::now();
    let (rows, _) = run_until_settled(&env, &contacts, 90);
    // Three attempts with backoffs capped at 2 s, not the year 9949.
    assert!(started.elapsed() < Duration::from_secs(60), "{rows:#?}");
    for ok in ["ok-1", "ok-2"] {
        assert_eq!(rows[ok]["state"], "sent", "{}", rows[ok]);
        received_under_one_key(&log, ok, 1);
    }
    for (bad, code) in [
        ("huge-1", "503"),
        ("far-1", "429"),
        ("date-1", "503"),
        ("overflow-1", "429"),
    ] {
        let row = &rows[bad];
        assert_eq!(row["state"], "dead", "{row}");
        assert_eq!(row["attempts"], 3, "{row}");
        let error = row["last_error"].as_str().unwrap();
        assert!(
            error.contains(code) && error.contains("gave up after 3"),
            "{row}"
        );
        received_under_one_key(&log, bad, 3);
    }
}

#[test]
fn slow_hanging_and_cut_receivers_leave_every_row_sent_or_dead_and_nothing_twice() {
    // 30 sends at 300 ms on one instance wait up to 9 s in its queue: far
    // more than the call timeout, which counts only the call itself.
    let (log, port, _rt) = receiver(Duration::from_millis(300));
    let mut contacts = ids("slow", 30);
    contacts.extend(["hang-1", "cut-1", "ok-1"].map(String::from));
    let env = env_for(
        port,
        &contacts,
        "\n[plugins]\ncall_timeout = \"4s\"\nqueue = 8\n",
    );
    let (rows, log_text) = run_until_settled(&env, &contacts, 120);
    for c in ids("slow", 30).iter().chain([&"ok-1".to_string()]) {
        assert_eq!(rows[c]["state"], "sent", "{}", rows[c]);
        assert_eq!(rows[c]["attempts"], 1, "{}", rows[c]);
        received_under_one_key(&log, c, 1);
    }
    let hang = &rows["hang-1"];
    assert_eq!(hang["state"], "dead", "{hang}");
    assert!(
        hang["last_error"].as_str().unwrap().contains("timed out"),
        "{hang}"
    );
    received_under_one_key(&log, "hang-1", 3);
    let cut = &rows["cut-1"];
    assert_eq!(cut["state"], "dead", "{cut}");
    assert!(
        cut["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3"),
        "{cut}"
    );
    // The slow endpoint was never taken for a hung plugin.
    assert!(!log_text.contains("plugin instance failed"), "{log_text}");
}

#[test]
fn smtp_servers_that_are_slow_refuse_drop_after_data_or_lack_smtputf8_settle_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let intl = "chloé.durand.1@example.org";
    let contacts = vec![
        ("ascii-1".to_string(), "ascii.1@example.org".to_string()),
        ("intl-1".to_string(), intl.to_string()),
    ];
    // What a contact's row ends as: state, attempts (when known), a word
    // of its last error.
    type End = (&'static str, Option<u32>, &'static str);
    let run = |port: u16, ascii: End, intl: End| {
        let env = email_env(port, &contacts);
        let ids = ["ascii-1", "intl-1"].map(String::from);
        let (rows, _) = run_until_settled(&env, &ids, 120);
        for (contact, (state, attempts, word)) in [("ascii-1", ascii), ("intl-1", intl)] {
            let row = &rows[contact];
            if !state.is_empty() {
                assert_eq!(row["state"], state, "{contact}: {row}");
            }
            if let Some(n) = attempts {
                assert_eq!(row["attempts"], n, "{contact}: {row}");
            }
            let error = row["last_error"].as_str().unwrap_or_default();
            assert!(error.contains(word), "{contact}: {row}");
        }
    };
    // Accepts, without SMTPUTF8: the internationalised address dies at once.
    let (_server, port, out) = aiosmtpd(dir.path(), &["--no-smtputf8"]);
    run(port, ("sent", Some(1), ""), ("dead", Some(1), "SMTPUTF8"));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        2,
        "one .eml and its .json"
    );
    // With SMTPUTF8 both go.
    let (_server, port, _) = aiosmtpd(dir.path(), &[]);
    run(port, ("sent", Some(1), ""), ("sent", Some(1), ""));
    // Slow: 3 s before answering DATA, within the plugin's timeout.
    // (smtp-sink may lack SMTPUTF8: the other address only has to settle.)
    let (_server, port) = smtp_sink(&["-w", "3"]);
    run(port, ("sent", Some(1), ""), ("", None, ""));
    // Refuses the message (5xx after DATA): dead at the first attempt.
    let (_server, port) = smtp_sink(&["-f", "."]);
    run(port, ("dead", Some(1), "500"), ("dead", Some(1), ""));
    // Drops the connection after DATA: retried, then dead.
    let (_server, port) = smtp_sink(&["-q", "."]);
    run(
        port,
        ("dead", Some(3), "gave up after 3"),
        ("dead", None, ""),
    );
}
