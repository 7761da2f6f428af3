//! The demo's feeder: posts a stream of events to the running daemon's
//! API, as a website, a mail tracker and a phone system would, one every
//! `pace`. First the written stream (stream.jsonl: a pricing page visit,
//! opens, clicks, a white paper, calls with their result codes, an inbound
//! call, an unsubscribe, a company's business signal, a broadcast), then
//! an endless generated one over every contact.

use super::watch::{Shared, clock_time};
use anyhow::{Context, bail};
use relance::core::clock::Clock;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the API may take to come up.
const READY_WITHIN: Duration = Duration::from_secs(120);
/// A request that takes longer failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Feeder {
    pub address: String,
    pub token: String,
    pub stream: Vec<Value>,
    pub contacts: Vec<String>,
    pub members: HashMap<String, Vec<String>>,
    pub pace: Duration,
    pub duration: Option<Duration>,
    pub clock: Clock,
    pub shared: Arc<Shared>,
    pub stop: Arc<AtomicBool>,
}

impl Feeder {
    pub fn run(self) -> anyhow::Result<()> {
        if !self.wait_ready() {
            return Ok(());
        }
        let started = Instant::now();
        let mut generated = Generator(0x5EED_2026);
        let mut n = 0u64;
        while !self.stopping() {
            if self.duration.is_some_and(|d| started.elapsed() >= d) {
                interrupt();
                return Ok(());
            }
            let item = match self.stream.get(n as usize) {
                Some(v) => v.clone(),
                None => generated.next(&self.contacts),
            };
            n += 1;
            if let Err(e) = self.post_item(item, n) {
                if self.stopping() {
                    return Ok(());
                }
                tracing::warn!(error = %format!("{e:#}"), "the demo feeder could not post");
            }
            self.sleep(self.pace);
        }
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps in short steps, so that a stop is seen at once.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn wait_ready(&self) -> bool {
        let started = Instant::now();
        while !self.stopping() {
            if matches!(self.request("GET", "/readyz", None), Ok((200, _))) {
                return true;
            }
            if started.elapsed() > READY_WITHIN {
                tracing::error!(address = %self.address, "the API did not come up; the demo feeds nothing");
                return false;
            }
            self.sleep(Duration::from_millis(100));
        }
        false
    }

    /// One line of the stream: an event (stamped now), or a broadcast.
    fn post_item(&self, mut item: Value, n: u64) -> anyhow::Result<()> {
        let note = item
            .as_object_mut()
            .and_then(|o| o.remove("note"))
            .and_then(|v| v.as_str().map(String::from));
        let now = self.clock.now();
        if let Some(mut b) = item.get("broadcast").cloned() {
            b["start"] = now.to_rfc3339().into();
            b["end"] = (now + chrono::Duration::days(7)).to_rfc3339().into();
            let (status, body) = self.request("POST", "/v1/broadcasts", Some(&b))?;
            if !(200..300).contains(&status) {
                bail!("POST /v1/broadcasts: {status} {body}");
            }
            say(
                &self.clock,
                "broadcast",
                b["id"].as_str().unwrap_or_default(),
                &format!(
                    "{} → {} ({})",
                    b["name"].as_str().unwrap_or_default(),
                    b["channel"].as_str().unwrap_or_default(),
                    note.as_deref().unwrap_or("to a segment")
                ),
            );
            return Ok(());
        }
        item["at"] = now.to_rfc3339().into();
        item["id"] = format!("live-{n:05}").into();
        let (status, body) = self.request("POST", "/v1/events", Some(&json!([item])))?;
        if status != 200 {
            bail!("POST /v1/events: {status} {body}");
        }
        self.shared.accepted.fetch_add(1, Ordering::Relaxed);
        let who = item["contact"]
            .as_str()
            .or(item["company"].as_str())
            .unwrap_or_default();
        if let Some(c) = item["contact"].as_str() {
            self.shared.touched(c);
        }
        if let Some(company) = item["company"].as_str() {
            for c in self.members.get(company).into_iter().flatten() {
                self.shared.touched(c);
            }
        }
        let mut what = item["type"].as_str().unwrap_or_default().to_string();
        if let Some(props) = item["props"].as_object() {
            for v in props.values() {
                what.push(' ');
                what.push_str(&v.as_str().map_or(v.to_string(), String::from));
            }
        }
        if let Some(note) = note {
            what.push_str(&format!("  ({note})"));
        }
        say(&self.clock, "event", who, &what);
        Ok(())
    }

    /// A minimal HTTP/1.1 exchange over loopback: the demo talks to the
    /// API the way any other program would.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, String)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect(&self.address)
            .with_context(|| format!("connecting to {}", self.address))?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            self.token,
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{method} {path}: no HTTP status in the answer"))?;
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .trim()
            .to_string();
        Ok((status, body))
    }
}

/// Stops the demo as Ctrl-C does: the daemon's own SIGINT handling ends
/// it, with the same grace for sends in flight.
#[allow(unsafe_code)]
fn interrupt() {
    // SAFETY: kill(2) on our own process id with a valid signal number
    // touches no memory; the daemon has installed its SIGINT handler
    // before the API answered.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGINT);
    }
}

/// A line of the demo's output: time, what, who, details.
pub fn say(clock: &Clock, what: &str, who: &str, details: &str) {
    println!("{}  {what:<9} {who:<16} {details}", clock_time(clock));
}

/// "2s", "500ms".
pub fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The endless part of the stream: deterministic, so that two runs show
/// the same story.
struct Generator(u64);

impl Generator {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }

    fn next(&mut self, contacts: &[String]) -> Value {
        const PAGES: [&str; 6] = [
            "https://payroll.example/pricing",
            "https://payroll.example/demo",
            "https://payroll.example/blog/paie",
            "https://payroll.example/produit",
            "https://payroll.example/blog/expatriates",
            "https://payroll.example/careers",
        ];
        const OUTCOMES: [&str; 6] = ["NRP", "OCC", "RAPP", "PISTE", "REFUS", "RDV"];
        let contact = contacts
            .get(self.below(contacts.len()))
            .cloned()
            .unwrap_or_default();
        match self.below(10) {
            0..=2 => json!({"contact": contact, "type": "page_visit",
                            "props": {"url": PAGES[self.below(PAGES.len())]}}),
            3..=4 => json!({"contact": contact, "type": "email_open", "channel": "email"}),
            5 => json!({"contact": contact, "type": "email_click", "channel": "email",
                        "props": {"url": "https://payroll.example/paie-internationale"}}),
            6 => json!({"contact": contact, "type": "download",
                        "props": {"asset": "livre-blanc-paie"}}),
            7 => json!({"contact": contact, "type": "form_submit"}),
            _ => json!({"contact": contact, "type": "call", "channel": "phone",
                        "props": {"outcome": OUTCOMES[self.below(OUTCOMES.len())]}}),
        }
    }
}
