//! The pipelining client (`pipeline` above 1) against real HTTP servers on
//! loopback, written here so that they can misbehave on purpose: answers
//! in order, connections closed in the middle of a batch, malformed and
//! oversized answers, and the settings it refuses.

#![allow(clippy::unwrap_used)]

use relance_plugin_api::{Cancel, Contact, DeliverRequest, Outcome, Plugin};
use relance_plugin_webhook::Webhook;
use relance_plugin_webhook::sign::Secret;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the server read it: its three Standard Webhooks headers
/// and its body.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// What the server answers to the `n`th request of a connection (from 0):
/// raw bytes, or `None` to close the connection without answering.
type Script = Arc<dyn Fn(usize, &Seen) -> Option<Vec<u8>> + Send + Sync>;

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
    _rt: tokio::runtime::Runtime,
}

fn server(script: Script) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (s, c) = (seen.clone(), connections.clone());
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *c.lock().unwrap() += 1;
            tokio::spawn(serve(stream, script.clone(), s.clone()));
        }
    });
    Server {
        port,
        seen,
        connections,
        _rt: rt,
    }
}

/// Reads requests one after the other from a connection (pipelined or
/// not) and answers each as the script says.
async fn serve(mut stream: TcpStream, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let (head_len, request) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap();
                let seen = Seen {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body: Vec::new(),
                };
                break (len, (seen, length));
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let (mut request, length) = request;
        while buf.len() < head_len + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        request.body = buf[head_len..head_len + length].to_vec();
        buf.drain(..head_len + length);
        seen.lock().unwrap().push(request.clone());
        match script(n, &request) {
            Some(answer) => {
                if stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
            None => return,
        }
        n += 1;
    }
}

fn ok() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
}

fn webhook(port: u16, pipeline: u32) -> Webhook {
    Webhook::create(json!({
        "url": format!("http://127.0.0.1:{port}/hook"),
        "secret": SECRET,
        "allow_networks": ["127.0.0.0/8"],
        "timeout_secs": 10,
        "pipeline": pipeline,
    }))
    .unwrap()
}

fn requests(n: usize) -> Vec<DeliverRequest> {
    (0..n)
        .map(|i| DeliverRequest {
            idempotency_key: format!("k-{i:03}"),
            now: "2026-03-02T12:00:00Z".parse().unwrap(),
            attempt: 1,
            channel: "hook".into(),
            action: Default::default(),
            contact: Contact {
                id: format!("c{i}"),
                ..Contact::default()
            },
            message: Default::default(),
            score: None,
            vars: Default::default(),
        })
        .collect()
}

fn is_ok(o: &Outcome, key: &str) -> bool {
    matches!(o, Outcome::Ok { remote_id: Some(id), .. } if id == key)
}

/// Every request the server saw is signed with the channel's secret.
fn assert_signed(seen: &[Seen]) {
    let secret = Secret::parse(SECRET).unwrap();
    for s in seen {
        assert_eq!(
            secret.sign_at(&s.id, &s.timestamp, &s.body),
            s.signature,
            "{}",
            s.id
        );
    }
}

#[test]
fn pipelined_answers_go_to_their_requests_in_order() {
    // Every third key is refused with 503 and a Retry-After, every fifth
    // is a 404: each outcome must be its own request's.
    let srv = server(Arc::new(|_, seen: &Seen| {
        let i: usize = seen.id[2..].parse().unwrap();
        Some(if i.is_multiple_of(3) {
            b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ncontent-length: 4\r\n\r\nbusy".to_vec()
        } else if i.is_multiple_of(5) {
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n"
                .to_vec()
        } else {
            ok()
        })
    }));
    let hook = webhook(srv.port, 8);
    for round in 0..3 {
        let reqs = requests(40);
        let outcomes = hook.deliver_batch(reqs.clone(), &Cancel::new());
        assert_eq!(outcomes.len(), 40);
        for (i, (o, r)) in outcomes.iter().zip(&reqs).enumerate() {
            if i.is_multiple_of(3) {
                assert_eq!(
                    o,
                    &Outcome::Retryable {
                        retry_after_secs: Some(7),
                        reason: "HTTP 503".into()
                    },
                    "{i}"
                );
            } else if i.is_multiple_of(5) {
                assert!(
                    matches!(o, Outcome::Permanent { reason, .. } if reason == "HTTP 404"),
                    "{i}: {o:?}"
                );
            } else {
                assert!(is_ok(o, &r.idempotency_key), "{i}: {o:?}");
            }
        }
        // Each request sent once, in the batch's order per connection.
        let seen = srv.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 40 * (round + 1));
        assert_signed(&seen);
        let mut ids: Vec<&str> = seen[40 * round..].iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            reqs.iter()
                .map(|r| r.idempotency_key.as_str())
                .collect::<Vec<_>>()
        );
    }
    // Five batches of eight per round, on kept-alive connections.
    assert!(
        *srv.connections.lock().unwrap() <= 5,
        "{}",
        srv.connections.lock().unwrap()
    );
}

#[test]
fn requests_left_unanswered_on_a_closed_connection_are_sent_again_under_the_same_key() {
    // Each connection answers three requests, then closes with the rest
    // of the batch read and unanswered.
    let srv = server(Arc::new(|n, _: &Seen| (n < 3).then(ok)));
    let hook = webhook(srv.port, 16);
    let reqs = requests(32);
    let outcomes = hook.deliver_batch(reqs.clone(), &Cancel::new());
    for (o, r) in outcomes.iter().zip(&reqs) {
        assert!(is_ok(o, &r.idempotency_key), "{}: {o:?}", r.idempotency_key);
    }
    let seen = srv.seen.lock().unwrap().clone();
    assert_signed(&seen);
    // None lost; a re-send carries the very same bytes (key, timestamp,
    // signature, body).
    let mut by_key: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        by_key.entry(&s.id).or_default().push(s);
    }
    assert_eq!(by_key.len(), 32);
    for (key, copies) in &by_key {
        assert!(
            copies.iter().all(|c| *c == copies[0]),
            "{key} re-sent differently"
        );
    }
    assert!(
        seen.len() > 32,
        "the server closed connections: some were re-sent"
    );
}

#[test]
fn a_peer_that_closes_every_connection_at_once_fails_the_batch_without_looping() {
    let srv = server(Arc::new(|_, _: &Seen| None));
    let hook = webhook(srv.port, 8);
    let outcomes = hook.deliver_batch(requests(8), &Cancel::new());
    for o in &outcomes {
        assert!(
            matches!(o, Outcome::Retryable { reason, .. } if reason.contains("closed before answering")),
            "{o:?}"
        );
    }
    assert!(*srv.connections.lock().unwrap() <= 3);
}

#[test]
fn malformed_or_oversized_answers_give_clear_errors_not_panics() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n".to_vec(),
            "bad content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(),
            "two different content-lengths",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n".to_vec(),
            "both content-length and transfer-encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "bad chunk size",
        ),
        (
            b"\x00\xff\x13garbage\r\n\r\n".to_vec(),
            "unreadable HTTP answer",
        ),
        (
            format!(
                "HTTP/1.1 200 OK\r\nx-pad: {}\r\ncontent-length: 0\r\n\r\n",
                "a".repeat(40_000)
            )
            .into_bytes(),
            "over 16384 bytes",
        ),
        (
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{}",
                "1".repeat(5000)
            )
            .into_bytes(),
            "line over 1024 bytes",
        ),
    ];
    for (answer, why) in cases {
        let answer = Arc::new(answer);
        let srv = server(Arc::new(move |_, _: &Seen| Some(answer.to_vec())));
        let hook = webhook(srv.port, 4);
        let outcomes = hook.deliver_batch(requests(4), &Cancel::new());
        assert_eq!(outcomes.len(), 4);
        assert!(
            matches!(&outcomes[0], Outcome::Retryable { reason, .. } if reason.contains(why)),
            "{why}: {:?}",
            outcomes[0]
        );
        for o in &outcomes[1..] {
            assert!(matches!(o, Outcome::Retryable { .. }), "{why}: {o:?}");
        }
    }
}

#[test]
fn an_oversized_body_keeps_its_status_and_the_rest_goes_on_another_connection() {
    // The first answer of each connection announces 1 MB and sends it:
    // its status stands, its connection is dropped, and the requests
    // after it are answered on new connections.
    let big = Arc::new(format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n{}",
        "x".repeat(1_000_000)
    ));
    let srv = server(Arc::new(move |n, _: &Seen| {
        Some(if n == 0 {
            big.as_bytes().to_vec()
        } else {
            ok()
        })
    }));
    let hook = webhook(srv.port, 4);
    let reqs = requests(4);
    let outcomes = hook.deliver_batch(reqs.clone(), &Cancel::new());
    for (o, r) in outcomes.iter().zip(&reqs) {
        assert!(is_ok(o, &r.idempotency_key), "{o:?}");
    }
    let mut ids: Vec<String> = srv
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.id.clone())
        .collect();
    ids.dedup();
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        4
    );
}

#[test]
fn a_single_delivery_goes_through_the_pipelining_client_too() {
    let srv = server(Arc::new(|_, _: &Seen| Some(ok())));
    let hook = webhook(srv.port, 2);
    let r = requests(1).remove(0);
    let o = hook.deliver(r.clone(), &Cancel::new());
    assert!(is_ok(&o, &r.idempotency_key), "{o:?}");
    assert_signed(&srv.seen.lock().unwrap());
}

#[test]
fn the_ssrf_guard_still_refuses_loopback_without_an_allowance() {
    let srv = server(Arc::new(|_, _: &Seen| Some(ok())));
    let hook = Webhook::create(json!({
        "url": format!("http://127.0.0.1:{}/hook", srv.port),
        "secret": SECRET,
        "pipeline": 8,
    }))
    .unwrap();
    let outcomes = hook.deliver_batch(requests(3), &Cancel::new());
    for o in outcomes {
        assert!(
            matches!(&o, Outcome::Permanent { reason, .. } if reason.contains("SSRF guard")),
            "{o:?}"
        );
    }
    assert!(srv.seen.lock().unwrap().is_empty());
}

#[test]
fn pipelining_is_refused_over_https_and_out_of_range() {
    let create = |url: &str, pipeline: u32| {
        Webhook::create(json!({ "url": url, "secret": SECRET, "pipeline": pipeline }))
            .err()
            .unwrap_or_default()
    };
    let e = create("https://hooks.example.com/in", 8);
    assert!(e.contains("`pipeline` = 8 needs an http:// URL"), "{e}");
    assert!(
        Webhook::create(json!({
            "url": "https://hooks.example.com/in", "secret": SECRET, "pipeline": 1
        }))
        .is_ok()
    );
    for bad in [0, 65] {
        let e = create("http://hooks.example.com/in", bad);
        assert!(
            e.contains("`pipeline` must be between 1 (off) and 64"),
            "{e}"
        );
    }
}
