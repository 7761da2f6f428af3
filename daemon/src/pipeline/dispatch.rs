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
use crate::ports::store::{Claimed, Store, StoreError, StoreHandle};
use relance_plugin_api::DeliverRequest;

use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Deliveries in flight at once per round: single sends, or batches on a
/// channel whose plugin takes several sends per call.
const IN_FLIGHT: usize = 64;
/// Sends handed to a plugin in one call, at most (the plugin may say fewer).
const BATCH: usize = 32;
/// How long a delivery waits before offering itself again to a full queue.
const QUEUE_FULL_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);
/// Settlement transactions under way at once per round. Calls that finish
/// while one runs wait and go together in the next (group commit): a fast
/// store settles each call alone, a slow one (PostgreSQL) in groups as
/// large as it needs, and a crash re-sends at most what was delivered
/// during the settlement under way. One, not two: on PostgreSQL each
/// daemon then keeps at most two transactions busy (this and its claim),
/// and several daemons on one server contend less for its hot pages; no
/// slower with one daemon nor on SQLite (README, *One settlement at a
/// time per daemon*).
const SETTLING: usize = 1;

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
    ///
    /// Sends go out a batch per plugin call on channels whose plugin takes
    /// batches (one call, one queue slot, one answer for up to [`BATCH`]
    /// sends), one by one elsewhere; finished calls are settled while the
    /// next calls are in flight, together when they finish during the
    /// settlement under way (see [`SETTLING`]).
    pub async fn round(
        &self,
        config: Arc<Config>,
        now: Timestamp,
        now_fn: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Result<RoundReport, DispatchError> {
        let started = std::time::Instant::now();
        let prepared = self.claim(config.clone(), now)?.await.map_err(task)??;
        self.deliver_all(config, prepared, Arc::new(now_fn), started)
            .await
    }

    /// Claims what is due at `now` under the guard and builds each claimed
    /// row's request, on a blocking thread.
    fn claim(
        &self,
        config: Arc<Config>,
        now: Timestamp,
    ) -> Result<tokio::task::JoinHandle<Result<Vec<Prepared>, DispatchError>>, DispatchError> {
        let guard = config
            .guard()
            .map_err(|e| DispatchError::Guard(e.to_string()))?;
        let owner = self.owner.clone();
        let metrics = self.metrics.clone();
        let unconfigured = self.host.unconfigured();
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let cfg = config;
            let lease_until = now
                .checked_add_signed(cfg.outbox.lease.0)
                .ok_or_else(|| DispatchError::OutOfRange(format!("{now} + lease")))?;
            let claimed = store.claim_batch(
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
            crate::pipeline::waiting::note(&*store, &unconfigured)?;
            Ok(claimed
                .into_iter()
                .map(|c| prepare_claimed(&cfg, c, now))
                .collect::<Vec<_>>())
        }))
    }

    /// Delivers the claimed rows and settles every attempt.
    async fn deliver_all<F>(
        &self,
        config: Arc<Config>,
        prepared: Vec<Prepared>,
        now_fn: Arc<F>,
        started: std::time::Instant,
    ) -> Result<RoundReport, DispatchError>
    where
        F: Fn() -> Timestamp + Send + Sync + 'static,
    {
        let mut report = RoundReport {
            claimed: prepared.len() as u64,
            ..RoundReport::default()
        };
        let mut units = self.units(prepared).into_iter();
        let mut in_flight = JoinSet::new();
        // The rows of each call, kept here: a call that failed still
        // settles its rows, and the others of the round go on.
        let mut of_task = HashMap::new();
        let mut done: Vec<Settled> = Vec::with_capacity(BATCH);
        let mut settling = JoinSet::new();
        let mut failed = None;
        loop {
            while in_flight.len() < IN_FLIGHT
                && let Some((channel, rows, requests)) = units.next()
            {
                let host = self.host.clone();
                let now_fn = now_fn.clone();
                let task = in_flight
                    .spawn(async move { deliver_unit(&*host, &channel, requests, &*now_fn).await });
                of_task.insert(task.id(), rows);
            }
            if !done.is_empty() && settling.len() < SETTLING {
                let group = std::mem::replace(&mut done, Vec::with_capacity(BATCH));
                self.settle(config.clone(), group, &mut settling);
            }
            tokio::select! {
                Some(finished) = in_flight.join_next_with_id() => {
                    self.finished(finished, &mut of_task, &mut done, &*now_fn)?;
                }
                Some(settled) = settling.join_next() => {
                    // The round goes on: what it delivered is settled.
                    match settled.map_err(task).and_then(|r| r) {
                        Ok(r) => report.add(&r),
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                else => break,
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.metrics.record_pass("dispatch", started.elapsed());
        Ok(report)
    }

    /// Takes the attempts of a finished call into `done`; a call whose task
    /// failed still settles its rows, as retryable.
    fn finished(
        &self,
        finished: Result<(tokio::task::Id, Vec<Outcome>), tokio::task::JoinError>,
        of_task: &mut HashMap<tokio::task::Id, Vec<Row>>,
        done: &mut Vec<Settled>,
        now_fn: &dyn Fn() -> Timestamp,
    ) -> Result<(), DispatchError> {
        match finished {
            Ok((id, attempts)) => {
                let rows = of_task.remove(&id).unwrap_or_default();
                done.extend(
                    rows.into_iter()
                        .zip(attempts)
                        .map(|(row, (attempt, at, took))| (row, attempt, at, took)),
                );
            }
            Err(e) => {
                let Some(rows) = of_task.remove(&e.id()) else {
                    return Err(DispatchError::Task(e.to_string()));
                };
                let at = now_fn();
                for row in rows {
                    tracing::error!(key = %row.idem_key, error = %e, "delivery task failed");
                    let attempt = Attempt::Retryable {
                        error: format!("internal error during delivery: {e}"),
                        retry_after: None,
                    };
                    done.push((row, attempt, at, std::time::Duration::ZERO));
                }
            }
        }
        Ok(())
    }

    /// The round's calls: per channel, its rows in claim order cut into
    /// batches the channel's plugin takes (single rows where it takes one).
    fn units(&self, prepared: Vec<Prepared>) -> Vec<Unit> {
        let mut open: HashMap<String, (usize, Vec<Row>, Requests)> = HashMap::new();
        let mut out = Vec::new();
        for p in prepared {
            let channel = &p.row.channel;
            let (size, rows, requests) = match open.get_mut(channel) {
                Some(unit) => unit,
                None => {
                    let size = self.host.batch_size(channel).clamp(1, BATCH);
                    open.entry(channel.clone()).or_insert_with(|| {
                        (size, Vec::with_capacity(size), Vec::with_capacity(size))
                    })
                }
            };
            rows.push(p.row);
            requests.push(p.request);
            if rows.len() >= *size {
                let size = *size;
                let channel = rows[0].channel.clone();
                out.push((
                    channel,
                    std::mem::replace(rows, Vec::with_capacity(size)),
                    std::mem::replace(requests, Vec::with_capacity(size)),
                ));
            }
        }
        for (channel, (_, rows, requests)) in open {
            if !rows.is_empty() {
                out.push((channel, rows, requests));
            }
        }
        out
    }

    /// Writes a group of settlements, off the async threads; the round
    /// goes on delivering meanwhile.
    fn settle(
        &self,
        config: Arc<Config>,
        group: Vec<Settled>,
        settling: &mut JoinSet<Result<RoundReport, DispatchError>>,
    ) {
        let store = self.store.clone();
        let owner = self.owner.clone();
        let metrics = self.metrics.clone();
        settling.spawn_blocking(move || {
            let settlements: Vec<(i64, Settlement, Timestamp)> = group
                .iter()
                .map(|(row, attempt, at, _)| {
                    let how =
                        config
                            .outbox
                            .settle(&row.idem_key, row.attempts, attempt.clone(), *at);
                    (row.seq, how, *at)
                })
                .collect();
            let applied = store.settle_many(&owner, &settlements)?;
            let mut r = RoundReport::default();
            for (((row, _, at, took), (_, how, _)), ok) in
                group.iter().zip(&settlements).zip(applied)
            {
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
        });
    }

    /// Rounds until nothing more is due at `now`. The next round's claim
    /// runs while the current round's sends are in flight, so the store's
    /// work and the network's overlap; its rows are leased like any claim's.
    pub async fn drain(
        &self,
        config: Arc<Config>,
        now: Timestamp,
        now_fn: impl Fn() -> Timestamp + Clone + Send + Sync + 'static,
    ) -> Result<RoundReport, DispatchError> {
        let now_fn = Arc::new(now_fn);
        let mut total = RoundReport::default();
        let mut next = Some(self.claim(config.clone(), now)?);
        while let Some(claiming) = next.take() {
            let started = std::time::Instant::now();
            let prepared = claiming.await.map_err(task)??;
            if prepared.len() >= config.outbox.batch as usize {
                next = Some(self.claim(config.clone(), now)?);
            }
            let r = self
                .deliver_all(config.clone(), prepared, now_fn.clone(), started)
                .await;
            match r {
                Ok(r) => total.add(&r),
                Err(e) => {
                    // The claim under way still ends (its rows stay leased
                    // and are sent again once the lease expires).
                    if let Some(claiming) = next {
                        let _ = claiming.await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(total)
    }
}

fn task(e: tokio::task::JoinError) -> DispatchError {
    DispatchError::Task(e.to_string())
}

/// A row settled: how its attempt ended, when, and how long the call took.
type Settled = (Row, Attempt, Timestamp, std::time::Duration);

/// A send's attempt, when it ended and how long it took.
type Outcome = (Attempt, Timestamp, std::time::Duration);

/// Rows' requests; `Err`: the message could not be rendered, a permanent
/// failure.
type Requests = Vec<Result<DeliverRequest, String>>;

/// One plugin call of a round: the channel, its rows and their requests.
type Unit = (String, Vec<Row>, Requests);

/// Delivers a unit's requests, one call for all of them when there are
/// several, and says how each attempt ended, in order.
async fn deliver_unit(
    host: &dyn ChannelHost,
    channel: &str,
    requests: Requests,
    now_fn: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Vec<Outcome> {
    let started = std::time::Instant::now();
    let mut attempts: Vec<Option<Attempt>> = Vec::with_capacity(requests.len());
    let mut sendable = Vec::with_capacity(requests.len());
    for request in requests {
        match request {
            Ok(r) => {
                attempts.push(None);
                sendable.push(r);
            }
            Err(error) => attempts.push(Some(Attempt::Permanent { error })),
        }
    }
    let mut outcomes = deliver(host, channel, &sendable).await.into_iter();
    let at = now_fn();
    let took = started.elapsed();
    attempts
        .into_iter()
        .map(|a| {
            let attempt = a.unwrap_or_else(|| match outcomes.next() {
                Some(outcome) => attempt_of(outcome),
                None => Attempt::Retryable {
                    error: "internal error: no answer for this send".into(),
                    retry_after: None,
                },
            });
            (attempt, at, took)
        })
        .collect()
}

/// Delivers `requests` (one call when there are several), waiting while
/// the channel's queue is full: a full queue is back-pressure, not a
/// failed attempt, and only the sends it refused are offered again. The
/// wait ends because the calls ahead are each bounded by the plugin call
/// timeout.
async fn deliver(
    host: &dyn ChannelHost,
    channel: &str,
    requests: &[DeliverRequest],
) -> Vec<Result<Delivery, DeliveryError>> {
    let mut out: Vec<Option<Result<Delivery, DeliveryError>>> =
        requests.iter().map(|_| None).collect();
    let mut waiting: Vec<usize> = (0..requests.len()).collect();
    loop {
        let results = match waiting.as_slice() {
            [] => break,
            [one] => vec![host.deliver(channel, &requests[*one]).await],
            all if all.len() == requests.len() => host.deliver_batch(channel, requests).await,
            some => {
                let again: Vec<DeliverRequest> =
                    some.iter().map(|&i| requests[i].clone()).collect();
                host.deliver_batch(channel, &again).await
            }
        };
        let mut full = Vec::new();
        for (&i, result) in waiting.iter().zip(results) {
            match result {
                Err(DeliveryError::QueueFull { .. }) => full.push(i),
                other => out[i] = Some(other),
            }
        }
        if full.is_empty() {
            break;
        }
        waiting = full;
        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Err(DeliveryError::PluginFault {
                    channel: channel.to_owned(),
                    fault: "fewer answers than sends".into(),
                })
            })
        })
        .collect()
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

/// Builds the plugin request of a claimed row from what the claim read.
pub(crate) fn prepare_claimed(config: &Config, c: Claimed, now: Timestamp) -> Prepared {
    let request = deliver_request(
        config,
        &c.row,
        &c.contact,
        c.company.as_ref(),
        c.score.as_ref(),
        now,
    );
    Prepared {
        row: c.row,
        request,
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
