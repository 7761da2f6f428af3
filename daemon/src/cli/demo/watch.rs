//! The demo's watcher: reads the store beside the daemon, prints each
//! follow-up that answers the live stream (planned, deferred, blocked,
//! sent, with how long after its event) and, every few seconds, one
//! summary line.

use super::feed::say;
use crate::cli::output;
use relance::core::clock::Clock;
use relance::core::model::FollowUpKind;
use relance::domain::outbox::{Row, State};
use relance::ports::store::{StoreError, StoreHandle};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the store is read.
const POLL: Duration = Duration::from_millis(500);

/// What the feeder tells the watcher.
#[derive(Debug, Default)]
pub struct Shared {
    /// Events the API accepted.
    pub accepted: AtomicU64,
    /// Contacts the stream touched, with when.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    pub fn touched(&self, contact: &str) {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(contact.to_string(), Instant::now());
    }

    fn touched_at(&self, contact: &str) -> Option<Instant> {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(contact)
            .copied()
    }
}

/// HH:MM:SS of the clock, UTC.
pub fn clock_time(clock: &Clock) -> String {
    clock.now().format("%H:%M:%S").to_string()
}

#[derive(Debug)]
pub struct Watcher {
    store: StoreHandle,
    clock: Clock,
    shared: std::sync::Arc<Shared>,
    every: Duration,
    /// Every contact, and when the demo started: "rescored" counts the
    /// contacts scored since.
    contacts: Vec<String>,
    since: relance::core::model::Timestamp,
    seen: HashMap<i64, State>,
}

impl Watcher {
    pub fn new(
        store: StoreHandle,
        clock: Clock,
        shared: std::sync::Arc<Shared>,
        contacts: Vec<String>,
        every: Duration,
    ) -> Result<Self, StoreError> {
        let since = clock.now();
        Ok(Self {
            store,
            clock,
            shared,
            every,
            contacts,
            since,
            seen: HashMap::new(),
        })
    }

    pub fn run(mut self, stop: &AtomicBool) {
        let mut last_summary = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            match self.look() {
                Ok(rows) => {
                    if stopping || last_summary.elapsed() >= self.every {
                        last_summary = Instant::now();
                        self.summary(&rows);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the demo cannot read the store"),
            }
            if stopping {
                return;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Prints what changed since the last look; returns every row.
    fn look(&mut self) -> Result<Vec<Row>, StoreError> {
        let rows = self.store.outbox_rows(None, u32::MAX)?;
        let mut reasons: Option<HashMap<(String, String), serde_json::Value>> = None;
        for row in &rows {
            // A claim lasts a moment: the row is shown when it settles.
            if row.state == State::Claimed {
                continue;
            }
            let before = self.seen.insert(row.seq, row.state);
            if before == Some(row.state) {
                continue;
            }
            let touched = self.shared.touched_at(&row.contact);
            if touched.is_none() && row.kind != FollowUpKind::Opportunistic {
                continue;
            }
            let mut details = format!("{} → {}", row.followup, row.channel);
            // The delay shows when the row is first seen and when it is sent,
            // whichever the watcher saw first.
            if (before.is_none() || row.state == State::Sent)
                && row.kind == FollowUpKind::Opportunistic
                && let Some(t) = touched
            {
                details.push_str(&format!(
                    ", {:.1} s after the event",
                    t.elapsed().as_secs_f64()
                ));
            }
            match row.state {
                State::Deferred => {
                    let logged = match &mut reasons {
                        Some(r) => r,
                        None => reasons.insert(self.latest_reasons()?),
                    };
                    match logged.get(&(row.contact.clone(), row.followup.clone())) {
                        Some(r) => details.push_str(&format!(": {}", output::reasons(r))),
                        None => {
                            details.push_str(&format!(", until {}", when(&self.clock, row.due_at)))
                        }
                    }
                }
                State::Blocked | State::Dropped | State::Dead | State::Retrying
                    if row.last_error.is_some() =>
                {
                    details.push_str(&format!(": {}", output::error(&row.last_error)));
                }
                _ => {}
            }
            say(&self.clock, row.state.as_str(), &row.contact, &details);
        }
        Ok(rows)
    }

    /// The latest logged decision of each (contact, follow-up).
    fn latest_reasons(&self) -> Result<HashMap<(String, String), serde_json::Value>, StoreError> {
        let mut out = HashMap::new();
        for d in self.store.decisions(None, 100_000)? {
            out.entry((d.contact, d.followup)).or_insert(d.reasons);
        }
        Ok(out)
    }

    /// events in · rescored · planned · sent per channel · deferred and
    /// blocked by reason.
    fn summary(&self, rows: &[Row]) {
        let rescored = self
            .contacts
            .iter()
            .filter(|c| {
                self.store
                    .stored_score(c)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.scored_at > self.since)
            })
            .count();
        let mut sent: BTreeMap<&str, u64> = BTreeMap::new();
        let mut blocked: BTreeMap<String, u64> = BTreeMap::new();
        let mut deferred: BTreeMap<String, u64> = BTreeMap::new();
        let logged = self.latest_reasons().unwrap_or_default();
        let rule = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.get(0))
                .and_then(|r| r.get("rule"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("other")
                .to_string()
        };
        let mut pending = 0;
        for r in rows {
            match r.state {
                State::Sent => *sent.entry(r.channel.as_str()).or_default() += 1,
                State::Blocked => {
                    let reasons = r
                        .last_error
                        .as_deref()
                        .and_then(|e| serde_json::from_str(e).ok());
                    *blocked.entry(rule(reasons.as_ref())).or_default() += 1;
                }
                State::Deferred => {
                    let key = (r.contact.clone(), r.followup.clone());
                    *deferred.entry(rule(logged.get(&key))).or_default() += 1;
                }
                State::Planned | State::Claimed | State::Retrying => pending += 1,
                _ => {}
            }
        }
        let listed = |m: &BTreeMap<String, u64>| {
            let total: u64 = m.values().sum();
            if total == 0 {
                return "0".to_string();
            }
            let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("{total} ({})", parts.join(", "))
        };
        let sent_text = if sent.is_empty() {
            "0".to_string()
        } else {
            sent.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{}  ── events in {} · rescored {} · planned {} · sent {} · pending {} · deferred {} · blocked {}",
            clock_time(&self.clock),
            self.shared.accepted.load(Ordering::Relaxed),
            rescored,
            rows.len(),
            sent_text,
            pending,
            listed(&deferred),
            listed(&blocked),
        );
    }
}

/// An instant for the demo's lines: the time today, else date and time.
fn when(clock: &Clock, at: relance::core::model::Timestamp) -> String {
    if at.date_naive() == clock.now().date_naive() {
        at.format("%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M").to_string()
    }
}
