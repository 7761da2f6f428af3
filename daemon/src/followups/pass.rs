//! The planning pass: the pure planner and arbitration applied to the
//! store. Incremental: it looks at the contacts with new events or score
//! changes and those whose wake instant (next nurture step, next broadcast)
//! came; everyone when the follow-up rules or the broadcasts changed.
//! Re-planning is safe: rows are keyed by their idempotency key.

use super::arbitrate::{Arbitration, Outcome, arbitrate};
use super::config::CompiledFollowups;
use super::plan::{
    Broadcast, BroadcastSpec, ContactView, Occurrence, PastPlan, PlanState, Planned, leaving,
    next_wake, plan,
};
use crate::config::Config;
use crate::fatigue::{ContactState, Guard};
use crate::model::{FollowUpKind, Timestamp};
use crate::outbox::{Row, State};
use crate::scoring::{Points, ScoreChange};
use crate::store::{
    PlanInput, PlanRow, PlanStore, PlanWrite, Records, ScoreStore, SqliteStore, StoreError,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const META_EVENTS: &str = "plan.events_seq";
const META_CHANGES: &str = "plan.changes_seq";
const META_RULES: &str = "plan.fingerprint";
/// Contacts read, and written, per transaction.
const CHUNK: usize = 1000;
/// Workers of a pass, at most (one per core).
const MAX_WORKERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("follow-ups: {}", .0.join("; "))]
    Rules(Vec<String>),
    #[error("fatigue guard: {0}")]
    Guard(String),
    #[error("a planning worker panicked")]
    Worker,
    #[error("contact `{contact}`: {message}")]
    Contact { contact: String, message: String },
}

/// The compiled rules a pass applies, built once per pass.
#[derive(Debug)]
pub struct Planner {
    followups: CompiledFollowups,
    guard: Guard,
    broadcasts: Vec<Broadcast>,
    /// Score changes older than this cannot fire a trigger.
    lookback: chrono::Duration,
    fingerprint: String,
}

/// What the planner decided for one contact.
#[derive(Clone, Debug, Default)]
pub struct ContactPlan {
    pub arbitration: Arbitration,
    /// Pending rows of nurture sequences the contact left.
    pub drops: Vec<(i64, String)>,
    pub wake: Option<Timestamp>,
}

/// One line of `relance plan`: a follow-up and the guard's decision on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanLine {
    pub contact: String,
    pub followup: String,
    pub kind: FollowUpKind,
    pub channel: String,
    pub due: Timestamp,
    /// `allow`, `defer`, `drop` or `block`.
    pub decision: &'static str,
    pub reasons: serde_json::Value,
    /// Deferred until then.
    pub until: Option<Timestamp>,
    /// Already in the outbox (planned by an earlier pass).
    pub pending: bool,
}

/// What a pass did, for the run log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub full: bool,
    pub examined: u64,
    pub allowed: u64,
    pub deferred: u64,
    pub dropped: u64,
    pub blocked: u64,
    /// Pending nurture steps dropped because the contact left the sequence.
    pub left: u64,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pass: {} contacts, {} allowed, {} deferred, {} dropped, {} blocked, {} left nurture",
            if self.full { "full" } else { "incremental" },
            self.examined,
            self.allowed,
            self.deferred,
            self.dropped,
            self.blocked,
            self.left
        )
    }
}

impl Planner {
    pub fn new(config: &Config, broadcasts: &[BroadcastSpec]) -> Result<Self, PassError> {
        let followups =
            CompiledFollowups::from_config(config).map_err(|e| PassError::Rules(e.0))?;
        let guard = Guard::from_config(config).map_err(|e| PassError::Guard(e.to_string()))?;
        let compiled = broadcasts
            .iter()
            .map(|b| {
                b.compile().map_err(|e| {
                    PassError::Rules(
                        e.0.iter()
                            .map(|m| format!("broadcast `{}`: {m}", b.id))
                            .collect(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lookback = followups
            .triggers
            .iter()
            .map(|t| t.lookback)
            .max()
            .unwrap_or_else(chrono::Duration::zero);
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&config.followups).unwrap_or_default());
        h.update(serde_json::to_vec(broadcasts).unwrap_or_default());
        Ok(Self {
            followups,
            guard,
            broadcasts: compiled,
            lookback,
            fingerprint: hex::encode(&h.finalize()[..16]),
        })
    }

    /// Score changes from this instant on can still fire a trigger at `now`.
    pub fn changes_since(&self, now: Timestamp) -> Timestamp {
        now - self.lookback
    }

    /// Plans one contact at `now`: new follow-ups, arbitrated against its
    /// fatigue (with the contact's pending rows when `with_pending`, as the
    /// dry run shows them), the nurture it left and its next wake instant.
    pub fn contact(
        &self,
        input: &PlanInput,
        now: Timestamp,
        with_pending: bool,
    ) -> Result<ContactPlan, PassError> {
        let failed = |message: String| PassError::Contact {
            contact: input.contact.id.clone(),
            message,
        };
        let state = past_plans(&input.rows);
        let changes: Vec<ScoreChange> = input
            .changes
            .iter()
            .filter_map(|c| {
                Some(ScoreChange {
                    contact: c.contact.clone(),
                    kind: c.kind.parse().ok()?,
                    at: c.at,
                    from_score: Points(c.from_score),
                    to_score: Points(c.to_score),
                    from_band: c.from_band.clone(),
                    to_band: c.to_band.clone(),
                    since: c.since,
                })
            })
            .collect();
        let mut view = ContactView {
            contact: &input.contact,
            company: input.company.as_ref(),
            events: &input.events,
            band: input.score.as_ref().map(|s| s.band.as_str()),
            changes: &changes,
            state: &state,
        };
        let mut planned = plan(&self.followups, &view, &self.broadcasts, now);
        let left = leaving(&self.followups, &view, now);
        let drops: Vec<(i64, String)> = input
            .rows
            .iter()
            .filter(|r| r.kind == FollowUpKind::Systematic && r.state.is_pending())
            .filter(|r| r.state != State::Claimed && left.contains(&r.followup.as_str()))
            .map(|r| (r.seq, format!("left nurture `{}`", r.followup)))
            .collect();
        if with_pending {
            let horizon = now + self.followups.arbitration.window.0;
            planned.extend(
                input
                    .rows
                    .iter()
                    .filter(|r| r.state.is_pending() && r.state != State::Claimed)
                    .filter(|r| r.due_at <= horizon && !drops.iter().any(|(s, _)| *s == r.seq))
                    .filter_map(|r| pending_planned(r, input)),
            );
        }
        let mut fatigue = ContactState::replay(&self.guard, &input.contact, &input.events)
            .map_err(|e| failed(e.to_string()))?;
        let arbitration = arbitrate(
            &self.followups.arbitration,
            &self.guard,
            &mut fatigue,
            planned,
            now,
        )
        .map_err(|e| failed(e.to_string()))?;

        let mut after = state.clone();
        after.record(
            &arbitration
                .decided
                .iter()
                .map(|d| d.planned.clone())
                .collect::<Vec<_>>(),
        );
        view.state = &after;
        let window = self.followups.arbitration.window.0;
        let wake = arbitration
            .later
            .iter()
            .map(|p| p.due - window)
            .chain(next_wake(&self.followups, &view, &self.broadcasts, now))
            .min();
        Ok(ContactPlan {
            arbitration,
            drops,
            wake,
        })
    }
}

/// What earlier passes planned for a contact, from its outbox rows.
fn past_plans(rows: &[Row]) -> PlanState {
    let mut state = PlanState::default();
    for r in rows {
        let Some(occurrence) = occurrence_of(r) else {
            continue;
        };
        state.planned.insert(
            r.idem_key.clone(),
            PastPlan {
                followup: r.followup.clone(),
                kind: r.kind,
                at: occurrence.at(),
                due: r.first_due,
            },
        );
    }
    state
}

fn occurrence_of(row: &Row) -> Option<Occurrence> {
    serde_json::from_value(row.payload.get("occurrence")?.clone()).ok()
}

/// A pending outbox row as the planner would have planned it.
fn pending_planned(row: &Row, input: &PlanInput) -> Option<Planned> {
    let text = |k: &str| {
        row.payload
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    Some(Planned {
        contact: input.contact.id.clone(),
        owner: text("owner"),
        followup: row.followup.clone(),
        kind: row.kind,
        occurrence: occurrence_of(row)?,
        channel: row.channel.clone(),
        template: text("template").unwrap_or_default(),
        priority: u32::try_from(row.priority).unwrap_or(0),
        due: row.due_at,
        deadline: row
            .payload
            .get("deadline")
            .and_then(|d| serde_json::from_value(d.clone()).ok()),
        first_planned: row.first_due,
        idem_key: row.idem_key.clone(),
    })
}

impl ContactPlan {
    /// The lines `relance plan` prints, in decision order.
    pub fn lines(&self, pending: &[String]) -> Vec<PlanLine> {
        self.arbitration
            .decided
            .iter()
            .map(|d| {
                let (decision, until) = verdict(&d.outcome);
                let mut reasons = serde_json::to_value(&d.reasons).unwrap_or_default();
                if let Outcome::Drop { reason } = &d.outcome
                    && let Some(list) = reasons.as_array_mut()
                {
                    list.push(serde_json::to_value(reason).unwrap_or_default());
                }
                PlanLine {
                    contact: d.planned.contact.clone(),
                    followup: d.planned.followup.clone(),
                    kind: d.planned.kind,
                    channel: d.planned.channel.clone(),
                    due: d.planned.due,
                    decision,
                    reasons,
                    until,
                    pending: pending.contains(&d.planned.idem_key),
                }
            })
            .collect()
    }

    /// What the store records for this contact.
    pub fn write(&self, key: i64) -> PlanWrite {
        let rows = self
            .arbitration
            .decided
            .iter()
            .zip(self.lines(&[]))
            .map(|(d, line)| {
                let mut send = d.planned.to_new_send();
                let state = match &d.outcome {
                    Outcome::Allow { at } => {
                        send.due_at = *at;
                        State::Planned
                    }
                    Outcome::Defer { until } => {
                        send.due_at = *until;
                        State::Deferred
                    }
                    Outcome::Drop { .. } => State::Dropped,
                    Outcome::Block => State::Blocked,
                };
                PlanRow {
                    send,
                    state,
                    first_due: d.planned.first_planned,
                    decision: line.decision,
                    reasons: line.reasons,
                }
            })
            .collect();
        PlanWrite {
            key,
            rows,
            drops: self.drops.clone(),
            wake: self.wake,
        }
    }
}

fn verdict(outcome: &Outcome) -> (&'static str, Option<Timestamp>) {
    match outcome {
        Outcome::Allow { .. } => ("allow", None),
        Outcome::Defer { until } => ("defer", Some(*until)),
        Outcome::Drop { .. } => ("drop", None),
        Outcome::Block => ("block", None),
    }
}

/// One planning pass at `now`, written to the store. Incremental unless
/// `force_full`, the first pass, or changed rules or broadcasts. Contacts
/// are planned in chunks by one worker per core, each reading with its own
/// connection; writes take turns.
pub fn run(config: &Config, now: Timestamp, force_full: bool) -> Result<PassReport, PassError> {
    let mut store = SqliteStore::from_config(config)?;
    let planner = Planner::new(config, &store.broadcasts()?)?;
    let events_seq = store.last_event_seq()?;
    let changes_seq = store.last_change_seq()?;
    let number = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let seen_events = number(store.meta(META_EVENTS)?);
    let seen_changes = number(store.meta(META_CHANGES)?);
    let rules = store.meta(META_RULES)?;
    let full = force_full
        || seen_events.is_none()
        || rules.as_deref() != Some(planner.fingerprint.as_str());
    let keys = if full {
        store.contact_keys()?
    } else {
        store.plan_candidates(now, seen_events.unwrap_or(0), seen_changes.unwrap_or(0))?
    };
    let chunks: Vec<&[i64]> = keys.chunks(CHUNK).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_WORKERS)
        .min(chunks.len().max(1));
    let next = AtomicUsize::new(0);
    let writer = Mutex::new(&mut store);
    let worker = || -> Result<PassReport, PassError> {
        let reader = if workers > 1 {
            Some(SqliteStore::from_config(config)?)
        } else {
            None
        };
        let mut report = PassReport::default();
        let since = planner.changes_since(now);
        loop {
            let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(report);
            };
            let inputs = match &reader {
                Some(r) => r.plan_inputs(chunk, since)?,
                None => lock(&writer).plan_inputs(chunk, since)?,
            };
            let mut batch = Vec::with_capacity(inputs.len());
            for input in &inputs {
                match planner.contact(input, now, false) {
                    Ok(planned) => {
                        report.count(&planned);
                        batch.push(planned.write(input.key));
                    }
                    // One contact's bad history must not stop everyone's plan.
                    Err(e) => tracing::error!(error = %e, "contact not planned"),
                }
            }
            lock(&writer).save_plan(&batch, now, &[])?;
        }
    };
    let reports: Vec<Result<PassReport, PassError>> = if workers > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(PassError::Worker)))
                .collect()
        })
    } else {
        vec![worker()]
    };
    let mut report = PassReport {
        full,
        ..PassReport::default()
    };
    for r in reports {
        report.add(&r?);
    }
    store.save_plan(
        &[],
        now,
        &[
            (META_EVENTS, events_seq.to_string()),
            (META_CHANGES, changes_seq.to_string()),
            (META_RULES, planner.fingerprint.clone()),
        ],
    )?;
    Ok(report)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PassReport {
    fn count(&mut self, planned: &ContactPlan) {
        self.examined += 1;
        self.left += planned.drops.len() as u64;
        for d in &planned.arbitration.decided {
            match d.outcome {
                Outcome::Allow { .. } => self.allowed += 1,
                Outcome::Defer { .. } => self.deferred += 1,
                Outcome::Drop { .. } => self.dropped += 1,
                Outcome::Block => self.blocked += 1,
            }
        }
    }

    fn add(&mut self, other: &PassReport) {
        self.examined += other.examined;
        self.allowed += other.allowed;
        self.deferred += other.deferred;
        self.dropped += other.dropped;
        self.blocked += other.blocked;
        self.left += other.left;
    }
}

/// What is due at `now` and what the guard would say, without writing:
/// new follow-ups and pending outbox rows, for every contact or one.
pub fn dry_run<S: PlanStore>(
    config: &Config,
    store: &S,
    now: Timestamp,
    contact: Option<&str>,
) -> Result<Vec<PlanLine>, PassError> {
    let planner = Planner::new(config, &store.broadcasts()?)?;
    let keys = match contact {
        Some(id) => store.contact_key(id)?.into_iter().collect(),
        None => store.contact_keys()?,
    };
    let since = planner.changes_since(now);
    let mut lines = Vec::new();
    for key in keys {
        let Some(input) = store.plan_input(key, since)? else {
            continue;
        };
        let pending: Vec<String> = input.rows.iter().map(|r| r.idem_key.clone()).collect();
        lines.extend(planner.contact(&input, now, true)?.lines(&pending));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Contact, Status};
    use crate::outbox::idempotency_key;
    use crate::store::StoredScore;
    use std::path::Path;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("instant")
    }

    fn shipped() -> Config {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
        let text = std::fs::read_to_string(&file).expect("shipped config");
        Config::parse(&text, &file, &|_| None).expect("valid")
    }

    /// A target-1 prospect whose first nurture step went out at `enrolled`.
    fn enrolled(band: &str, enrolled: Timestamp, state: State) -> PlanInput {
        let contact = Contact {
            id: "p".into(),
            status: Status::Prospect,
            tier: Some("target_1".into()),
            ..Contact::default()
        };
        let occurrence = Occurrence::Step {
            index: 0,
            enrolled_at: enrolled,
        };
        let key = idempotency_key("p", "prospects_target_1_2", &occurrence.key_part());
        PlanInput {
            key: 1,
            contact,
            company: None,
            events: Vec::new(),
            score: Some(StoredScore {
                contact: "p".into(),
                score: 0,
                band: band.into(),
                next_change_at: None,
                scored_at: enrolled,
                recent: Vec::new(),
            }),
            changes: Vec::new(),
            rows: vec![Row {
                seq: 7,
                idem_key: key,
                contact: "p".into(),
                followup: "prospects_target_1_2".into(),
                kind: FollowUpKind::Systematic,
                priority: 10,
                channel: "email".into(),
                state,
                due_at: enrolled,
                first_due: enrolled,
                attempts: 0,
                lease_until: None,
                payload: serde_json::json!({ "template": "nurture_welcome", "occurrence": occurrence }),
                last_error: None,
                updated_at: enrolled,
            }],
        }
    }

    #[test]
    fn the_next_step_wakes_the_contact_a_window_before_it_is_due() {
        let planner = Planner::new(&shipped(), &[]).expect("planner");
        let at = t("2026-11-02T10:00:00Z");
        let plan = planner
            .contact(&enrolled("cold", at, State::Sent), at, false)
            .expect("plan");
        assert!(
            plan.arbitration.decided.is_empty(),
            "step 0 is not planned twice"
        );
        assert!(plan.drops.is_empty());
        // Step 1 comes 21 days after step 0; the window is one day.
        assert_eq!(plan.wake, Some(t("2026-11-22T10:00:00Z")));
        let later = planner
            .contact(
                &enrolled("cold", at, State::Sent),
                t("2026-11-22T10:00:00Z"),
                false,
            )
            .expect("plan");
        assert_eq!(later.arbitration.decided.len(), 1);
        assert_eq!(later.arbitration.decided[0].planned.channel, "phone");
        assert_eq!(
            later.arbitration.decided[0].planned.due,
            t("2026-11-23T10:00:00Z")
        );
    }

    #[test]
    fn a_prospect_turned_hot_leaves_nurture_and_its_pending_step_is_dropped() {
        let planner = Planner::new(&shipped(), &[]).expect("planner");
        let at = t("2026-11-02T10:00:00Z");
        let hot = planner
            .contact(&enrolled("hot", at, State::Deferred), at, false)
            .expect("plan");
        assert_eq!(
            hot.drops,
            [(7, "left nurture `prospects_target_1_2`".to_string())]
        );
        assert_eq!(hot.wake, None, "no more steps to wake for");
        // A row already sent is history, not dropped; a cold one stays.
        let sent = planner
            .contact(&enrolled("hot", at, State::Sent), at, false)
            .expect("plan");
        assert!(sent.drops.is_empty());
        let cold = planner
            .contact(&enrolled("cold", at, State::Deferred), at, false)
            .expect("plan");
        assert!(cold.drops.is_empty());
    }
}
