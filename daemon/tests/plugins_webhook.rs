//! The webhook plugin, loaded as a shared library, against a real HTTP
//! receiver on loopback; signatures checked by the independent
//! `standardwebhooks` package (venv made by tests/servers/setup.sh).
// Test harness helpers (outside #[test] fns) may unwrap too.
#![allow(clippy::unwrap_used)]

mod plugins_support;

use std::path::Path;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use plugins_support::{repo, request};
use relance::adapters::plugins::PluginHost;
use relance::core::config::ChannelConfig;
use relance::ports::channels::Delivery;
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
    body: &'static str,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: vec![],
        delay: Duration::ZERO,
        body: "",
    }
}

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// The client's port: one per connection.
    peer: u16,
}

/// A real HTTP server answering from a script and recording what it got.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<Reply>>>,
    /// Answers by `webhook-id`, before the script: for sends in flight at
    /// once, whose order of arrival is not known.
    by_id: Arc<Mutex<std::collections::HashMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(
    State(r): State<Receiver>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        headers,
        body,
        peer: peer.port(),
    });
    let keyed = r.by_id.lock().unwrap().get(&id).cloned();
    let next = keyed.unwrap_or_else(|| r.script.lock().unwrap().pop_front().unwrap_or(reply(200)));
    tokio::time::sleep(next.delay).await;
    let mut resp = (StatusCode::from_u16(next.status).unwrap(), next.body).into_response();
    for (k, v) in next.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

impl Receiver {
    async fn start(bind: &str) -> (Self, SocketAddr) {
        let r = Receiver::default();
        let app = axum::Router::new().fallback(handle).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, addr)
    }

    fn then(&self, r: Reply) {
        self.script.lock().unwrap().push_back(r);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn host(dir: &Path) -> PluginHost {
    plugins_support::dynamic_host(dir, "webhook", 10)
}

async fn open(host: &PluginHost, name: &str, settings: serde_json::Value) {
    plugins_support::open_channel(host, name, "webhook", "sms_sent", settings).await;
}

fn loopback_settings(url: String) -> serde_json::Value {
    json!({
        "url": url,
        "secret": SECRET,
        "timeout_secs": 1,
        "allow_networks": ["127.0.0.0/8", "::1"],
    })
}

/// Runs the independent verifier; Ok(()) when it accepts.
fn verify(seen: &Seen) -> Result<(), String> {
    use std::io::Write;
    let python = repo().join("target/venv-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash tests/servers/setup.sh`",
        python.display()
    );
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| {
                let v = seen
                    .headers
                    .get(*h)
                    .map(|v| v.to_str().unwrap())
                    .unwrap_or("");
                (h.to_string(), json!(v))
            })
            .collect();
    let input = json!({
        "secret": SECRET,
        "headers": headers,
        "body": String::from_utf8_lossy(&seen.body),
    });
    let mut child = std::process::Command::new(python)
        .arg(repo().join("tests/servers/verify_webhook.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_signed_event_that_an_independent_verifier_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let (rx, addr) = Receiver::start("127.0.0.1:0").await;
    open(
        &host,
        "hook",
        loopback_settings(format!("http://{addr}/hooks/relance")),
    )
    .await;

    let mut req = request(
        "follow-up-42",
        json!({"reason": "clicked the pricing page"}),
    );
    req.message.text = Some("Call {{first_name}}: {{reason}}".into());
    let r = host.deliver("hook", req.clone()).await.unwrap();
    assert_eq!(
        r,
        Delivery::Ok {
            remote_id: Some("follow-up-42".into()),
            data: Some(json!({"status": 200}))
        }
    );
    // A retry carries the same id, so the receiver can de-duplicate.
    host.deliver("hook", req).await.unwrap();
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.path, "/hooks/relance");
        assert_eq!(s.headers["webhook-id"], "follow-up-42");
        // The host's instant, not the machine's clock.
        assert_eq!(s.headers["webhook-timestamp"], "1795176000");
        assert!(
            s.headers["webhook-signature"]
                .to_str()
                .unwrap()
                .starts_with("v1,")
        );
        verify(s).expect("the standardwebhooks package accepts the signature");
    }
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["type"], "relance.follow_up");
    assert_eq!(
        body["data"]["message"]["text"],
        "Call Martino: clicked the pricing page"
    );
    assert_eq!(body["data"]["contact"]["id"], "martino");

    // The verifier is not a rubber stamp: a tampered body is refused.
    let mut tampered = seen[0].clone();
    tampered.body =
        Bytes::from(String::from_utf8_lossy(&seen[0].body).replace("Martino", "Mallory"));
    let e = verify(&tampered).unwrap_err();
    assert!(e.contains("No matching signature"), "{e}");
}

/// Successive sends of one instance travel over one kept-alive
/// connection, also when the receiver answers with a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_sends_reuse_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let (rx, addr) = Receiver::start("127.0.0.1:0").await;
    open(
        &host,
        "hook",
        loopback_settings(format!("http://{addr}/in")),
    )
    .await;
    for i in 0..5 {
        let mut r = reply(200);
        r.body = r#"{"received": true, "queue": "relance-follow-ups"}"#;
        rx.then(r);
        let sent = host
            .deliver("hook", request(&format!("k{i}"), json!({})))
            .await
            .unwrap();
        assert!(matches!(sent, Delivery::Ok { .. }), "{sent:?}");
    }
    let peers: Vec<u16> = rx.seen().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 5);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one connection per send: {peers:?}"
    );
}

/// A batch is POSTed at once, each send signed on its own, over kept-alive
/// connections that the next batch reuses; each outcome comes back in its
/// request's place, whatever the order the answers arrive in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_out_at_once_and_each_outcome_comes_back_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let (rx, addr) = Receiver::start("127.0.0.1:0").await;
    open(
        &host,
        "hook",
        loopback_settings(format!("http://{addr}/in")),
    )
    .await;
    assert!(host.batch_size("hook") >= 8, "{}", host.batch_size("hook"));
    // Every answer waits: sends that went one after the other would each
    // find the previous connection free again.
    let slow = |status: u16| Reply {
        delay: Duration::from_millis(300),
        ..reply(status)
    };
    let mut busy = reply(503);
    busy.headers = vec![("retry-after", "7".into())];
    let answers = [
        ("b0", slow(200)),
        ("b1", busy),
        ("b2", reply(400)),
        ("b3", slow(200)),
        ("b4", slow(201)),
        ("b5", reply(404)),
        ("b6", slow(200)),
        ("b7", slow(200)),
    ];
    for (id, r) in &answers {
        rx.by_id.lock().unwrap().insert(id.to_string(), r.clone());
    }
    let batch: Vec<_> = answers
        .iter()
        .map(|(id, _)| request(id, json!({})))
        .collect();
    let out = host.deliver_batch("hook", &batch).await;
    let classes: Vec<String> = out
        .iter()
        .map(|r| match r {
            Ok(Delivery::Ok { remote_id, .. }) => {
                format!("ok {}", remote_id.as_deref().unwrap_or(""))
            }
            Ok(Delivery::Retryable { retry_after, .. }) => format!("retry {retry_after:?}"),
            Ok(Delivery::Permanent { reason, .. }) => format!("permanent {reason}"),
            Err(e) => format!("error {e}"),
        })
        .collect();
    assert_eq!(
        classes,
        [
            "ok b0",
            "retry Some(7s)",
            "permanent HTTP 400",
            "ok b3",
            "ok b4",
            "permanent HTTP 404",
            "ok b6",
            "ok b7"
        ]
    );
    let first = rx.seen();
    assert_eq!(first.len(), 8);
    for s in &first {
        verify(s).expect("each send of the batch is signed on its own");
    }
    let first_peers: std::collections::BTreeSet<u16> = first.iter().map(|s| s.peer).collect();
    assert!(
        first_peers.len() > 1,
        "the sends of a batch are in flight at once: {first_peers:?}"
    );
    // The next batch travels over the connections the first one opened.
    let again: Vec<_> = (0..4)
        .map(|i| request(&format!("c{i}"), json!({})))
        .collect();
    let out = host.deliver_batch("hook", &again).await;
    assert!(
        out.iter().all(|r| matches!(r, Ok(Delivery::Ok { .. }))),
        "{out:?}"
    );
    let seen = rx.seen();
    let later: Vec<u16> = seen[8..].iter().map(|s| s.peer).collect();
    assert_eq!(later.len(), 4);
    assert!(
        later.iter().all(|p| first_peers.contains(p)),
        "kept-alive connections reused: {later:?} within {first_peers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_fault_ends_in_the_right_class() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let (rx, addr) = Receiver::start("127.0.0.1:0").await;
    open(
        &host,
        "hook",
        loopback_settings(format!("http://{addr}/in")),
    )
    .await;
    open(
        &host,
        "gone",
        loopback_settings(format!("http://{addr}/gone")),
    )
    .await;
    let send = || host.deliver("hook", request("k", json!({})));

    let mut r = reply(503);
    r.headers.push(("retry-after", "120".into()));
    rx.then(r);
    assert_eq!(
        send().await.unwrap(),
        Delivery::Retryable {
            retry_after: Some(Duration::from_secs(120)),
            reason: "HTTP 503".into()
        }
    );
    // An HTTP date, counted from the host's instant (2026-11-20T12:00:00Z).
    let mut r = reply(429);
    r.headers
        .push(("retry-after", "Fri, 20 Nov 2026 12:00:30 GMT".into()));
    rx.then(r);
    assert_eq!(
        send().await.unwrap(),
        Delivery::Retryable {
            retry_after: Some(Duration::from_secs(30)),
            reason: "HTTP 429".into()
        }
    );
    rx.then(reply(500));
    assert!(matches!(
        send().await.unwrap(),
        Delivery::Retryable {
            retry_after: None,
            ..
        }
    ));
    rx.then(reply(204));
    assert!(matches!(send().await.unwrap(), Delivery::Ok { .. }));

    // 410 disables the endpoint: later sends never reach it.
    let before = rx.seen().len();
    rx.then(reply(410));
    assert!(matches!(
        host.deliver("gone", request("k", json!({}))).await.unwrap(),
        Delivery::Permanent {
            disable_endpoint: true,
            ..
        }
    ));
    assert!(matches!(
        host.deliver("gone", request("k2", json!({})))
            .await
            .unwrap(),
        Delivery::Permanent {
            disable_endpoint: true,
            ..
        }
    ));
    assert_eq!(rx.seen().len(), before + 1);
    let health = host
        .healthcheck("gone", "2026-11-20T12:00:00Z".parse().unwrap())
        .await
        .unwrap();
    assert!(
        !health.healthy && health.detail.contains("410"),
        "{health:?}"
    );

    rx.then(reply(400));
    assert!(matches!(
        send().await.unwrap(),
        Delivery::Permanent {
            disable_endpoint: false,
            ..
        }
    ));
    rx.then(reply(204));
    assert!(matches!(send().await.unwrap(), Delivery::Ok { .. }));

    // A redirect is not followed: the receiver sees one request only.
    let before = rx.seen().len();
    let mut r = reply(302);
    r.headers
        .push(("location", format!("http://{addr}/elsewhere")));
    rx.then(r);
    match send().await.unwrap() {
        Delivery::Permanent { reason, .. } => assert!(reason.contains("not followed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.seen().len(), before + 1);
    assert!(rx.seen().iter().all(|s| s.path != "/elsewhere"));

    // A receiver slower than the plugin's timeout.
    let mut r = reply(200);
    r.delay = Duration::from_secs(3);
    rx.then(r);
    match send().await.unwrap() {
        Delivery::Retryable { reason, .. } => assert!(reason.contains("timed out"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    open(
        &host,
        "hook",
        loopback_settings(format!("http://127.0.0.1:{port}/")),
    )
    .await;
    match host.deliver("hook", request("k", json!({}))).await.unwrap() {
        Delivery::Retryable { reason, .. } => assert!(reason.contains("connect"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_internal_targets_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let (rx, addr) = Receiver::start("127.0.0.1:0").await;
    let port = addr.port();
    let cases = [
        (
            "v4",
            format!("http://127.0.0.1:{port}/"),
            "127.0.0.1 is loopback",
        ),
        ("v6", format!("http://[::1]:{port}/"), "::1 is loopback"),
        (
            "mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "is IPv4-mapped",
        ),
        ("name", format!("http://localhost:{port}/"), "is loopback"),
        (
            "decimal",
            format!("http://2130706433:{port}/"),
            "127.0.0.1 is loopback",
        ),
        (
            "hex",
            format!("http://0x7f.1:{port}/"),
            "127.0.0.1 is loopback",
        ),
        (
            "compatible",
            format!("http://[::127.0.0.1]:{port}/"),
            "IPv4-compatible",
        ),
        ("6to4", format!("http://[2002:7f00:1::1]:{port}/"), "6to4"),
        (
            "nat64",
            format!("http://[64:ff9b::7f00:1]:{port}/"),
            "NAT64",
        ),
        (
            "benchmarking",
            "http://198.18.0.1/".to_string(),
            "benchmarking",
        ),
        ("reserved", "http://240.0.0.1/".to_string(), "reserved"),
    ];
    for (name, url, why) in &cases {
        open(&host, name, json!({"url": url, "secret": SECRET})).await;
        match host.deliver(name, request("k", json!({}))).await.unwrap() {
            Delivery::Permanent { reason, .. } => {
                assert!(
                    reason.contains("SSRF guard") && reason.contains(why),
                    "{name}: {reason}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
        let health = host
            .healthcheck(name, "2026-11-20T12:00:00Z".parse().unwrap())
            .await
            .unwrap();
        assert!(!health.healthy, "{name}: {health:?}");
    }
    assert!(rx.seen().is_empty(), "nothing reached the receiver");

    // Allowed explicitly, the same target works.
    open(
        &host,
        "allowed",
        loopback_settings(format!("http://localhost:{port}/")),
    )
    .await;
    assert!(matches!(
        host.deliver("allowed", request("k", json!({})))
            .await
            .unwrap(),
        Delivery::Ok { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    for (settings, what) in [
        (
            json!({"url": "ftp://x/", "secret": SECRET}),
            "http or https",
        ),
        (json!({"url": "http://x/", "secret": "plain"}), "whsec_"),
        (
            json!({"url": "http://x/", "secret": SECRET, "allow_networks": ["x"]}),
            "allow_networks",
        ),
        (
            json!({"url": "http://x/", "secret": SECRET, "colour": 1}),
            "unknown field",
        ),
    ] {
        let settings: toml::Table = serde_json::from_value(settings).unwrap();
        let e = host
            .open_channel(
                "bad",
                &ChannelConfig {
                    plugin: "webhook".into(),
                    event: "sms_sent".into(),
                    consent: Default::default(),
                    settings,
                    instances: 1,
                },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{e}");
        assert!(!e.contains("MfKQ9r8"), "the secret never shows: {e}");
    }
}
