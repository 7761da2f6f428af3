//! The HTTP API over real HTTP on loopback, against a real SQLite file:
//! authentication, per-item ingest results, idempotency, tracking links
//! (including forged and altered tokens), unsubscribe reaching the guard,
//! metrics, the OpenAPI document, and a property test of the ingest path.

use proptest::prelude::*;
use relance::adapters::api::{ApiState, serve, tracking};
use relance::core::clock::Clock;
use relance::core::metrics::Metrics;
use relance::core::model::FollowUpKind;
use relance::core::shutdown::Coordinator;
use relance::domain::fatigue::{ContactState, Proposal, Verdict};
use relance::pipeline::config::Config;
use relance::ports::store::StoreHandle;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

const TOKEN: &str = "test-token-0123456789";
const SECRET: &str = "test-secret-0123456789abcdef";
const NOW: &str = "2026-11-17T09:00:00Z";
/// Every request of these tests is bounded in time.
const TIMEOUT: Duration = Duration::from_secs(20);

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(NOW)
        .expect("valid")
        .with_timezone(&chrono::Utc)
}

struct Server {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    wake: Arc<Notify>,
    coordinator: Option<Coordinator>,
    _config_tx: watch::Sender<Arc<Config>>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("relance.toml");
        std::fs::write(
            &file,
            format!(
                "[store]\npath = \"t.db\"\n\n[channels.email]\nplugin = \"email\"\nevent = \"email_sent\"\n\n\
                 [api]\nenabled = true\ntokens = [\"{TOKEN}\"]\ntracking_secret = \"{SECRET}\"\n\
                 public_url = \"http://127.0.0.1\"\nbody_limit_kb = 64\nmax_batch = 200\n"
            ),
        )
        .expect("config");
        let config = Arc::new(Config::load(&file).unwrap_or_else(|e| panic!("{e}")));
        let (tx, rx) = watch::channel(config.clone());
        let wake = Arc::new(Notify::new());
        let store = relance::adapters::sqlite::open(&config).expect("store");
        let state = ApiState::new(store, rx, Clock::fixed(now()), Metrics::new(), wake.clone())
            .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let coordinator = Coordinator::default();
        tokio::spawn(serve(listener, state, coordinator.listener()));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .expect("client");
        Self {
            base,
            http,
            _dir: dir,
            config,
            wake,
            coordinator: Some(coordinator),
            _config_tx: tx,
        }
    }

    fn store(&self) -> StoreHandle {
        relance::adapters::sqlite::open(&self.config).expect("open")
    }

    fn events(&self) -> u64 {
        self.store().counts().expect("counts").events
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body").to_vec();
        (status, headers, bytes)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self
            .send(reqwest::Method::GET, path, Some(TOKEN), None, None)
            .await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, "application/json", body.to_string()).await
    }

    async fn post(&self, path: &str, content_type: &str, body: String) -> (u16, Value) {
        let (s, _, b) = self
            .send(
                reqwest::Method::POST,
                path,
                Some(TOKEN),
                Some(content_type),
                Some(body.into_bytes()),
            )
            .await;
        (
            s,
            serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{e}: {b:?}")),
        )
    }

    async fn contacts(&self, ids: &[&str]) {
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "email": format!("{id}@example.com")}))
            .collect();
        let (s, body) = self.post_json("/v1/contacts", &json!(items)).await;
        assert_eq!(s, 200, "{body}");
    }

    async fn stop(mut self) {
        if let Some(c) = self.coordinator.take() {
            assert!(
                c.shutdown(Duration::from_secs(10)).await,
                "the server stops gracefully"
            );
        }
    }
}

fn outcomes(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_get_a_401_in_json() {
    let s = Server::start().await;
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        for path in ["/v1/outbox", "/metrics", "/openapi.json", "/v1/contacts/x"] {
            let (status, _, body) = s.send(reqwest::Method::GET, path, token, None, None).await;
            assert_eq!(status, 401, "{path} with {token:?}");
            let body: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let (status, _, _) = s
        .send(
            reqwest::Method::POST,
            "/v1/events",
            None,
            None,
            Some(b"[]".to_vec()),
        )
        .await;
    assert_eq!(status, 401);
    for path in ["/healthz", "/readyz"] {
        let (status, _, _) = s.send(reqwest::Method::GET, path, None, None, None).await;
        assert_eq!(status, 200, "{path} needs no token");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_get_one_result_each_and_are_idempotent_on_their_id() {
    let s = Server::start().await;
    s.contacts(&["c1", "c2"]).await;
    let batch = json!([
        {"id": "e1", "contact": "c1", "type": "email_open", "at": "2026-11-16T10:00:00Z"},
        {"contact": "c2", "type": "call", "at": "2026-11-16T11:00:00Z", "props": {"outcome": "RDV"}},
        {"contact": "c1", "type": "call", "at": "yesterday"},
        {"contact": "ghost", "type": "call", "at": "2026-11-16T11:00:00Z"},
        "not an object",
    ]);
    let (status, body) = s.post_json("/v1/events", &batch).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        outcomes(&body),
        ["accepted", "accepted", "rejected", "rejected", "rejected"]
    );
    assert_eq!(body["results"][2]["field"], "at");
    assert!(
        body["results"][2]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("at: ")
    );
    assert_eq!(body["results"][3]["field"], "contact");
    assert_eq!(body["error"]["code"], "rejected_items");
    assert_eq!(body["counts"]["accepted"], 2);
    assert_eq!(s.events(), 2, "rejected items write nothing");
    tokio::time::timeout(Duration::from_secs(5), s.wake.notified())
        .await
        .expect("accepted events wake the daemon");

    // The same events again, as NDJSON, with a broken line: duplicates.
    let ndjson = format!("{}\n\n{}\n{{broken\n", batch[0], batch[1]);
    let (status, body) = s.post("/v1/events", "application/x-ndjson", ndjson).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(outcomes(&body), ["duplicate", "duplicate", "rejected"]);
    assert!(
        body["results"][2]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("invalid JSON")
    );
    let (status, body) = s.post_json("/v1/events", &json!([batch[0]])).await;
    assert_eq!((status, outcomes(&body)), (200, vec!["duplicate".into()]));
    assert_eq!(s.events(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_cannot_be_used_get_a_4xx_that_says_why() {
    let s = Server::start().await;
    let cases: [(&str, String, u16, &str); 5] = [
        (
            "application/json",
            "{\"contact\": \"c1\"}".into(),
            400,
            "JSON array",
        ),
        ("application/json", "[{".into(), 400, "invalid JSON"),
        ("text/csv", "a,b".into(), 415, "content type"),
        (
            "application/json",
            format!("[\"{}\"]", "x".repeat(70_000)),
            413,
            "larger than 64 KB",
        ),
        (
            "application/json",
            json!(vec![json!({}); 201]).to_string(),
            400,
            "at most 200",
        ),
    ];
    for (ct, body, want, says) in cases {
        let (status, body) = s.post("/v1/events", ct, body).await;
        assert_eq!(status, want, "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message}");
    }
    let (status, body) = s.get("/v1/outbox?status=bogus").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("status"))
    );
    let (status, body) = s.get("/v1/nothing").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(s.events(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_upserted_read_with_score_and_fatigue_and_erased() {
    let s = Server::start().await;
    let (status, body) = s
        .post_json(
            "/v1/contacts",
            &json!([{"id": "c1", "email": "c1@example.com", "title": "DRH"}, {"email": "x@y.z"}]),
        )
        .await;
    assert_eq!(
        (status, outcomes(&body)),
        (422, vec!["inserted".into(), "rejected".into()])
    );
    assert_eq!(body["results"][1]["field"], "id");
    let (status, body) = s
        .post_json(
            "/v1/companies",
            &json!([{"id": "acme", "name": "Acme", "headcount": 120}]),
        )
        .await;
    assert_eq!((status, outcomes(&body)), (200, vec!["inserted".into()]));
    let (status, body) = s
        .post_json(
            "/v1/deals",
            &json!([{"id": "d1", "contact": "c1", "amount": 1000}, {"id": "d2", "contact": "ghost"}]),
        )
        .await;
    assert_eq!(
        (status, outcomes(&body)),
        (422, vec!["inserted".into(), "rejected".into()])
    );
    let (status, body) = s
        .post_json(
            "/v1/contacts",
            &json!([{"id": "c1", "email": "c1@example.com"}]),
        )
        .await;
    assert_eq!((status, outcomes(&body)), (200, vec!["unchanged".into()]));
    s.post_json(
        "/v1/events",
        &json!([{"contact": "c1", "type": "email_sent", "at": "2026-11-16T09:00:00Z", "channel": "email"}]),
    )
    .await;

    let (status, view) = s.get("/v1/contacts/c1").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["contact"]["id"], "c1");
    assert_eq!(view["contact"]["attributes"]["title"], "DRH");
    assert!(view["score"]["score"].is_number(), "{view}");
    assert!(view["score"]["contributions"].is_array());
    assert_eq!(view["fatigue"]["contact"], "c1");
    assert!(view["fatigue"]["level"].is_string());

    let (status, _, _) = s
        .send(
            reqwest::Method::DELETE,
            "/v1/contacts/c1",
            Some(TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = s.get("/v1/contacts/c1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, _) = s
        .send(
            reqwest::Method::DELETE,
            "/v1/contacts/c1",
            Some(TOKEN),
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.store().counts().expect("counts").deals, 0);
    let (status, rows) = s.get("/v1/outbox?status=planned").await;
    assert_eq!((status, rows), (200, json!([])));
    s.stop().await;
}

/// The links an email to `contact` would carry.
fn links(contact: &str) -> (String, String, String) {
    let mut message = relance_plugin_api::message::Message {
        html: Some("<p><a href=\"https://example.com/offer?a=1&amp;b=2\">offer</a></p>".into()),
        ..Default::default()
    };
    let unsubscribe = tracking::decorate(
        &mut message,
        "http://127.0.0.1",
        "key-1",
        contact,
        "email",
        SECRET,
    );
    let html = message.html.expect("html");
    let token = |marker: &str| {
        html.split(marker)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("token")
            .to_string()
    };
    let u = unsubscribe.rsplit('/').next().expect("token").to_string();
    (token("/t/o/"), token("/t/c/"), u)
}

/// Another character at `at` of a token, keeping it well-formed base64.
fn alter(token: &str, at: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_links_record_once_and_refuse_forged_tokens() {
    let s = Server::start().await;
    s.contacts(&["c1"]).await;
    let (open, click, unsubscribe) = links("c1");

    let (status, headers, body) = s
        .send(
            reqwest::Method::GET,
            &format!("/t/o/{open}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, headers["content-type"].to_str().ok()),
        (200, Some("image/gif"))
    );
    assert!(body.starts_with(b"GIF89a"));
    s.send(
        reqwest::Method::GET,
        &format!("/t/o/{open}"),
        None,
        None,
        None,
    )
    .await;
    let (status, headers, _) = s
        .send(
            reqwest::Method::GET,
            &format!("/t/c/{click}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(status, 302);
    assert_eq!(
        headers["location"].to_str().ok(),
        Some("https://example.com/offer?a=1&b=2"),
        "the redirect goes to the URL signed for this message"
    );
    let events = s.store().events_of("c1").expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["email_open", "email_click"],
        "a second open is a duplicate"
    );
    assert_eq!(events[1].props["url"], "https://example.com/offer?a=1&b=2");
    assert_eq!(events[1].channel.as_deref(), Some("email"));

    // Forged, altered, re-purposed or foreign-secret tokens: 404, nothing recorded.
    let (payload, sig) = click.split_once('.').expect("dot");
    let mut evil = tracking::verify(&click, SECRET, tracking::Purpose::Click).expect("valid");
    evil.url = Some("https://evil.example/".into());
    let evil_payload = tracking::sign(&evil, "not-the-secret-0123456789")
        .split_once('.')
        .map(|(p, _)| p.to_string())
        .expect("dot");
    let forged = [
        format!("/t/c/{evil_payload}.{sig}"),
        format!(
            "/t/c/{}",
            tracking::sign(&evil, "not-the-secret-0123456789")
        ),
        format!("/t/c/{}", alter(&click, 3)),
        format!("/t/c/{payload}.{}", alter(sig, 2)),
        format!("/t/c/{open}"),
        format!("/t/o/{click}"),
        format!("/t/o/{}", alter(&open, 5)),
        "/t/o/garbage".to_string(),
        format!("/t/c/{payload}"),
    ];
    for path in &forged {
        let (status, headers, body) = s.send(reqwest::Method::GET, path, None, None, None).await;
        assert_eq!(status, 404, "{path}");
        assert!(headers.get("location").is_none());
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "bad_token");
    }
    for path in [
        format!("/u/{}", alter(&unsubscribe, 4)),
        format!("/u/{open}"),
    ] {
        let (status, _, _) = s.send(reqwest::Method::POST, &path, None, None, None).await;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(s.events(), 2, "refused tokens record nothing");
    s.stop().await;
}

fn decide(s: &Server) -> (Verdict, Value) {
    let guard = s.config.guard().expect("guard");
    let (contact, weighs) = s.store().guard_input("c1").expect("ok").expect("contact");
    let state = ContactState::replay(&guard, &contact, &weighs).expect("state");
    let proposal = Proposal {
        channel: guard.channel("email").expect("channel"),
        kind: FollowUpKind::Opportunistic,
        priority: None,
        exempt: false,
        first_proposed: None,
    };
    let d = guard.decide(&proposal, &state, now());
    (d.decision, serde_json::to_value(&d.reasons).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_blocks_the_very_next_decision() {
    let s = Server::start().await;
    s.contacts(&["c1"]).await;
    let (_, _, unsubscribe) = links("c1");
    assert_eq!(decide(&s).0, Verdict::Allow);

    let (status, _, page) = s
        .send(
            reqwest::Method::GET,
            &format!("/u/{unsubscribe}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("method=\"post\""));
    assert_eq!(decide(&s).0, Verdict::Allow, "a GET never unsubscribes");

    let (status, _, body) = s
        .send(
            reqwest::Method::POST,
            &format!("/u/{unsubscribe}"),
            None,
            Some("application/x-www-form-urlencoded"),
            Some(b"List-Unsubscribe=One-Click".to_vec()),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (verdict, reasons) = decide(&s);
    assert_eq!(verdict, Verdict::Block, "{reasons}");
    assert!(reasons.to_string().contains("do_not_contact"), "{reasons}");
    s.send(
        reqwest::Method::POST,
        &format!("/u/{unsubscribe}"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s.events(), 1, "a repeated unsubscribe is a duplicate");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_the_openapi_document_lists_every_route() {
    let s = Server::start().await;
    s.contacts(&["c1"]).await;
    s.post_json(
        "/v1/events",
        &json!([{"contact": "c1", "type": "call", "at": NOW}, {"contact": "c1"}]),
    )
    .await;
    let (status, headers, body) = s
        .send(reqwest::Method::GET, "/metrics", Some(TOKEN), None, None)
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(body).expect("utf-8");
    let line =
        regex::Regex::new(r#"^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$"#)
            .expect("regex");
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.is_match(l), "not a sample line: {l}");
        let value = l.rsplit(' ').next().expect("value");
        value.parse::<f64>().unwrap_or_else(|e| panic!("{l}: {e}"));
    }
    for want in [
        "relance_events_ingested_total{outcome=\"accepted\"} 1",
        "relance_events_ingested_total{outcome=\"rejected\"} 1",
        "# TYPE relance_outbox_depth gauge",
        "relance_outbox_depth{state=\"dead\"} 0",
        "relance_rescore_duration_seconds_count 0",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }

    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths: std::collections::BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let want: std::collections::BTreeSet<String> = [
        "/v1/events",
        "/v1/contacts",
        "/v1/companies",
        "/v1/deals",
        "/v1/contacts/{id}",
        "/v1/outbox",
        "/v1/broadcasts",
        "/v1/plan",
        "/v1/templates/{name}/preview",
        "/v1/tasks",
        "/v1/tasks/{id}/outcome",
        "/t/o/{token}",
        "/t/c/{token}",
        "/u/{token}",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, want);
    assert!(doc["paths"]["/v1/contacts/{id}"]["delete"].is_object());
    assert!(doc["paths"]["/u/{token}"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every documented path is served (none falls through to the 404 fallback).
    for path in &paths {
        let concrete = path.replace("{id}", "c1").replace("{token}", "x.y");
        let (status, _, body) = s
            .send(reqwest::Method::GET, &concrete, Some(TOKEN), None, None)
            .await;
        let route_missing = status == 404
            && serde_json::from_slice::<Value>(&body).is_ok_and(|b| {
                b["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("route"))
            });
        assert!(!route_missing, "{path} is documented but not served");
    }
    s.stop().await;
}

/// Items shaped like events, often wrong: missing fields, wrong types,
/// bad instants, unknown contacts.
fn item() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(json!("c1")),
        Just(json!("ghost")),
        Just(json!("2026-11-16T10:00:00Z")),
        Just(json!("business_signal")),
    ];
    let value = leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let keys = prop::sample::select(vec![
        "id", "contact", "type", "at", "channel", "props", "company", "extra",
    ]);
    prop_oneof![
        3 => prop::collection::btree_map(keys, value.clone(), 0..7)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => value,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever arrives, the API answers 200 or a 4xx with a message, and
    /// exactly the accepted items are written.
    #[test]
    fn any_batch_gets_an_answer_and_only_accepted_items_are_written(
        items in prop::collection::vec(item(), 0..12),
        raw in prop::collection::vec(any::<u8>(), 0..200),
        ndjson in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let s = Server::start().await;
            s.contacts(&["c1"]).await;
            let (ct, body) = if ndjson {
                let mut text: Vec<u8> = items.iter().flat_map(|i| format!("{i}\n").into_bytes()).collect();
                text.extend(&raw);
                ("application/x-ndjson", text)
            } else {
                ("application/json", Value::Array(items.clone()).to_string().into_bytes())
            };
            for body in [body, raw.clone()] {
                let before = s.events();
                let (status, _, answer) = s
                    .send(reqwest::Method::POST, "/v1/events", Some(TOKEN), Some(ct), Some(body))
                    .await;
                let answer: Value = serde_json::from_slice(&answer).expect("JSON answer");
                prop_assert!(status == 200 || (400..500).contains(&status), "{status}");
                if status != 200 {
                    let message = answer["error"]["message"].as_str().unwrap_or_default();
                    prop_assert!(!message.is_empty(), "{answer}");
                }
                let accepted = answer["counts"]["accepted"].as_u64().unwrap_or(0);
                prop_assert_eq!(s.events() - before, accepted, "{}", answer);
                if let Some(results) = answer["results"].as_array() {
                    for r in results.iter().filter(|r| r["outcome"] == "rejected") {
                        prop_assert!(!r["reason"].as_str().unwrap_or_default().is_empty());
                    }
                }
            }
            s.stop().await;
            Ok(())
        })?;
    }
}

/// The call desk through the API: a duplicate is accepted and flagged with
/// the key it shares; the prospect status the scoring pass stored is read
/// with the contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_flagged_and_the_prospect_status_is_read() {
    let s = Server::start().await;
    let (status, body) = s
        .post_json(
            "/v1/contacts",
            &json!([
                {"id": "a", "email": "anne@example.com", "phone": "06 12 34 56 78"},
                {"id": "b", "email": "ANNE@Example.com"},
                {"id": "h", "first_name": "Anne", "email": "anne@other.example"},
            ]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][1]["duplicates"],
        json!([{"kind": "email", "key": "anne@example.com", "contacts": ["a", "b"]}])
    );
    assert!(body["results"][2].get("duplicates").is_none(), "{body}");
    let (status, body) = s
        .post_json(
            "/v1/events",
            &json!([{"contact": "a", "type": "call", "at": "2026-11-17T08:30:00Z",
                     "props": {"outcome": "PISTE"}}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    relance::pipeline::rescore::rescore(&*s.store(), &s.config, now(), false).expect("rescore");
    let (status, body) = s.get("/v1/contacts/a").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["prospect"],
        json!({"status": "CHAUD", "since": "2026-11-17T08:30:00Z", "set_by": {"type": "call", "outcome": "PISTE"}})
    );
    let (_, body) = s.get("/v1/contacts/h").await;
    assert_eq!(
        body["prospect"],
        json!({"status": "FROID", "since": null, "set_by": null})
    );
    s.stop().await;
}
