//! The planning pass: the pure planner and arbitration applied to the
//! store. Incremental: it looks at the contacts with new events or score
//! changes and those whose wake instant (next nurture step, next broadcast)
//! came; everyone when the follow-up rules or the broadcasts changed.
//! Re-planning is safe: rows are keyed by their idempotency key.

use crate::core::model::{Event, FollowUpKind, Timestamp};
use crate::domain::fatigue::admit::Why;
use crate::domain::fatigue::{ChannelId, Guard, Proposal, Verdict};
use crate::domain::followups::arbitrate::{Arbitrated, Arbitration, Outcome, arbitrate};
use crate::domain::followups::config::{CALLBACK, CompiledFollowups, FollowupsError};
use crate::domain::followups::memo::{HistoryMemo, MemoRules};
use crate::domain::followups::plan::{
    Broadcast, BroadcastSpec, ContactView, Occurrence, PastPlan, PlanState, Planned, last_contact,
    leaving, next_wake, plan,
};
use crate::domain::outbox::{Row, State};
use crate::domain::scoring::{Points, ScoreChange};
use crate::pipeline::config::Config;
use crate::ports::store::{
    CompanyCache, MemoFilter, PassMark, PlanInput, PlanRead, PlanRow, PlanStore, PlanWrite, Store,
    StoreError,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

const META_EVENTS: &str = "plan.events_seq";
const META_CHANGES: &str = "plan.changes_seq";
const META_RULES: &str = "plan.fingerprint";
const META_MEMO: &str = "plan.memo";
/// The instant of the last pass: the next one looks back from there.
const META_AT: &str = "plan.at";
/// Look-backs reach at most this far before a pass's own look-back.
const CATCH_UP: chrono::Duration = chrono::Duration::days(7);
/// Workers of a pass, at most (one per core).
const MAX_WORKERS: usize = 4;
/// The recent window is at least this long, so that an event arriving a
/// little after its instant does not make a memo stale.
const RECENT_FLOOR: chrono::Duration = chrono::Duration::days(1);

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
    /// Events younger than this are read in full every pass; older ones
    /// are folded into the contact's memo.
    recent: chrono::Duration,
    /// Event types whose last instant conditions read.
    last_kinds: BTreeSet<String>,
    /// Event types a memo folds (the others change nothing in it).
    folded: BTreeSet<String>,
    fingerprint: String,
    /// What stored memos must have been folded with.
    memo_fingerprint: String,
    /// The previous pass's instant (see [`Planner::since_last_pass`]).
    since: Option<Timestamp>,
}

/// What the planner decided for one contact.
#[derive(Clone, Debug, Default)]
pub struct ContactPlan {
    pub arbitration: Arbitration,
    /// Pending rows of nurture sequences the contact left.
    pub drops: Vec<(i64, String)>,
    pub wake: Option<Timestamp>,
    /// The contact's renewed memo, when older history was folded.
    pub memo: Option<HistoryMemo>,
}

/// One line of `relance plan`: a follow-up and the guard's decision on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanLine {
    pub contact: String,
    pub followup: String,
    pub kind: FollowUpKind,
    pub channel: String,
    pub due: Timestamp,
    pub decision: Verdict,
    pub reasons: Vec<Why>,
    /// Deferred until then.
    pub until: Option<Timestamp>,
    /// Already in the outbox (planned by an earlier pass).
    pub pending: bool,
}

/// How long after its settlement a delivered row may still change a
/// planning pass's decisions: a pass looks back from its previous pass (at
/// most [`CATCH_UP`] back), then over the triggers' look-back and
/// cool-down. Rows of nurture sequences and of broadcasts not over are
/// read for longer (see [`crate::pipeline::retention`]).
pub fn sent_reach(
    followups: &crate::domain::followups::config::FollowupsConfig,
) -> chrono::Duration {
    CATCH_UP + followups.widest_reach()
}

impl CompiledFollowups {
    /// The `[followups]` of a loaded configuration, with the priorities of
    /// `[fatigue.priorities]` unless `[followups.arbitration]` sets its own.
    pub fn from_config(config: &Config) -> Result<Self, FollowupsError> {
        let mut compiled = config.followups.compile()?;
        if config.followups.arbitration.priorities.is_none() {
            compiled.priorities = config.fatigue.priorities;
        }
        Ok(compiled)
    }
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
        let guard = config
            .guard()
            .map_err(|e| PassError::Guard(e.to_string()))?;
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
        let lookback = followups.widest_lookback();
        // Counts in conditions read their whole window from recent events.
        let counted = compiled
            .iter()
            .filter_map(|b| b.segment.count_window())
            .chain(followups.count_window())
            .max()
            .unwrap_or_else(chrono::Duration::zero);
        let recent = lookback
            .max(counted)
            .max(followups.callback_lookback())
            .max(RECENT_FLOOR);
        let mut last_kinds = BTreeSet::new();
        followups.last_kinds(&mut last_kinds);
        for b in &compiled {
            b.segment.last_kinds(&mut last_kinds);
        }
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&config.followups).unwrap_or_default());
        h.update(serde_json::to_vec(broadcasts).unwrap_or_default());
        let fingerprint = hex::encode(&h.finalize()[..16]);
        let mut h = Sha256::new();
        // Memos written before calls counted for the caps (and call tasks
        // only for the budget) hold other marks: rebuilt.
        h.update(b"sends: calls and call tasks");
        h.update(serde_json::to_vec(&config.fatigue).unwrap_or_default());
        for (name, channel) in &config.channels {
            h.update(serde_json::to_vec(&(name, &channel.event)).unwrap_or_default());
        }
        h.update(serde_json::to_vec(&config.followups.calls).unwrap_or_default());
        h.update(serde_json::to_vec(&config.followups.arbitration.budget).unwrap_or_default());
        h.update(serde_json::to_vec(&last_kinds).unwrap_or_default());
        let folded = guard
            .weighed_kinds()
            .map(str::to_string)
            .chain([followups.calls.event_type().to_string()])
            .chain(last_kinds.iter().cloned())
            .collect();
        Ok(Self {
            followups,
            guard,
            broadcasts: compiled,
            lookback,
            recent,
            last_kinds,
            folded,
            fingerprint,
            memo_fingerprint: hex::encode(&h.finalize()[..16]),
            since: None,
        })
    }

    /// Measures look-backs from `last_pass`, the previous pass's instant,
    /// so that a signal between two passes is never missed (at most
    /// `CATCH_UP` back: after a long downtime old signals are stale).
    pub fn since_last_pass(mut self, last_pass: Option<Timestamp>) -> Self {
        self.since = last_pass;
        self
    }

    /// The instant look-backs are measured from at `now`.
    pub fn looks_back_from(&self, now: Timestamp) -> Timestamp {
        self.since.map_or(now, |s| s.min(now).max(now - CATCH_UP))
    }

    /// Where the recent window of a pass at `now` starts.
    pub fn recent_from(&self, now: Timestamp) -> Timestamp {
        self.looks_back_from(now) - self.recent
    }

    /// How a pass at `now` reads its contacts, trusting the memos `memo`
    /// accepts.
    pub fn read<'a>(
        &'a self,
        now: Timestamp,
        memo: &'a MemoFilter<'a>,
        companies: &'a CompanyCache,
    ) -> PlanRead<'a> {
        PlanRead {
            changes_since: self.changes_since(now),
            recent_from: self.recent_from(now),
            props_of: self.followups.calls.event_type(),
            folded: &self.folded,
            memo,
            new_after: None,
            companies,
        }
    }

    fn memo_rules(&self) -> MemoRules<'_> {
        MemoRules {
            guard: &self.guard,
            calls: &self.followups.calls,
            last: &self.last_kinds,
        }
    }

    /// Score changes from this instant on can still fire a trigger at `now`.
    pub fn changes_since(&self, now: Timestamp) -> Timestamp {
        self.looks_back_from(now) - self.lookback
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
        // Older history: the memo, with what aged out of the recent window.
        let recent_from = self.recent_from(now);
        let mut memo = match &input.memo {
            Some(m) if m.upto > recent_from => {
                return Err(failed("its memo reaches into the recent window".into()));
            }
            Some(m) => m.clone(),
            None => HistoryMemo::empty(&self.guard),
        };
        let rules = self.memo_rules();
        for e in &input.older {
            memo.fold(&rules, e).map_err(|e| failed(e.to_string()))?;
        }
        // No older event read, nothing to store: without a memo the next
        // pass reads the whole history, which is then only recent events.
        let renewed = !input.older.is_empty() || input.left_out > 0;
        if renewed {
            memo.upto = recent_from;
        }
        // Recent events and claimed sends, oldest first. A claim older than
        // the memo counts at its edge, so that folding stays in order.
        let merged: Vec<Event>;
        let events: &[Event] = if input.reserved.is_empty() {
            &input.recent
        } else {
            let mut all = input.recent.clone();
            all.extend(input.reserved.iter().map(|r| Event {
                at: r.at.max(memo.upto),
                ..r.clone()
            }));
            all.sort_by_key(|e| e.at);
            merged = all;
            &merged
        };
        let calls = events
            .iter()
            .fold(memo.calls, |s, e| self.followups.calls.after(s, e));
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
            company: input.company.as_deref(),
            events,
            earlier: &memo.last,
            calls,
            since: self.looks_back_from(now),
            band: input.score.as_ref().map(|s| s.band.as_str()),
            #[allow(clippy::cast_precision_loss)]
            score: input.score.as_ref().map(|s| s.score as f64 / 100.0),
            prospect: input.prospect.as_deref(),
            changes: &changes,
            state: &state,
        };
        let mut planned = plan(&self.followups, &view, &self.broadcasts, now);
        let left = leaving(&self.followups, &view, now);
        let mut drops: Vec<(i64, String)> = input
            .rows
            .iter()
            .filter(|r| r.kind == FollowUpKind::Systematic && r.state.is_pending())
            .filter(|r| r.state != State::Claimed && left.contains(&r.followup.as_str()))
            .map(|r| (r.seq, format!("left nurture `{}`", r.followup)))
            .collect();
        // A later call or a meeting supersedes the call-backs asked before.
        if let Some(last) = last_contact(&self.followups, events, self.looks_back_from(now), now) {
            drops.extend(
                input
                    .rows
                    .iter()
                    .filter(|r| r.followup == CALLBACK && r.state.is_pending())
                    .filter(|r| r.state != State::Claimed)
                    .filter(|r| occurrence_of(r).is_some_and(|o| o.at() < last.at))
                    .map(|r| {
                        (
                            r.seq,
                            format!("call-back superseded by the {} of {}", last.kind, last.at),
                        )
                    }),
            );
        }
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
        let mut fatigue = memo.state_of(&self.guard, &input.contact);
        // Fatigue at `now`: later events (a dry run in the past) wait.
        for e in events.iter().filter(|e| e.at <= now) {
            fatigue
                .apply(&self.guard, e)
                .map_err(|e| failed(e.to_string()))?;
        }
        let mut arbitration = arbitrate(
            &self.followups.arbitration,
            &self.guard,
            &mut fatigue,
            planned,
            now,
        )
        .map_err(|e| failed(e.to_string()))?;
        // A call-back agreed beyond the window is written now, put to the
        // guard at its date (send window): no event will wake it later.
        let (callbacks, later): (Vec<Planned>, Vec<Planned>) =
            std::mem::take(&mut arbitration.later)
                .into_iter()
                .partition(|p| p.followup == CALLBACK);
        arbitration.later = later;
        for p in callbacks {
            arbitration.decided.push(self.decide_alone(p, &fatigue));
        }

        // What this pass planned counts for the next wake; most contacts
        // get nothing new, and their state is not copied.
        let after: PlanState;
        if !arbitration.decided.is_empty() {
            let mut more = state.clone();
            more.record(
                &arbitration
                    .decided
                    .iter()
                    .map(|d| d.planned.clone())
                    .collect::<Vec<_>>(),
            );
            after = more;
            view.state = &after;
        }
        let window = self.followups.arbitration.window.0;
        // An event stamped after `now` counts from its instant on: a
        // scheduled pass runs at its tick's instant, and a visit arriving
        // meanwhile is already behind the pass's mark. The contact is
        // planned again at that instant.
        let later_event = events.iter().map(|e| e.at).filter(|at| *at > now).min();
        let wake = arbitration
            .later
            .iter()
            .map(|p| p.due - window)
            .chain(next_wake(&self.followups, &view, &self.broadcasts, now))
            .chain(later_event)
            .min();
        Ok(ContactPlan {
            arbitration,
            drops,
            wake,
            memo: renewed.then_some(memo),
        })
    }
}

impl Planner {
    /// The guard's decision on one follow-up at its due instant.
    fn decide_alone(&self, p: Planned, state: &crate::domain::fatigue::ContactState) -> Arbitrated {
        let channel = self.guard.channel(&p.channel).unwrap_or(ChannelId(u8::MAX));
        let proposal = Proposal {
            channel,
            kind: p.kind,
            priority: Some(p.priority),
            exempt: p.exempt,
            first_proposed: Some(p.first_planned),
        };
        let decision = self.guard.decide(&proposal, state, p.due);
        let outcome = match (decision.decision, decision.until) {
            (Verdict::Allow, _) => Outcome::Allow { at: p.due },
            (Verdict::Defer, Some(until)) => Outcome::Defer { until },
            _ => Outcome::Block,
        };
        Arbitrated {
            planned: p,
            outcome,
            reasons: decision.reasons,
        }
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
    row.payload.occurrence.clone()
}

/// A pending outbox row as the planner would have planned it.
fn pending_planned(row: &Row, input: &PlanInput) -> Option<Planned> {
    let payload = &row.payload;
    Some(Planned {
        contact: input.contact.id.clone(),
        owner: payload.owner.clone(),
        followup: row.followup.clone(),
        kind: row.kind,
        occurrence: occurrence_of(row)?,
        channel: row.channel.clone(),
        template: payload.template.clone().unwrap_or_default(),
        priority: u32::try_from(row.priority).unwrap_or(0),
        due: row.due_at,
        deadline: payload.deadline,
        first_planned: row.first_due,
        idem_key: row.idem_key.clone(),
        exempt: payload.exempt,
    })
}

impl ContactPlan {
    /// The lines `relance plan` prints, in decision order.
    pub fn lines(&self, pending: &[String]) -> Vec<PlanLine> {
        self.arbitration
            .decided
            .iter()
            .map(|d| {
                let (decision, until) = d.outcome.verdict();
                let mut reasons: Vec<Why> = d.reasons.iter().cloned().map(Why::Guard).collect();
                if let Outcome::Drop { reason } = &d.outcome {
                    reasons.push(Why::Dropped(reason.clone()));
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

    /// What the store records for the contact of `input`.
    pub fn write(&self, input: &PlanInput) -> PlanWrite {
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
            key: input.key,
            rows,
            drops: self.drops.clone(),
            wake: self.wake,
            wake_was: input.wake,
            memo: self.memo.clone(),
        }
    }
}

/// One planning pass at `now`, written to the store. Incremental unless
/// `force_full`, the first pass, or changed rules or broadcasts. Contacts
/// are planned in chunks by one worker per core, reading side by side;
/// writes take turns.
pub fn run(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
    force_full: bool,
) -> Result<PassReport, PassError> {
    // Marked before reading: a pass cut short leaves the mark for the next
    // start to resume; one completing meets every request made before.
    let request = store.request_plan()?;
    let last_pass = store
        .meta(META_AT)?
        .and_then(|v| v.parse::<Timestamp>().ok());
    let planner = Planner::new(config, &store.broadcasts()?)?.since_last_pass(last_pass);
    let events_seq = store.last_event_seq()?;
    let changes_seq = store.last_change_seq()?;
    let number = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let seen_events = number(store.meta(META_EVENTS)?);
    let seen_changes = number(store.meta(META_CHANGES)?);
    let rules = store.meta(META_RULES)?;
    // Memos hold only under the rules that folded them, and only while
    // every event they could miss is known: those after the last pass.
    let memos_hold = seen_events.is_some()
        && store.meta(META_MEMO)?.as_deref() == Some(planner.memo_fingerprint.as_str());
    let full = force_full || !memos_hold || rules.as_deref() != Some(planner.fingerprint.as_str());
    let recent_from = planner.recent_from(now);
    let trusted = |_: i64, upto: Timestamp, bytes: &[u8]| {
        if !memos_hold || upto > recent_from {
            return None;
        }
        HistoryMemo::decode(upto, bytes)
    };
    let companies = if full {
        CompanyCache::for_every_contact()
    } else {
        CompanyCache::default()
    };
    // Each memo is also checked against the events that arrived since the
    // last pass (see `PlanRead::new_after`).
    let read = PlanRead {
        new_after: seen_events.filter(|_| memos_hold),
        ..planner.read(now, &trusted, &companies)
    };
    let keys = if full {
        store.contact_keys()?
    } else {
        store.plan_candidates(now, seen_events.unwrap_or(0), seen_changes.unwrap_or(0))?
    };
    let chunks: Vec<&[i64]> = keys.chunks(chunk_size(store)).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_WORKERS)
        .min(chunks.len().max(1));
    let next = AtomicUsize::new(0);
    let worker = || -> Result<PassReport, PassError> {
        let mut report = PassReport::default();
        let mut reader = store.plan_reader(full)?;
        loop {
            let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(report);
            };
            let inputs = reader.plan_inputs(chunk, &read)?;
            let mut batch = Vec::with_capacity(inputs.len());
            for input in &inputs {
                match planner.contact(input, now, false) {
                    Ok(planned) => {
                        report.count(&planned);
                        let write = planned.write(input);
                        if changes_something(&write) {
                            batch.push(write);
                        }
                    }
                    // One contact's bad history must not stop everyone's plan.
                    Err(e) => tracing::error!(error = %e, "contact not planned"),
                }
            }
            // Most contacts of a pass get nothing new: a chunk where none
            // does takes no turn at the writer.
            if !batch.is_empty() {
                store.save_plan(&batch, now)?;
            }
        }
    };
    let reports: Vec<Result<PassReport, PassError>> = if workers > 1 {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(PassError::Worker)))
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
    // Another process may have planned meanwhile; then the lower marks
    // stay (see `finish_pass`), so a memo written from an older read is
    // checked against every event it may have missed.
    store.finish_pass(
        &[
            PassMark {
                key: META_EVENTS,
                seen: seen_events,
                reached: events_seq,
            },
            PassMark {
                key: META_CHANGES,
                seen: seen_changes,
                reached: changes_seq,
            },
        ],
        &[
            (META_RULES, planner.fingerprint.clone()),
            (META_MEMO, planner.memo_fingerprint.clone()),
            (META_AT, now.to_rfc3339()),
        ],
    )?;
    store.plan_done(request)?;
    Ok(report)
}

/// Whether saving `w` would change the store: a new row, a drop, a memo
/// or another wake instant.
fn changes_something(w: &PlanWrite) -> bool {
    !w.rows.is_empty() || !w.drops.is_empty() || w.memo.is_some() || w.wake != w.wake_was
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

/// The store's chunk ([`PlanStore::plan_chunk`]), at least one contact.
fn chunk_size<S: PlanStore + ?Sized>(store: &S) -> usize {
    store.plan_chunk().max(1)
}

/// What is due at `now` and what the guard would say, without writing:
/// new follow-ups and pending outbox rows, for every contact or one.
pub fn dry_run<S: PlanStore + ?Sized>(
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
    let companies = if contact.is_none() {
        CompanyCache::for_every_contact()
    } else {
        CompanyCache::default()
    };
    let read = planner.read(now, &|_, _, _| None, &companies);
    let mut lines = Vec::new();
    for chunk in keys.chunks(chunk_size(store)) {
        for input in store.plan_inputs(chunk, &read)? {
            let pending: Vec<String> = input.rows.iter().map(|r| r.idem_key.clone()).collect();
            lines.extend(planner.contact(&input, now, true)?.lines(&pending));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Contact, Status};
    use crate::domain::followups::CallStatus;
    use crate::domain::ingest::{Incoming, Patch};
    use crate::domain::outbox::{Payload, idempotency_key};
    use crate::domain::scoring::StoredScore;
    use std::path::Path;
    use std::time::Duration;

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
            memo: None,
            older: Vec::new(),
            left_out: 0,
            recent: Vec::new(),
            reserved: Vec::new(),
            prospect: None,
            wake: None,
            score: Some(StoredScore {
                contact: "p".into(),
                score: 0,
                band: band.into(),
                next_change_at: None,
                scored_at: enrolled,
                recent: Vec::new(),
                desk_mark: None,
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
                payload: Payload {
                    occurrence: Some(occurrence),
                    ..Payload::template("nurture_welcome")
                },
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

    /// A planner whose broadcast reads `last.call`, so that memos keep it.
    fn planner_reading_last_call() -> Planner {
        let spec: BroadcastSpec = serde_json::from_value(serde_json::json!({
            "id": "recall",
            "name": "recall_broadcast",
            "segment": { "field": "last.call", "within": "30d" },
            "channel": "email",
            "template": "seminar_invitation",
            "start": "2026-11-01T00:00:00Z",
            "end": "2026-12-31T00:00:00Z",
        }))
        .expect("spec");
        Planner::new(&shipped(), &[spec]).expect("planner")
    }

    const KINDS: [&str; 10] = [
        "email_sent",
        "email_open",
        "email_click",
        "page_visit",
        "call",
        "call_task",
        "unsubscribe",
        "sms_sent",
        "meeting",
        "form_submit",
    ];
    const OUTCOMES: [&str; 6] = ["NRP", "OCC", "RDV", "REFUS", "RAPP", "ERR"];

    /// Events as the store hands them over: older ones keep no id, no
    /// contact and props only for the call type.
    fn split(events: &[Event], from: Timestamp, after: Timestamp) -> (Vec<Event>, Vec<Event>) {
        let older = events
            .iter()
            .filter(|e| e.at > from && e.at <= after)
            .map(|e| Event {
                id: None,
                contact: String::new(),
                props: if e.kind == "call" {
                    e.props.clone()
                } else {
                    serde_json::Map::new()
                },
                ..e.clone()
            })
            .collect();
        let recent = events.iter().filter(|e| e.at > after).cloned().collect();
        (older, recent)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Planning from a memo and the events after it decides exactly what
        /// planning over the whole history as recent events decides, and
        /// renews the memo to the fold of the whole history.
        #[test]
        fn a_memo_and_the_events_after_it_plan_like_the_whole_history(
            raw in proptest::collection::vec(
                (0..KINDS.len(), 0i64..60 * 24 * 60, 0..OUTCOMES.len(), proptest::bool::ANY),
                0..40,
            ),
            split_back in 0i64..60 * 24 * 60,
            band in 0usize..3,
            with_pending in proptest::bool::ANY,
        ) {
            let planner = planner_reading_last_call();
            let now = t("2026-11-20T10:00:00Z");
            let mut events: Vec<Event> = raw
                .iter()
                .enumerate()
                .map(|(i, &(k, minutes, o, flag))| {
                    let kind = KINDS[k];
                    let mut props = serde_json::Map::new();
                    match kind {
                        "call" => {
                            props.insert("outcome".into(), OUTCOMES[o].into());
                        }
                        "page_visit" if flag => {
                            props.insert("url".into(), "https://x.example/pricing".into());
                        }
                        _ => {}
                    }
                    Event {
                        id: Some(format!("e{i}")),
                        contact: "p".into(),
                        kind: kind.into(),
                        at: now - chrono::Duration::minutes(minutes),
                        channel: (kind == "unsubscribe" && flag).then(|| "email".into()),
                        props,
                    }
                })
                .collect();
            events.sort_by_key(|e| e.at);
            let recent_from = planner.recent_from(now);
            let mut input = enrolled(["cold", "warm", "hot"][band], now, State::Sent);
            input.rows.clear();

            let start = chrono::DateTime::<chrono::Utc>::MIN_UTC;
            let (older, recent) = split(&events, start, recent_from);
            let whole = PlanInput { older, recent, ..input.clone() };
            let upto = recent_from - chrono::Duration::minutes(split_back);
            let mut memo = HistoryMemo::empty(&planner.guard);
            for e in split(&events, start, upto).0 {
                memo.fold(&planner.memo_rules(), &e).expect("fold");
            }
            memo.upto = upto;
            let stored = HistoryMemo::decode(upto, &memo.encode()).expect("round trip");
            proptest::prop_assert_eq!(&stored, &memo);
            // The store leaves out older events that folding does not read.
            let (older, recent) = split(&events, upto, recent_from);
            let (older, left): (Vec<Event>, Vec<Event>) =
                older.into_iter().partition(|e| planner.folded.contains(&e.kind));
            let from_memo =
                PlanInput { memo: Some(stored), older, left_out: left.len(), recent, ..input };

            // The reference: every event seen as recent, nothing folded.
            let reference = PlanInput { older: Vec::new(), recent: events.clone(), ..whole.clone() };
            let r = planner.contact(&reference, now, with_pending).expect("reference");
            let a = planner.contact(&whole, now, with_pending).expect("whole history");
            let b = planner.contact(&from_memo, now, with_pending).expect("memo");
            proptest::prop_assert_eq!(r.lines(&[]), a.lines(&[]));
            proptest::prop_assert_eq!(&r.drops, &a.drops);
            proptest::prop_assert_eq!(r.wake, a.wake);
            proptest::prop_assert_eq!(a.lines(&[]), b.lines(&[]));
            proptest::prop_assert_eq!(&a.drops, &b.drops);
            proptest::prop_assert_eq!(a.wake, b.wake);
            let renewed = a.memo.unwrap_or_else(|| HistoryMemo::empty(&planner.guard));
            let kept = b.memo.unwrap_or(memo);
            proptest::prop_assert_eq!(
                (renewed.state, renewed.calls, renewed.last),
                (kept.state, kept.calls, kept.last)
            );
        }
    }

    fn config_in(dir: &Path) -> Config {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
        let text = std::fs::read_to_string(&file).expect("shipped config");
        let db = dir.join("plan.db").display().to_string();
        Config::parse(&text, &file, &|name| {
            (name == "RELANCE_DB").then(|| db.clone())
        })
        .expect("valid")
    }

    /// Contacts with status `prospect`, one per id.
    fn prospects(ids: &[&str]) -> Vec<Patch> {
        ids.iter()
            .map(|id| {
                let mut patch = Patch {
                    id: (*id).into(),
                    ..Patch::default()
                };
                patch.fields.insert("status".into(), "prospect".into());
                patch
            })
            .collect()
    }

    fn call_event(contact: &str, id: &str, at: Timestamp, outcome: &str) -> Incoming {
        let mut props = serde_json::Map::new();
        props.insert("outcome".into(), outcome.into());
        Incoming::Contact(Event {
            id: Some(id.into()),
            contact: contact.into(),
            kind: "call".into(),
            at,
            channel: None,
            props,
        })
    }

    fn pricing_visit(contact: &str, at: Timestamp) -> Incoming {
        pricing_visit_id(contact, &format!("visit-{contact}"), at)
    }

    fn pricing_visit_id(contact: &str, id: &str, at: Timestamp) -> Incoming {
        let mut props = serde_json::Map::new();
        props.insert("url".into(), "https://x.example/pricing".into());
        Incoming::Contact(Event {
            id: Some(id.into()),
            contact: contact.into(),
            kind: "page_visit".into(),
            at,
            channel: None,
            props,
        })
    }

    /// The pricing-page calls in `id`'s outbox rows.
    fn pricing_calls(store: &dyn Store, id: &str) -> usize {
        store
            .outbox_rows(None, 1000)
            .expect("outbox")
            .iter()
            .filter(|r| r.contact == id && r.followup == "pricing_visit_call")
            .count()
    }

    #[test]
    fn a_call_outcome_arriving_late_is_counted_although_the_memo_had_passed_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(dir.path());
        let store = crate::adapters::sqlite::open(&config).expect("store");
        // The planner's memo is internal: the test looks at the file.
        let raw = rusqlite::Connection::open(config.store_path()).expect("raw");
        let now = t("2026-11-20T09:00:00Z");
        let contacts = prospects(&["p", "q", "o"]);
        store.upsert_contacts(&contacts).expect("contacts");
        // Four unsuccessful calls a month ago: one more stops calls (ARRÊTÉ).
        let calls: Vec<Incoming> = ["p", "q"]
            .iter()
            .flat_map(|c| {
                (0..4).map(move |i| {
                    call_event(
                        c,
                        &format!("{c}-call-{i}"),
                        now - chrono::Duration::days(30 - i),
                        "NRP",
                    )
                })
            })
            .collect();
        store.append_events(&calls).expect("calls");
        run(&*store, &config, now, false).expect("first pass");
        let memo_of = |store: &dyn Store, id: &str| {
            let key = store.contact_key(id).expect("key").expect("known");
            let (upto, bytes): (i64, Vec<u8>) = raw
                .query_row(
                    "SELECT upto, memo FROM plan_memo WHERE contact = ?1",
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("memo stored");
            let upto = chrono::DateTime::from_timestamp_micros(upto).expect("instant");
            HistoryMemo::decode(upto, &bytes).expect("decodes")
        };
        let before = memo_of(&*store, "p");
        // Older events that change nothing still move the memo past them,
        // so that later passes do not read them again.
        let open = Incoming::Contact(Event {
            id: Some("o-open".into()),
            contact: "o".into(),
            kind: "email_open".into(),
            at: now - chrono::Duration::days(30),
            channel: None,
            props: serde_json::Map::new(),
        });
        store.append_events(&[open]).expect("open");
        run(&*store, &config, now, true).expect("full pass");
        assert_eq!(memo_of(&*store, "o").upto, now - chrono::Duration::days(7));
        assert_eq!(before.calls, CallStatus::Open { unsuccessful: 4 });

        // The fifth unsuccessful call is imported late, dated before the
        // memo's edge; then both visit the pricing page.
        let later = now + chrono::Duration::hours(1);
        let late = call_event("p", "p-call-4", now - chrono::Duration::days(20), "NRP");
        assert!(now - chrono::Duration::days(20) < before.upto);
        store
            .append_events(&[late, pricing_visit("p", later), pricing_visit("q", later)])
            .expect("events");
        run(&*store, &config, later, false).expect("incremental pass");

        assert_eq!(memo_of(&*store, "p").calls, CallStatus::Stopped);
        let calls_planned = |id: &str| pricing_calls(&*store, id);
        assert_eq!(
            calls_planned("q"),
            1,
            "still open: the visit asks for a call"
        );
        assert_eq!(calls_planned("p"), 0, "stopped: no more calls");

        // Erasing a contact erases what the planner derived from its history.
        let key = store.contact_key("p").expect("key").expect("known");
        assert!(store.erase_contact("p").expect("erase"));
        let left: i64 = raw
            .query_row(
                "SELECT count(*) FROM plan_memo WHERE contact = ?1",
                [key],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(left, 0);
    }

    /// A pass at a scheduled tick's instant reads a visit stamped a little
    /// later (it arrived while the pass ran): the visit is behind the
    /// pass's mark, so the contact wakes at the visit's instant and the
    /// next pass plans its call.
    #[test]
    fn a_visit_stamped_after_a_pass_instant_is_planned_by_the_next_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(dir.path());
        let store = crate::adapters::sqlite::open(&config).expect("store");
        let tick = t("2026-11-20T09:00:00Z");
        store.upsert_contacts(&prospects(&["b"])).expect("contacts");
        let visit = tick + chrono::Duration::milliseconds(500);
        store
            .append_events(&[pricing_visit("b", visit)])
            .expect("visit");
        let calls = || pricing_calls(&*store, "b");
        run(&*store, &config, tick, false).expect("pass at the tick");
        assert_eq!(calls(), 0, "the visit comes after the pass's instant");
        let reaction = tick + chrono::Duration::seconds(1);
        let report = run(&*store, &config, reaction, false).expect("next pass");
        assert_eq!(report.examined, 1, "woken at the visit's instant");
        assert_eq!(calls(), 1, "the visit asks for a call");
    }

    /// The store reads a run of consecutive keys (a full pass) as a range
    /// and other keys as a list: both must hand over the same inputs.
    #[test]
    fn contacts_read_as_a_range_or_as_a_list_come_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(dir.path());
        let store = crate::adapters::sqlite::open(&config).expect("store");
        let now = t("2026-11-20T09:00:00Z");
        let ids = ["a", "b", "c", "d", "e", "f"];
        let contacts = prospects(&ids);
        store.upsert_contacts(&contacts).expect("contacts");
        // Old calls (folded into memos), recent visits (triggers), and a
        // contact with nothing.
        let events: Vec<Incoming> = ids[..5]
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                let days = i64::try_from(i).expect("small");
                [
                    call_event(
                        c,
                        &format!("{c}-old"),
                        now - chrono::Duration::days(40 + days),
                        "NRP",
                    ),
                    pricing_visit(c, now - chrono::Duration::hours(1 + days)),
                ]
            })
            .collect();
        store.append_events(&events).expect("events");
        crate::pipeline::rescore::rescore(&*store, &config, now, true).expect("rescore");
        run(&*store, &config, now, false).expect("first pass");
        // A day later: a call that left the recent window since, and a
        // late one already inside the memo (read only if distrusted).
        let later = now + chrono::Duration::days(1);
        let planner = Planner::new(&config, &[]).expect("planner");
        let aged = planner.recent_from(now) + chrono::Duration::hours(12);
        let late = call_event("c", "c-late", now - chrono::Duration::days(20), "RAPP");
        store
            .append_events(&[call_event("e", "e-aged", aged, "RAPP"), late])
            .expect("more events");

        let keys: Vec<i64> = ids
            .iter()
            .map(|id| store.contact_key(id).expect("key").expect("known"))
            .collect();
        assert!(keys.windows(2).all(|w| w[1] == w[0] + 1), "{keys:?}");
        // Every memo trusted but that of "c"; every score change read.
        let c = keys[2];
        let trusted = |key: i64, upto: Timestamp, bytes: &[u8]| {
            (key != c)
                .then(|| HistoryMemo::decode(upto, bytes))
                .flatten()
        };
        let companies = CompanyCache::default();
        let read = PlanRead {
            changes_since: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            ..planner.read(later, &trusted, &companies)
        };
        let range = store.plan_inputs(&keys, &read).expect("range");
        let mut listed = Vec::new();
        for part in [[keys[0], keys[2], keys[4]], [keys[1], keys[3], keys[5]]] {
            listed.extend(store.plan_inputs(&part, &read).expect("list"));
        }
        listed.sort_by_key(|i| i.key);
        assert_eq!(format!("{range:?}"), format!("{listed:?}"));
        // Every part of an input was read.
        assert_eq!(range.len(), ids.len());
        assert!(range.iter().any(|i| i.memo.is_some()));
        assert!(range.iter().any(|i| i.memo.is_none() && i.older.len() > 1));
        assert!(range.iter().any(|i| !i.recent.is_empty()));
        assert!(range.iter().any(|i| !i.older.is_empty()));
        assert!(range.iter().any(|i| !i.rows.is_empty()));
        assert!(range.iter().any(|i| i.score.is_some()));
    }

    #[test]
    fn a_workers_reader_keeps_one_snapshot_for_a_while_and_leaves_none_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(dir.path());
        let store = crate::adapters::sqlite::open(&config).expect("store");
        let now = t("2026-11-20T09:00:00Z");
        store
            .upsert_contacts(&prospects(&["a", "b"]))
            .expect("contacts");
        store
            .append_events(&[pricing_visit("a", now - chrono::Duration::hours(2))])
            .expect("events");
        crate::pipeline::rescore::rescore(&*store, &config, now, true).expect("rescore");
        run(&*store, &config, now, false).expect("first pass");
        let key = |id: &str| store.contact_key(id).expect("key").expect("known");
        let (a, b) = (key("a"), key("b"));
        let planner = Planner::new(&config, &[]).expect("planner");
        let trusted = |_: i64, upto: Timestamp, bytes: &[u8]| HistoryMemo::decode(upto, bytes);
        let companies = CompanyCache::default();
        let read = planner.read(now, &trusted, &companies);
        let recent =
            |inputs: Vec<PlanInput>| -> usize { inputs.iter().map(|i| i.recent.len()).sum() };

        let mut reader = store.plan_reader(false).expect("reader");
        assert_eq!(reader.plan_inputs(&[a], &read).expect("a").len(), 1);
        // Written after the reader's first batch: its later batches read
        // the store as it was then.
        let visit = pricing_visit_id("b", "visit-b-2", now - chrono::Duration::hours(1));
        store.append_events(&[visit]).expect("b's visit");
        assert_eq!(recent(reader.plan_inputs(&[b], &read).expect("b")), 0);
        // Every other read sees it: the reader holds its own connection.
        assert_eq!(recent(store.plan_inputs(&[b], &read).expect("b")), 1);
        // An old snapshot is renewed.
        std::thread::sleep(crate::adapters::sqlite::PLAN_SNAPSHOT + Duration::from_millis(50));
        assert_eq!(recent(reader.plan_inputs(&[b], &read).expect("b")), 1);
        drop(reader);
        // Its connection went back to the pool without a transaction open:
        // a write and the pooled reads after it agree.
        let visit = pricing_visit_id("a", "visit-a-2", now - chrono::Duration::minutes(30));
        store.append_events(&[visit]).expect("a's visit");
        for _ in 0..4 {
            assert_eq!(recent(store.plan_inputs(&[a], &read).expect("a")), 2);
        }
    }

    #[test]
    fn a_pass_finishing_after_another_that_started_with_it_keeps_the_lower_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::adapters::sqlite::open(&config_in(dir.path())).expect("store");
        let finish = |seen, reached| {
            let mark = PassMark {
                key: META_EVENTS,
                seen,
                reached,
            };
            store.finish_pass(&[mark], &[]).expect("finish");
            store.meta(META_EVENTS).expect("meta")
        };
        assert_eq!(finish(None, 100).as_deref(), Some("100"));
        // Two passes start from 100; the one that read more finishes first.
        assert_eq!(finish(Some(100), 120).as_deref(), Some("120"));
        // The other one may have missed events 111 to 120: they stay new.
        assert_eq!(finish(Some(100), 110).as_deref(), Some("110"));
        assert_eq!(finish(Some(110), 130).as_deref(), Some("130"));
    }
}
