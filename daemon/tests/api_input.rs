//! Hostile input at the edges, against the real `relance run` with its API
//! on loopback and a real SQLite file: instants outside the accepted range,
//! rows poisoned in the store, over-long text, the JSON error format on
//! every refusal, the bearer scheme, configuration secrets, click links
//! that cannot be redirected and the rotation of the tracking secret.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Env, code, free_port, stderr, stdout};
use relance::adapters::api::tracking::{Claims, Purpose, sign};
use serde_json::{Value, json};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "input-token-0123456789abcdef";
const SECRET: &str = "tracking-secret-now-0123456789";
const OLD_SECRET: &str = "tracking-secret-old-0123456789";

/// The configuration: a webhook channel to a port nothing listens on (no
/// schedule: nothing is delivered unless asked), the API, and `extra`.
fn config(api_port: u16, extra: &str) -> String {
    format!(
        r#"[store]
path = "${{RELANCE_DB}}"

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
settings = {{ url = "http://127.0.0.1:9/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", allow_networks = ["127.0.0.0/8"] }}

[templates.news]
channel = "hook"
text = "news"

[fatigue.costs]
call = 5.0
webhook_sent = 3.0

[api]
enabled = true
listen = "127.0.0.1:{api_port}"
tokens = ["{TOKEN}"]
tracking_secret = "{SECRET}"
public_url = "http://127.0.0.1:{api_port}"
body_limit_kb = 256
{extra}"#
    )
}

/// `relance run` with the API, stopped (SIGTERM, by its PID) when dropped.
struct Daemon {
    env: Env,
    child: Child,
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    fn start(extra: &str) -> Self {
        let env = Env::new();
        let port = free_port();
        env.write("relance.toml", &config(port, extra));
        let child = env.spawn_daemon("run.log");
        let d = Self {
            env,
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        let started = Instant::now();
        let url = format!("{}/healthz", d.base);
        while d
            .rt
            .block_on(async { d.http.get(&url).send().await })
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the API never came up: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.path("run.log")).unwrap_or_default()
    }

    /// Any request: status, headers and the body as JSON (or a string).
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let (status, headers, text) = self.rt.block_on(async {
            let res = req.send().await.expect("request");
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            (status, headers, res.text().await.unwrap())
        });
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    /// A GET without a token (health, tracking links).
    fn open(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.request(reqwest::Method::GET, path, None, None, None)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        let (s, _, b) = self.request(reqwest::Method::GET, path, Some(&auth), None, None);
        (s, b)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        let (s, _, b) = self.request(
            reqwest::Method::POST,
            path,
            Some(&auth),
            Some("application/json"),
            Some(body.to_string()),
        );
        (s, b)
    }

    fn contact(&self, id: &str) {
        let (s, b) = self.post(
            "/v1/contacts",
            &json!([{"id": id, "email": format!("{id}@example.com"), "status": "prospect"}]),
        );
        assert_eq!(s, 200, "{b}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    relance::core::clock::Clock::system().now()
}

/// The error of a refused request: (code, field).
fn error(body: &Value) -> (&str, Option<&str>) {
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}")),
        body["error"]["field"].as_str(),
    )
}

fn result_field(body: &Value, i: usize) -> Option<&str> {
    body["results"][i]["field"].as_str()
}

#[test]
fn instants_outside_the_accepted_range_are_refused_on_the_way_in_with_the_field_named() {
    let d = Daemon::start("");
    d.contact("p");
    let ok = (now() - chrono::Duration::hours(1)).to_rfc3339();
    let soon = (now() + chrono::Duration::days(2)).to_rfc3339();
    let (s, b) = d.post(
        "/v1/events",
        &json!([
            {"contact": "p", "type": "call", "at": "1900-01-01T00:00:00Z"},
            {"contact": "p", "type": "call", "at": "2200-01-01T00:00:00Z"},
            {"contact": "p", "type": "email_sent", "at": "1999-12-31T23:59:59Z"},
            {"contact": "p", "type": "call", "at": soon},
            {"contact": "p", "type": "call", "at": ok},
        ]),
    );
    assert_eq!(s, 422, "{b}");
    for i in 0..4 {
        assert_eq!(result_field(&b, i), Some("at"), "{b}");
        assert_eq!(b["results"][i]["outcome"], "rejected");
    }
    assert!(
        b["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("[ingest] earliest"),
        "{b}"
    );
    assert!(
        b["results"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("[ingest] max_future"),
        "{b}"
    );
    assert_eq!(b["results"][4]["outcome"], "accepted", "{b}");
    // A company signal sent as an event and one given on a company line.
    let (s, b) = d.post(
        "/v1/companies",
        &json!([{"id": "acme", "signals": [{"kind": "new_site", "at": "1969-07-20T20:17:00Z"}]}]),
    );
    assert_eq!(
        (s, result_field(&b, 0)),
        (422, Some("signals[0].at")),
        "{b}"
    );
    let (s, b) = d.post(
        "/v1/events",
        &json!([{"company": "acme", "type": "business_signal", "at": "1850-01-01T00:00:00Z", "props": {"kind": "new_site"}}]),
    );
    assert_eq!((s, result_field(&b, 0)), (422, Some("at")), "{b}");

    // `relance import` refuses the same lines with the same messages.
    let file = d.env.write(
        "old.jsonl",
        &format!(
            "{}\n{}\n",
            json!({"contact": "p", "type": "call", "at": "1900-01-01T00:00:00Z"}),
            json!({"contact": "p", "type": "call", "at": "2300-01-01T00:00:00Z"})
        ),
    );
    let out = d
        .env
        .run(&["import", "events", file.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons: Vec<&str> = summary["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{summary}");
    assert!(reasons[0].starts_with("at: 1900-01-01") && reasons[0].contains("earliest"));
    assert!(reasons[1].starts_with("at: 2300-01-01") && reasons[1].contains("max_future"));

    // The range is configured and checked when the configuration loads.
    let text = config(
        free_port(),
        "\n[ingest]\nearliest = \"1960-01-01T00:00:00Z\"\nmax_future = \"500d\"\n",
    );
    d.env.write("bad.toml", &text);
    let out = Command::new(BIN)
        .args([
            "--config",
            d.env.path("bad.toml").to_str().unwrap(),
            "check",
        ])
        .env("RELANCE_DB", d.env.path("other.db"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("`ingest.earliest`") && err.contains("`ingest.max_future`"),
        "{err}"
    );
}

#[test]
fn a_configured_range_moves_the_earliest_instant() {
    let d = Daemon::start("\n[ingest]\nearliest = \"2020-01-01T00:00:00Z\"\nmax_future = \"0s\"\n");
    d.contact("p");
    let (s, b) = d.post(
        "/v1/events",
        &json!([
            {"contact": "p", "type": "page_visit", "at": "2019-12-31T23:59:59Z"},
            {"contact": "p", "type": "page_visit", "at": (now() + chrono::Duration::minutes(5)).to_rfc3339()},
            {"contact": "p", "type": "page_visit", "at": "2020-01-01T00:00:00Z"},
        ]),
    );
    assert_eq!(s, 422, "{b}");
    let outcomes: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["rejected", "rejected", "accepted"], "{b}");
}

#[test]
fn rows_poisoned_in_the_store_leave_the_contact_readable_and_plannable() {
    let d = Daemon::start("");
    d.contact("p");
    let ok = (now() - chrono::Duration::hours(1)).to_rfc3339();
    let (s, b) = d.post(
        "/v1/events",
        &json!([{"contact": "p", "type": "call", "at": ok}]),
    );
    assert_eq!(s, 200, "{b}");
    // Written straight into the SQLite file, as an older version or a
    // hand-made fix could have: a call in 1900, one beyond what any clock
    // reads, and one whose props are not JSON.
    let db = rusqlite::Connection::open(d.env.path("store.db")).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    let rowid: i64 = db
        .query_row("SELECT rowid FROM contacts WHERE id = 'p'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let seq: i64 = db
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    let poisoned: [(i64, &str, &str); 3] = [
        (-2_208_988_800_000_000, "call", "{}"),
        (i64::MAX, "webhook_sent", "{}"),
        (now().timestamp_micros() - 1_000, "call", "{not json"),
    ];
    for (i, (at, kind, props)) in poisoned.iter().enumerate() {
        db.execute(
            "INSERT INTO events (contact, at, seq, type, props) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![rowid, at, seq + 1 + i as i64, kind, props],
        )
        .unwrap();
    }
    drop(db);
    let (s, b) = d.get("/v1/contacts/p");
    assert_eq!(s, 200, "{b}\n{}", d.log());
    assert_eq!(b["contact"]["id"], "p");
    assert_eq!(b["fatigue"]["contact"], "p", "{b}");
    let (s, b) = d.get("/v1/plan?contact=p");
    assert_eq!(s, 200, "{b}\n{}", d.log());
    assert!(b.is_array(), "{b}");
    // The command line reads the same contact.
    let out = d.env.run(&["fatigue", "p", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = d.env.run(&["plan", "--contact", "p", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(d.log().contains("left out of fatigue"), "{}", d.log());
}

#[test]
fn every_text_field_has_a_limit_refused_with_a_4xx_naming_the_field() {
    let d = Daemon::start("");
    d.contact("p");
    let long = |n: usize| "x".repeat(n);
    // A 100 KB broadcast name: refused before anything is written.
    let (s, b) = d.post(
        "/v1/broadcasts",
        &json!({"id": "b", "name": long(100_000), "segment": {"field": "status", "eq": "prospect"},
                "channel": "hook", "template": "news", "end": "2100-01-01T00:00:00Z"}),
    );
    assert_eq!((s, error(&b)), (400, ("bad_request", Some("name"))), "{b}");
    assert!(
        b.to_string().len() < 1_000,
        "the message does not repeat the value"
    );
    for (field, body) in [
        (
            "id",
            json!({"id": long(257), "name": "n", "segment": {"field": "status", "eq": "prospect"}, "channel": "hook", "template": "news", "end": "2100-01-01T00:00:00Z"}),
        ),
        (
            "template",
            json!({"id": "b", "name": "n", "segment": {"field": "status", "eq": "prospect"}, "channel": "hook", "template": long(300), "end": "2100-01-01T00:00:00Z"}),
        ),
        (
            "segment",
            json!({"id": "b", "name": "n", "segment": {"field": "status", "in": vec![long(100); 200]}, "channel": "hook", "template": "news", "end": "2100-01-01T00:00:00Z"}),
        ),
    ] {
        let (s, b) = d.post("/v1/broadcasts", &body);
        assert_eq!((s, error(&b).1), (400, Some(field)), "{b}");
    }
    let (s, b) = d.get("/v1/outbox");
    assert_eq!((s, b.as_array().map(Vec::len)), (200, Some(0)), "{b}");

    let at = (now() - chrono::Duration::hours(1)).to_rfc3339();
    let (s, b) = d.post(
        "/v1/events",
        &json!([
            {"id": long(300), "contact": "p", "type": "call", "at": at},
            {"contact": "p", "type": long(300), "at": at},
            {"contact": "p", "type": "page_visit", "at": at, "props": {"url": long(20_000)}},
            {"contact": "p", "type": "page_visit", "at": at, "props": {"a": long(9_000), "b": long(9_000)}},
            {"contact": "p", "type": "page_visit", "at": long(5_000)},
        ]),
    );
    assert_eq!(s, 422, "{b}");
    let fields: Vec<Option<&str>> = (0..5).map(|i| result_field(&b, i)).collect();
    assert_eq!(
        fields,
        [
            Some("id"),
            Some("type"),
            Some("props.url"),
            Some("props"),
            Some("at")
        ],
        "{b}"
    );
    assert!(
        b.to_string().len() < 4_000,
        "no message repeats a long value"
    );
    let (s, b) = d.post(
        "/v1/contacts",
        &json!([
            {"id": "q", "first_name": long(2_000)},
            {"id": "q", "bio": long(20_000)},
            {"id": long(300)},
            {"id": "q", "consent": {long(300): true}},
        ]),
    );
    assert_eq!(s, 422, "{b}");
    let fields: Vec<Option<&str>> = (0..4).map(|i| result_field(&b, i)).collect();
    assert_eq!(
        fields,
        [
            Some("first_name"),
            Some("attributes.bio"),
            Some("id"),
            Some("consent")
        ],
        "{b}"
    );
    // Attributes added a few at a time keep the limit once merged.
    for (i, status) in [200, 200, 422].into_iter().enumerate() {
        let (s, b) = d.post(
            "/v1/contacts",
            &json!([{"id": "p", format!("note{i}"): long(6_000)}]),
        );
        assert_eq!(s, status, "{b}");
        if s == 422 {
            assert_eq!(result_field(&b, 0), Some("attributes"), "{b}");
        }
    }
    let (s, b) = d.post("/v1/deals", &json!([{"id": "d", "name": long(1_025)}]));
    assert_eq!((s, result_field(&b, 0)), (422, Some("name")), "{b}");

    // The command line: same limits, same messages.
    let out = d.env.run(&[
        "broadcast",
        "create",
        "--id",
        "b",
        "--name",
        &long(100_000),
        "--segment",
        r#"{ field = "status", eq = "prospect" }"#,
        "--channel",
        "hook",
        "--template",
        "news",
        "--end",
        "2100-01-01T00:00:00Z",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("name: 100000 bytes, at most 1024 are accepted"),
        "{}",
        stderr(&out)
    );
    let csv = d
        .env
        .write("c.csv", &format!("id,first_name\nr,{}\n", long(2_000)));
    let out = d.env.run(&["import", "contacts", csv.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("line 2: first_name: 2000 bytes, at most 1024 are accepted"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_refusal_is_json_with_the_documented_status() {
    let d = Daemon::start("");
    let auth = format!("Bearer {TOKEN}");
    let broadcast = json!({"id": "b", "name": "n", "segment": {"field": "status", "eq": "prospect"},
                           "channel": "hook", "template": "news", "end": "2100-01-01T00:00:00Z"});
    // Broadcasts: 415 for another type, 413 over the body limit.
    let (s, _, b) = d.request(
        reqwest::Method::POST,
        "/v1/broadcasts",
        Some(&auth),
        Some("text/plain"),
        Some(broadcast.to_string()),
    );
    assert_eq!((s, error(&b).0), (415, "unsupported_media_type"), "{b}");
    let (s, _, b) = d.request(
        reqwest::Method::POST,
        "/v1/broadcasts",
        Some(&auth),
        Some("application/json"),
        Some(format!("{{\"name\": \"{}\"}}", "x".repeat(300 * 1024))),
    );
    assert_eq!((s, error(&b).0), (413, "payload_too_large"), "{b}");
    // A missing field is named, in a broadcast and in an ingest item.
    let mut partial = broadcast.clone();
    partial.as_object_mut().unwrap().remove("end");
    let (s, b) = d.post("/v1/broadcasts", &partial);
    assert_eq!((s, error(&b)), (400, ("bad_request", Some("end"))), "{b}");
    let (s, b) = d.post(
        "/v1/events",
        &json!([{"type": "call", "at": "2026-01-01T00:00:00Z"}]),
    );
    assert_eq!((s, result_field(&b, 0)), (422, Some("contact")), "{b}");
    // Query strings and methods.
    let (s, b) = d.get("/v1/outbox?limit=many");
    assert_eq!((s, error(&b)), (400, ("bad_request", Some("limit"))), "{b}");
    let (s, h, b) = d.request(reqwest::Method::PUT, "/v1/outbox", Some(&auth), None, None);
    assert_eq!((s, error(&b).0), (405, "method_not_allowed"), "{b}");
    assert!(h.contains_key("allow"));
    let (s, _, b) = d.request(reqwest::Method::DELETE, "/healthz", None, None, None);
    assert_eq!((s, error(&b).0), (405, "method_not_allowed"), "{b}");
    let (s, _, b) = d.request(reqwest::Method::GET, "/v1/nothing", Some(&auth), None, None);
    assert_eq!((s, error(&b).0), (404, "not_found"), "{b}");
    // The bearer scheme is case-insensitive; readiness shows no path.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (s, _, b) = d.request(
            reqwest::Method::GET,
            "/v1/outbox",
            Some(&format!("{scheme} {TOKEN}")),
            None,
            None,
        );
        assert_eq!(s, 200, "{scheme}: {b}");
    }
    let (s, _, b) = d.open("/readyz");
    assert_eq!(s, 200);
    assert!(b.get("config").is_none(), "{b}");
    assert!(!b.to_string().contains(".toml"), "{b}");
}

#[test]
fn blank_tokens_and_secrets_are_refused_when_the_configuration_loads() {
    let env = Env::new();
    let text = config(free_port(), "")
        .replace(TOKEN, "                ")
        .replace(SECRET, "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t");
    env.write("relance.toml", &text);
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("`api.tokens[0]`"), "{err}");
    assert!(err.contains("`api.tracking_secret`"), "{err}");
    let text = config(
        free_port(),
        "previous_tracking_secret = \"old-secret-0123456789\"\n",
    );
    env.write("relance.toml", &text);
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("previous_tracking_secret_until"),
        "{}",
        stderr(&out)
    );
}

fn token(purpose: Purpose, url: Option<&str>, secret: &str) -> String {
    sign(
        &Claims {
            purpose,
            key: "k1".into(),
            contact: "p".into(),
            channel: "hook".into(),
            url: url.map(String::from),
        },
        secret,
    )
}

#[test]
fn clicks_never_redirect_without_a_location_and_a_rotated_secret_keeps_links_working() {
    let d = Daemon::start(&format!(
        "previous_tracking_secret = \"{OLD_SECRET}\"\nprevious_tracking_secret_until = \"2100-01-01T00:00:00Z\"\n"
    ));
    d.contact("p");
    let evil = token(
        Purpose::Click,
        Some("https://example.com/\r\nSet-Cookie: a=1"),
        SECRET,
    );
    let (s, h, b) = d.open(&format!("/t/c/{evil}"));
    assert_eq!((s, error(&b).0), (404, "bad_token"), "{b}");
    assert!(!h.contains_key("location"));
    // Links sent before the rotation still work until the configured date.
    for secret in [SECRET, OLD_SECRET] {
        let click = token(Purpose::Click, Some("https://example.com/offer"), secret);
        let (s, h, _) = d.open(&format!("/t/c/{click}"));
        assert_eq!(s, 302);
        assert_eq!(h["location"], "https://example.com/offer");
    }
    let other = token(Purpose::Open, None, "never-configured-0123456789");
    let (s, _, _) = d.open(&format!("/t/o/{other}"));
    assert_eq!(s, 404);
    drop(d);
    // After that date, the previous secret's links are refused.
    let d = Daemon::start(&format!(
        "previous_tracking_secret = \"{OLD_SECRET}\"\nprevious_tracking_secret_until = \"2001-01-01T00:00:00Z\"\n"
    ));
    let old = token(Purpose::Open, None, OLD_SECRET);
    let (s, _, b) = d.open(&format!("/t/o/{old}"));
    assert_eq!((s, error(&b).0), (404, "bad_token"), "{b}");
}

#[test]
fn a_huge_duration_is_a_configuration_error_not_a_crash() {
    let env = Env::new();
    let text = config(free_port(), "").replace(
        "[store]\n",
        "[store]\nbusy_timeout = \"9999999999999999s\"\n",
    );
    env.write("relance.toml", &text);
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`store.busy_timeout`") && stderr(&out).contains("too long"),
        "{}",
        stderr(&out)
    );
}
