//! Dispatch: claims due outbox rows under the fatigue guard, delivers them
//! through the plugin host and settles each attempt. A crash between the
//! claim and the settlement leaves the row claimed; when its lease expires
//! it is claimed again and sent with the same idempotency key.

use crate::core::metrics::Metrics;
use crate::core::model::{Contact, Timestamp};
use crate::domain::fatigue::admit::Why;
use crate::domain::fatigue::admit::admit;
use crate::domain::outbox::{Attempt, Row, Settlement};
use crate::pipeline::config::Config;
use crate::pipeline::request::deliver_request;
use crate::ports::channels::{ChannelHost, Delivery, DeliveryError};
use crate::ports::store::{Store, StoreError, StoreHandle};
use relance_plugin_api::DeliverRequest;

use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Deliveries in flight at once per round.
const IN_FLIGHT: usize = 64;
/// How long a delivery waits before offering itself again to a full queue.
const QUEUE_FULL_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// Settlements written per transaction.
const SETTLE_EVERY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("fatigue guard: {0}")]
    Guard(String),
    #[error("a store task failed: {0}")]
    Task(String),
    #[error("instant out of range: {0}")]
    OutOfRange(String),
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoundReport {
    pub claimed: u64,
    pub sent: u64,
    pub retrying: u64,
    pub dead: u64,
    /// Settlements refused because the lease had passed to another process.
    pub lost_lease: u64,
}

impl RoundReport {
    fn add(&mut self, other: &RoundReport) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.retrying += other.retrying;
        self.dead += other.dead;
        self.lost_lease += other.lost_lease;
    }
}

impl std::fmt::Display for RoundReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} claimed, {} sent, {} to retry, {} dead",
            self.claimed, self.sent, self.retrying, self.dead
        )
    }
}

/// Everything a delivery needs besides the row; `Err` when its message
/// cannot be rendered for this contact (a permanent failure).
pub(crate) struct Prepared {
    pub(crate) row: Row,
    pub(crate) request: Result<DeliverRequest, String>,
}

/// Delivers due outbox rows. One per process; `owner` names it in leases.
pub struct Dispatcher {
    store: StoreHandle,
    host: Arc<dyn ChannelHost>,
    owner: String,
    metrics: Metrics,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(
        store: StoreHandle,
        host: Arc<dyn ChannelHost>,
        owner: String,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            host,
            owner,
            metrics,
        }
    }

    /// Runs blocking store work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, DispatchError> + Send + 'static,
    ) -> Result<T, DispatchError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| DispatchError::Task(e.to_string()))?
    }

    /// The earliest instant a pending row becomes due.
    pub async fn next_due(&self) -> Result<Option<Timestamp>, DispatchError> {
        self.blocking(|s| Ok(s.next_due()?)).await
    }

    /// Claims what is due at `now` (at most `[outbox] batch` rows), delivers
    /// it and settles every attempt. `now_fn` gives the instant of each
    /// settlement.
    pub async fn round(
        &self,
        config: Arc<Config>,
        now: Timestamp,
        now_fn: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Result<RoundReport, DispatchError> {
        let started = std::time::Instant::now();
        let guard = config
            .guard()
            .map_err(|e| DispatchError::Guard(e.to_string()))?;
        let owner = self.owner.clone();
        let cfg = config.clone();
        let metrics = self.metrics.clone();
        let unconfigured = self.host.unconfigured();
        let prepared = self
            .blocking(move |store| {
                let lease_until = now
                    .checked_add_signed(cfg.outbox.lease.0)
                    .ok_or_else(|| DispatchError::OutOfRange(format!("{now} + lease")))?;
                let rows = store.claim_due(
                    now,
                    lease_until,
                    cfg.outbox.batch,
                    &owner,
                    &mut |row, contact, weighs| {
                        if let Some(reason) = unconfigured.get(&row.channel) {
                            return crate::pipeline::waiting::admission(row, reason, now);
                        }
                        let admission = admit(
                            &guard,
                            &cfg.channels,
                            &row.candidate(),
                            contact,
                            weighs,
                            now,
                        );
                        let reason = admission.reasons.first().map_or("none", Why::rule);
                        metrics.record_decision(admission.verdict.verdict().as_str(), reason);
                        admission
                    },
                )?;
                crate::pipeline::waiting::note(store, &unconfigured)?;
                rows.into_iter()
                    .map(|row| prepare(store, &cfg, row, now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut report = RoundReport {
            claimed: prepared.len() as u64,
            ..RoundReport::default()
        };
        let now_fn = Arc::new(now_fn);
        let mut in_flight = JoinSet::new();
        let mut done = Vec::with_capacity(SETTLE_EVERY);
        let mut rows = prepared.into_iter();
        // The row of each task, so that a task that failed still settles
        // its row and the others of the round go on.
        let mut of_task = HashMap::new();
        loop {
            while in_flight.len() < IN_FLIGHT
                && let Some(p) = rows.next()
            {
                let host = self.host.clone();
                let now_fn = now_fn.clone();
                let row = p.row.clone();
                let task = in_flight.spawn(async move {
                    let started = std::time::Instant::now();
                    let attempt = match p.request {
                        Ok(request) => attempt_of(deliver(&*host, &p.row.channel, request).await),
                        Err(error) => Attempt::Permanent { error },
                    };
                    (p.row, attempt, now_fn(), started.elapsed())
                });
                of_task.insert(task.id(), row);
            }
            let Some(finished) = in_flight.join_next_with_id().await else {
                break;
            };
            let settled = match finished {
                Ok((id, settled)) => {
                    of_task.remove(&id);
                    settled
                }
                Err(e) => {
                    let Some(row) = of_task.remove(&e.id()) else {
                        return Err(DispatchError::Task(e.to_string()));
                    };
                    tracing::error!(key = %row.idem_key, error = %e, "delivery task failed");
                    let attempt = Attempt::Retryable {
                        error: format!("internal error during delivery: {e}"),
                        retry_after: None,
                    };
                    (row, attempt, now_fn(), std::time::Duration::ZERO)
                }
            };
            done.push(settled);
            // Settled in small groups as they finish: a crash re-sends only
            // what was delivered since the last group.
            if done.len() >= SETTLE_EVERY || in_flight.is_empty() {
                let group = std::mem::take(&mut done);
                report.add(&self.settle(config.clone(), group).await?);
            }
        }
        self.metrics.record_pass("dispatch", started.elapsed());
        Ok(report)
    }

    async fn settle(
        &self,
        config: Arc<Config>,
        group: Vec<(Row, Attempt, Timestamp, std::time::Duration)>,
    ) -> Result<RoundReport, DispatchError> {
        let owner = self.owner.clone();
        let metrics = self.metrics.clone();
        self.blocking(move |store| {
            let settlements: Vec<(i64, Settlement, Timestamp)> = group
                .iter()
                .map(|(row, attempt, at, _)| {
                    let how = config
                        .outbox
                        .settle(&row.idem_key, row.attempts, attempt.clone(), *at);
                    (row.seq, how, *at)
                })
                .collect();
            let applied = store.settle_many(&owner, &settlements)?;
            let mut r = RoundReport::default();
            for (((row, _, at, took), (_, how, _)), ok) in group.iter().zip(&settlements).zip(applied) {
                let outcome = match (ok, how) {
                    (false, _) => "lease_lost",
                    (true, Settlement::Sent) => "sent",
                    (true, Settlement::Retry { .. }) => "retrying",
                    (true, Settlement::Dead { .. }) => "dead",
                };
                metrics.record_delivery(&row.channel, outcome);
                metrics.record_delivery_latency(&row.channel, outcome, *took);
                if ok && matches!(how, Settlement::Sent) {
                    record_reaction(&metrics, row, *at);
                }
                if !ok {
                    tracing::warn!(key = %row.idem_key, "lease lost before settlement");
                    r.lost_lease += 1;
                    continue;
                }
                match how {
                    Settlement::Sent => r.sent += 1,
                    Settlement::Retry { error, at } => {
                        tracing::warn!(key = %row.idem_key, channel = %row.channel, %error, retry_at = %at, "delivery to retry");
                        r.retrying += 1;
                    }
                    Settlement::Dead { error } => {
                        tracing::error!(key = %row.idem_key, channel = %row.channel, %error, "delivery dead");
                        r.dead += 1;
                    }
                }
            }
            Ok(r)
        })
        .await
    }

    /// Rounds until nothing more is due at `now`.
    pub async fn drain(
        &self,
        config: Arc<Config>,
        now: Timestamp,
        now_fn: impl Fn() -> Timestamp + Clone + Send + Sync + 'static,
    ) -> Result<RoundReport, DispatchError> {
        let mut total = RoundReport::default();
        loop {
            let r = self.round(config.clone(), now, now_fn.clone()).await?;
            total.add(&r);
            if r.claimed < u64::from(config.outbox.batch) {
                return Ok(total);
            }
        }
    }
}

/// Delivers `request`, waiting while the channel's queue is full: a full
/// queue is back-pressure, not a failed attempt. The wait ends because the
/// calls ahead are each bounded by the plugin call timeout.
async fn deliver(
    host: &dyn ChannelHost,
    channel: &str,
    request: DeliverRequest,
) -> Result<Delivery, DeliveryError> {
    loop {
        match host.deliver(channel, request.clone()).await {
            Err(DeliveryError::QueueFull { .. }) => {
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// A follow-up triggered by a signal (an event, a score change) was sent:
/// how long after the signal.
fn record_reaction(metrics: &Metrics, row: &Row, sent_at: Timestamp) {
    if let Some(crate::domain::outbox::Occurrence::Signal { at, .. }) = &row.payload.occurrence
        && let Ok(delay) = (sent_at - *at).to_std()
    {
        metrics.record_signal_to_send(&row.channel, delay);
    }
}

fn attempt_of(outcome: Result<Delivery, DeliveryError>) -> Attempt {
    // Saturating: a peer may ask for any wait; `settle` caps it.
    let secs =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    match outcome {
        Ok(Delivery::Ok { .. }) => Attempt::Delivered,
        Ok(Delivery::Retryable {
            retry_after,
            reason,
        }) => Attempt::Retryable {
            error: reason,
            retry_after: retry_after.map(secs),
        },
        Ok(Delivery::Permanent { reason, .. }) => Attempt::Permanent { error: reason },
        Err(e) if e.is_transient() => Attempt::Retryable {
            retry_after: e.retry_after().map(secs),
            error: e.to_string(),
        },
        Err(e) => Attempt::Permanent {
            error: e.to_string(),
        },
    }
}

/// Builds the plugin request of a claimed row (also how the task channel
/// shows a delivered task).
pub(crate) fn prepare(
    store: &dyn Store,
    config: &Config,
    row: Row,
    now: Timestamp,
) -> Result<Prepared, DispatchError> {
    let contact = store.contact(&row.contact)?.unwrap_or_else(|| Contact {
        id: row.contact.clone(),
        ..Contact::default()
    });
    let company = match &contact.company {
        Some(c) => store.company(c)?,
        None => None,
    };
    let score = store.stored_score(&row.contact)?;
    let request = deliver_request(
        config,
        &row,
        &contact,
        company.as_ref(),
        score.as_ref(),
        now,
    );
    Ok(Prepared { row, request })
}
