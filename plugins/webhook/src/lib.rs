//! The webhook channel: every follow-up is POSTed as JSON, signed the
//! Standard Webhooks v1 way so any receiver library can verify it.
//!
//! `webhook-id` is the idempotency key, so a receiver de-duplicates retries;
//! `webhook-timestamp` is the host's instant for the attempt. 2xx is success;
//! 408, 425, 429, 5xx, timeouts and connection failures are retryable (with
//! Retry-After honoured); 410 disables the endpoint; redirects are not
//! followed; anything the SSRF guard refuses is permanent.
//!
//! With `pipeline` above 1 (plain `http://` only) a batch's POSTs go back
//! to back on kept-alive connections through this crate's own HTTP/1
//! client ([`pipe`]), `pipeline` requests per connection at a time.

pub mod pipe;
pub mod sign;

use relance_plugin_api::net::{Guard, GuardedResolver, Refused, refusal_in};
use relance_plugin_api::template::{Part, part, part_cow};
use relance_plugin_api::{
    Action, Cancel, DeliverRequest, Health, HealthcheckRequest, Manifest, Outcome, PROTOCOL,
    Plugin, SettingDoc,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sign::Secret;
use std::borrow::Cow;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The channel's `settings`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    /// `whsec_` + base64; filled from the environment by the configuration.
    secret: String,
    #[serde(default = "default_event_type")]
    event_type: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// Networks the SSRF guard lets through (e.g. `["10.2.0.0/16"]` for an
    /// on-premises CRM); nothing internal is reachable otherwise.
    #[serde(default)]
    allow_networks: Vec<String>,
    /// Requests written back to back per connection before their answers
    /// are read (HTTP/1 pipelining); 1, the default, sends one request per
    /// connection at a time through reqwest.
    #[serde(default = "default_pipeline")]
    pipeline: u32,
}

fn default_pipeline() -> u32 {
    1
}

fn default_event_type() -> String {
    "relance.follow_up".into()
}

fn default_timeout() -> u64 {
    10
}

#[derive(Debug)]
pub struct Webhook {
    url: reqwest::Url,
    secret: Secret,
    event_type: String,
    guard: Arc<Guard>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// Set by an HTTP 410: the receiver asked never to be called again.
    gone: Arc<AtomicBool>,
    /// The headers every request carries, built once.
    headers: HeaderMap,
    /// The last body's size, to allocate the next one at once.
    body_size: AtomicUsize,
    /// The pipelining client, when `pipeline` is above 1.
    pipe: Option<Arc<pipe::Pipe>>,
    /// The start of every pipelined request, up to the `webhook-id`
    /// header's value: request line, host, user agent, content type.
    head: Vec<u8>,
    /// The body being written, kept between calls (pipelined sends).
    scratch: Mutex<Vec<u8>>,
}

/// Follow-ups one call may carry. They are POSTed at once, each on a
/// kept-alive connection of the client's pool (hyper has no HTTP/1
/// pipelining, so a batch opens as many connections as it has sends in
/// flight, and later batches reuse them): a batch takes about as long as
/// its slowest send, within the host's call timeout like a single one.
const MAX_BATCH: u32 = 64;

/// Answers longer than this are not read to the end: their connection is
/// closed rather than reused.
const DRAIN_LIMIT: usize = 64 * 1024;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

fn settings_doc() -> Vec<SettingDoc> {
    let doc = SettingDoc::new;
    vec![
        doc("url", true, false, "http(s) endpoint receiving the POSTs"),
        doc("secret", true, true, "`whsec_` + base64 signing secret"),
        doc(
            "event_type",
            false,
            false,
            "`type` of the payload (default relance.follow_up)",
        ),
        doc(
            "timeout_secs",
            false,
            false,
            "per-request timeout (default 10)",
        ),
        doc(
            "allow_networks",
            false,
            false,
            "networks the SSRF guard lets through, e.g. [\"10.2.0.0/16\"]",
        ),
        doc(
            "pipeline",
            false,
            false,
            "requests pipelined per kept-alive connection, 1 to 64 (default 1: off); http:// only",
        ),
    ]
}

impl Plugin for Webhook {
    fn manifest() -> Manifest {
        Manifest {
            name: "webhook".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL,
            description: "signed webhooks (Standard Webhooks v1)".into(),
            actions: vec![
                Action::Message,
                Action::CallTask,
                Action::ScoreUpdate,
                Action::Activity,
            ],
            settings: settings_doc(),
            max_batch: MAX_BATCH,
        }
    }

    fn create(settings: Value) -> Result<Self, String> {
        let s: Settings =
            serde_json::from_value(settings).map_err(|e| format!("webhook settings: {e}"))?;
        let url = reqwest::Url::parse(&s.url).map_err(|e| format!("`url`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err("`url` must be an http or https URL with a host".into());
        }
        let secret = Secret::parse(&s.secret).map_err(|e| format!("`secret`: {e}"))?;
        let guard = Arc::new(Guard::from_allow(&s.allow_networks)?);
        let timeout = Duration::from_secs(s.timeout_secs.max(1));
        let depth = s.pipeline as usize;
        if !(1..=pipe::MAX_DEPTH).contains(&depth) {
            return Err(format!(
                "`pipeline` must be between 1 (off) and {}, not {}",
                pipe::MAX_DEPTH,
                s.pipeline
            ));
        }
        if depth > 1 && url.scheme() != "http" {
            return Err(format!(
                "`pipeline` = {depth} needs an http:// URL: pipelining is not offered over https (TLS); use `pipeline` = 1 with {}",
                url.scheme()
            ));
        }
        if depth > 1 && (!url.username().is_empty() || url.password().is_some()) {
            return Err("`pipeline` above 1 does not send credentials written in the URL".into());
        }
        let pipe = (depth > 1).then(|| {
            Arc::new(pipe::Pipe::new(
                url.host_str().unwrap_or_default().to_owned(),
                url.port_or_known_default().unwrap_or(80),
                guard.clone(),
                timeout,
                depth,
            ))
        });
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\nuser-agent: relance-webhook/{}\r\ncontent-type: application/json\r\nwebhook-id: ",
            &url[url::Position::BeforePath..url::Position::AfterQuery],
            &url[url::Position::BeforeHost..url::Position::AfterPort],
            env!("CARGO_PKG_VERSION"),
        )
        .into_bytes();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .user_agent(concat!("relance-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        Ok(Self {
            url,
            secret,
            event_type: s.event_type,
            guard,
            client,
            runtime,
            gone: Arc::new(AtomicBool::new(false)),
            headers: HeaderMap::from_iter([(
                CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )]),
            body_size: AtomicUsize::new(1024),
            pipe,
            head,
            scratch: Mutex::new(Vec::with_capacity(1024)),
        })
    }

    fn deliver(&self, request: DeliverRequest, cancel: &Cancel) -> Outcome {
        if let Some(pipe) = &self.pipe {
            let mut outcomes = self.deliver_pipelined(pipe, std::slice::from_ref(&request), cancel);
            return outcomes
                .pop()
                .unwrap_or_else(|| Outcome::retryable("no answer for this send"));
        }
        let send = match self.post(&request) {
            Ok(send) => send,
            Err(refused) => return refused,
        };
        let (gone, now) = (self.gone.clone(), request.now);
        let id = request.idempotency_key;
        self.runtime.block_on(async {
            tokio::select! {
                _ = cancel.cancelled() => Outcome::retryable("cancelled by the host"),
                outcome = exchange(send, gone, now, id) => outcome,
            }
        })
    }

    fn deliver_batch(&self, requests: Vec<DeliverRequest>, cancel: &Cancel) -> Vec<Outcome> {
        if let Some(pipe) = &self.pipe {
            return self.deliver_pipelined(pipe, &requests, cancel);
        }
        let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
        let mut sends = tokio::task::JoinSet::new();
        for (i, request) in requests.into_iter().enumerate() {
            match self.post(&request) {
                Ok(send) => {
                    let gone = self.gone.clone();
                    let _entered = self.runtime.enter();
                    sends.spawn(async move {
                        (
                            i,
                            exchange(send, gone, request.now, request.idempotency_key).await,
                        )
                    });
                }
                Err(refused) => outcomes[i] = Some(refused),
            }
        }
        self.join_all(sends, cancel, |(i, outcome)| outcomes[i] = Some(outcome));
        cancelled_if_none(outcomes)
    }

    fn healthcheck(&self, _request: HealthcheckRequest, _cancel: &Cancel) -> Health {
        if self.gone.load(Ordering::SeqCst) {
            return Health {
                healthy: false,
                detail: "disabled: the endpoint answered 410 Gone".into(),
            };
        }
        let verdict = match self.check_literal() {
            Err(e) => Err(e.to_string()),
            Ok(()) => self.check_name(),
        };
        match verdict {
            Ok(()) => Health {
                healthy: true,
                detail: format!("{} resolves to allowed addresses", self.host()),
            },
            Err(detail) => Health {
                healthy: false,
                detail,
            },
        }
    }
}

impl Webhook {
    /// Why nothing may be sent now, if so (an IP literal the guard
    /// refuses, or an endpoint that answered 410).
    fn refusal(&self) -> Option<Outcome> {
        if let Err(refused) = self.check_literal() {
            return Some(Outcome::permanent(refused.to_string()));
        }
        if self.gone.load(Ordering::SeqCst) {
            return Some(Outcome::Permanent {
                reason: "the endpoint answered 410 Gone earlier: disabled".into(),
                disable_endpoint: true,
            });
        }
        None
    }

    /// Sends `requests` through the pipelining client: cut into batches of
    /// `pipeline` requests, each batch on one connection, the batches at
    /// once. One outcome per request, in order.
    fn deliver_pipelined(
        &self,
        pipe: &Arc<pipe::Pipe>,
        requests: &[DeliverRequest],
        cancel: &Cancel,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
        let depth = pipe.depth();
        let mut chunks: Vec<(Vec<usize>, pipe::Batch)> = Vec::new();
        let mut open = (Vec::with_capacity(depth), pipe.batch());
        let mut body =
            std::mem::take(&mut *self.scratch.lock().unwrap_or_else(PoisonError::into_inner));
        for (i, request) in requests.iter().enumerate() {
            if let Some(refused) = self.refusal() {
                outcomes[i] = Some(refused);
                continue;
            }
            match self.write_request(request, &mut body, &mut open.1) {
                Ok(()) => {
                    open.1.end_request();
                    open.0.push(i);
                    if open.0.len() >= depth {
                        let next = (Vec::with_capacity(depth), pipe.batch());
                        chunks.push(std::mem::replace(&mut open, next));
                    }
                }
                Err(refused) => {
                    open.1.abandon_request();
                    outcomes[i] = Some(refused);
                }
            }
        }
        *self.scratch.lock().unwrap_or_else(PoisonError::into_inner) = body;
        if open.0.is_empty() {
            pipe.recycle(open.1);
        } else {
            chunks.push(open);
        }
        let mut sends = tokio::task::JoinSet::new();
        let mut of_chunk = Vec::with_capacity(chunks.len());
        for (k, (indices, batch)) in chunks.into_iter().enumerate() {
            of_chunk.push(indices);
            let pipe = pipe.clone();
            let _entered = self.runtime.enter();
            sends.spawn(async move { (k, pipe.send(batch).await) });
        }
        self.join_all(sends, cancel, |(k, (batch, results))| {
            for (&i, result) in of_chunk[k].iter().zip(results) {
                outcomes[i] = Some(self.outcome_of(result, &requests[i]));
            }
            pipe.recycle(batch);
        });
        cancelled_if_none(outcomes)
    }

    /// Runs the sends to their ends, handing each result to `done`, or
    /// aborts those left when the host cancels the call.
    fn join_all<T: 'static>(
        &self,
        mut sends: tokio::task::JoinSet<T>,
        cancel: &Cancel,
        mut done: impl FnMut(T),
    ) {
        self.runtime.block_on(async {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        sends.abort_all();
                        break;
                    }
                    next = sends.join_next() => match next {
                        Some(Ok(result)) => done(result),
                        Some(Err(_)) => {}
                        None => break,
                    },
                }
            }
        });
    }

    /// Appends the signed POST of `request` to `batch`: the fixed head,
    /// the three Standard Webhooks headers, the body. `body` is scratch
    /// space, reused from send to send.
    fn write_request(
        &self,
        request: &DeliverRequest,
        body: &mut Vec<u8>,
        batch: &mut pipe::Batch,
    ) -> Result<(), Outcome> {
        body.clear();
        if let Err(e) = write_payload(&self.event_type, request, body) {
            return Err(Outcome::permanent(format!("payload: {e}")));
        }
        // What reqwest's `HeaderValue::from_str` takes: visible ASCII and tab.
        let id = request.idempotency_key.as_bytes();
        if !id.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(Outcome::permanent(
                "header webhook-id: the idempotency key is not visible ASCII",
            ));
        }
        let mut stamp = [0u8; 24];
        let stamp_len = {
            let mut cursor = &mut stamp[..];
            // An i64 takes at most 20 bytes.
            let _ = write!(cursor, "{}", request.now.timestamp());
            24 - cursor.len()
        };
        let stamp = &stamp[..stamp_len];
        let out = &mut batch.bytes;
        out.extend_from_slice(&self.head);
        out.extend_from_slice(id);
        out.extend_from_slice(b"\r\nwebhook-timestamp: ");
        out.extend_from_slice(stamp);
        out.extend_from_slice(b"\r\nwebhook-signature: ");
        // Signed once: a re-send on another connection sends these bytes.
        self.secret.sign_into(id, stamp, body, out);
        let _ = write!(out, "\r\ncontent-length: {}\r\n\r\n", body.len());
        out.extend_from_slice(body);
        Ok(())
    }

    /// The outcome of a pipelined request's answer (or failure).
    fn outcome_of(
        &self,
        result: Result<pipe::Answer, pipe::Failure>,
        request: &DeliverRequest,
    ) -> Outcome {
        match result {
            Ok(answer) => {
                if answer.status == 410 {
                    self.gone.store(true, Ordering::SeqCst);
                }
                classify_status(
                    answer.status,
                    answer.retry_after.as_deref(),
                    answer.location.as_deref(),
                    request.now,
                    &request.idempotency_key,
                )
            }
            Err(pipe::Failure::Refused(why)) => Outcome::permanent(why),
            Err(pipe::Failure::Transient(why)) => Outcome::retryable(why),
        }
    }

    /// The signed POST of `request`, ready to send, or why it cannot go.
    fn post(
        &self,
        request: &DeliverRequest,
    ) -> Result<impl Future<Output = reqwest::Result<reqwest::Response>> + Send + use<>, Outcome>
    {
        if let Some(refused) = self.refusal() {
            return Err(refused);
        }
        // Sized like the previous body: one allocation, no copy.
        let mut body = Vec::with_capacity(self.body_size.load(Ordering::Relaxed));
        if let Err(e) = write_payload(&self.event_type, request, &mut body) {
            return Err(Outcome::permanent(format!("payload: {e}")));
        }
        self.body_size.store(body.len() + 64, Ordering::Relaxed);
        let id = &request.idempotency_key;
        let timestamp = request.now.timestamp().to_string();
        // Signed once: a retry of the host's call writes a new attempt.
        let signature = self.secret.sign_at(id, &timestamp, &body);
        let mut headers = self.headers.clone();
        for (name, value) in [
            (WEBHOOK_ID, HeaderValue::from_str(id)),
            (WEBHOOK_TIMESTAMP, HeaderValue::try_from(timestamp)),
            (WEBHOOK_SIGNATURE, HeaderValue::try_from(signature)),
        ] {
            match value {
                Ok(v) => headers.insert(name, v),
                Err(e) => return Err(Outcome::permanent(format!("header {name}: {e}"))),
            };
        }
        // reqwest arms its timers when the request is built: inside the runtime.
        let _entered = self.runtime.enter();
        Ok(self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send())
    }

    fn host(&self) -> String {
        self.url.host_str().unwrap_or_default().to_owned()
    }

    /// IP literals never reach the resolver, so they are checked here.
    fn check_literal(&self) -> Result<(), Refused> {
        let ip = match self.url.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
            _ => return Ok(()),
        };
        self.guard.check(ip)
    }

    fn check_name(&self) -> Result<(), String> {
        let Some(url::Host::Domain(name)) = self.url.host() else {
            return Ok(());
        };
        let name = name.to_owned();
        let guard = self.guard.clone();
        self.runtime.block_on(async move {
            guard
                .resolve(&name, 0)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

/// The outcomes of a batch; a send without one was cut short by the host.
fn cancelled_if_none(outcomes: Vec<Option<Outcome>>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::retryable("cancelled by the host")))
        .collect()
}

/// The JSON body of a follow-up, as POSTed (the spool channel writes the
/// same body, so a dry run shows exactly what a receiver would get).
pub fn payload(event_type: &str, r: &DeliverRequest) -> Value {
    json!({
        "type": event_type,
        "timestamp": r.now,
        "data": {
            "idempotency_key": r.idempotency_key,
            "channel": r.channel,
            "action": r.action,
            "attempt": r.attempt,
            "contact": r.contact,
            "score": r.score,
            "message": {
                "template": r.message.template,
                "subject": part(r, Part::Subject),
                "text": part(r, Part::Text),
                "html": part(r, Part::Html),
            },
            "vars": r.vars,
        }
    })
}

/// [`payload`]'s bytes, written straight from the request (no JSON tree in
/// between, parts already rendered borrowed): the keys in the same sorted
/// order, so a body reads the same whichever wrote it.
pub fn write_payload(
    event_type: &str,
    r: &DeliverRequest,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let m = &r.message;
    let body = Body {
        data: Data {
            action: &r.action,
            attempt: r.attempt,
            channel: &r.channel,
            contact: ContactBody {
                attributes: &r.contact.attributes,
                company: r.contact.company.as_ref().map(|c| CompanyBody {
                    attributes: &c.attributes,
                    id: &c.id,
                    name: &c.name,
                }),
                email: &r.contact.email,
                first_name: &r.contact.first_name,
                id: &r.contact.id,
                last_name: &r.contact.last_name,
                owner: &r.contact.owner,
                phone: &r.contact.phone,
                status: &r.contact.status,
            },
            idempotency_key: &r.idempotency_key,
            message: MessageBody {
                html: part_cow(r, Part::Html),
                subject: part_cow(r, Part::Subject),
                template: &m.template,
                text: part_cow(r, Part::Text),
            },
            score: r.score.as_ref().map(|s| ScoreBody {
                band: &s.band,
                score: s.score,
            }),
            vars: &r.vars,
        },
        timestamp: &r.now,
        kind: event_type,
    };
    serde_json::to_writer(out, &body)
}

// The body's shape, fields in sorted order (as `json!` writes them).
#[derive(Serialize)]
struct Body<'a> {
    data: Data<'a>,
    timestamp: &'a chrono::DateTime<chrono::Utc>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Data<'a> {
    action: &'a Action,
    attempt: u32,
    channel: &'a str,
    contact: ContactBody<'a>,
    idempotency_key: &'a str,
    message: MessageBody<'a>,
    score: Option<ScoreBody<'a>>,
    vars: &'a serde_json::Map<String, Value>,
}

#[derive(Serialize)]
struct ContactBody<'a> {
    attributes: &'a serde_json::Map<String, Value>,
    company: Option<CompanyBody<'a>>,
    email: &'a Option<String>,
    first_name: &'a Option<String>,
    id: &'a str,
    last_name: &'a Option<String>,
    owner: &'a Option<String>,
    phone: &'a Option<String>,
    status: &'a Option<String>,
}

#[derive(Serialize)]
struct CompanyBody<'a> {
    attributes: &'a serde_json::Map<String, Value>,
    id: &'a str,
    name: &'a Option<String>,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    html: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
    template: &'a Option<String>,
    text: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct ScoreBody<'a> {
    band: &'a str,
    score: f64,
}

/// Sends a POST and maps its answer to an outcome. The answer is read to
/// the end, so that its connection goes back to the pool (keep-alive).
async fn exchange(
    send: impl Future<Output = reqwest::Result<reqwest::Response>>,
    gone: Arc<AtomicBool>,
    now: chrono::DateTime<chrono::Utc>,
    id: String,
) -> Outcome {
    match send.await {
        Ok(mut resp) => {
            if resp.status().as_u16() == 410 {
                gone.store(true, Ordering::SeqCst);
            }
            let outcome = classify(&resp, now, id);
            let mut left = DRAIN_LIMIT;
            while let Ok(Some(chunk)) = resp.chunk().await {
                left = left.saturating_sub(chunk.len());
                if left == 0 {
                    break;
                }
            }
            outcome
        }
        Err(e) => from_error(&e),
    }
}

/// Maps an HTTP answer to an outcome.
fn classify(resp: &reqwest::Response, now: chrono::DateTime<chrono::Utc>, id: String) -> Outcome {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    classify_status(
        resp.status().as_u16(),
        header("retry-after"),
        header("location"),
        now,
        &id,
    )
}

/// Maps an HTTP status (with its `Retry-After` and `Location`) to an
/// outcome; both clients answer alike.
fn classify_status(
    code: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    id: &str,
) -> Outcome {
    match code {
        200..=299 => Outcome::Ok {
            remote_id: Some(id.to_owned()),
            data: Some(json!({ "status": code })),
        },
        410 => Outcome::Permanent {
            reason: "HTTP 410 Gone: the endpoint is disabled".into(),
            disable_endpoint: true,
        },
        408 | 425 | 429 | 500..=599 => Outcome::Retryable {
            // Seconds or an HTTP date, relative to the host's instant.
            retry_after_secs: retry_after
                .and_then(|v| relance_plugin_api::parse_retry_after(v, now)),
            reason: format!("HTTP {code}"),
        },
        300..=399 => {
            let to = location.unwrap_or("?");
            Outcome::permanent(format!("HTTP {code}: redirect to {to} not followed"))
        }
        _ => Outcome::permanent(format!("HTTP {code}")),
    }
}

fn from_error(e: &reqwest::Error) -> Outcome {
    if let Some(refused) = refusal_in(e) {
        return Outcome::permanent(refused.to_string());
    }
    if e.is_builder() {
        return Outcome::permanent(format!("bad request: {e}"));
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    Outcome::retryable(format!("{kind}: {}", chain(e)))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

relance_plugin_api::export_plugin!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use relance_plugin_api::{Company, Contact, Message, ScoreInfo};

    fn request(rendered: bool) -> DeliverRequest {
        let mut attributes = serde_json::Map::new();
        attributes.insert("title".into(), json!("DRH <RH> \"quoted\""));
        attributes.insert("headcount".into(), json!(120));
        DeliverRequest {
            idempotency_key: "k-1".into(),
            now: "2026-03-02T12:00:00.5Z".parse().unwrap_or_default(),
            attempt: 2,
            channel: "hook".into(),
            action: Action::CallTask,
            contact: Contact {
                id: "martino".into(),
                email: Some("m@example.com".into()),
                first_name: Some("Martino".into()),
                company: Some(Company {
                    id: "co1".into(),
                    name: None,
                    attributes: attributes.clone(),
                }),
                attributes,
                ..Contact::default()
            },
            message: Message {
                template: Some("news".into()),
                rendered,
                subject: Some("Hello {{first_name}}".into()),
                html: Some("<p>{{first_name}} & co</p>".into()),
                text: None,
                language: None,
            },
            score: Some(ScoreInfo {
                score: 140.5,
                band: "warm".into(),
            }),
            vars: [("reason".to_string(), json!("pricing"))]
                .into_iter()
                .collect(),
        }
    }

    /// The body written straight is byte for byte the JSON tree's.
    #[test]
    fn the_written_body_is_the_payload() {
        for rendered in [false, true] {
            let mut r = request(rendered);
            for _ in 0..2 {
                let mut out = Vec::new();
                write_payload("relance.follow_up", &r, &mut out).expect("written");
                let tree = serde_json::to_vec(&payload("relance.follow_up", &r)).expect("json");
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&tree)
                );
                r.score = None;
                r.contact.company = None;
            }
        }
    }
}
