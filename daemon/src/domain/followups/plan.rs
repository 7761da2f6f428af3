//! Planning: from one contact's data and an instant to the follow-ups due.
//! Pure: what was planned before comes in as plain data ([`PlanState`]), so
//! the same inputs always give the same plan and re-planning is safe.

use super::calls::CallStatus;
use super::config::{
    CALLBACK, Callback, CompiledFollowups, FollowupsError, Nurture, StepFrom, TriggerOn,
};
use crate::core::condition::{Condition, ConditionConfig, Scope, Standing, Subject};
use crate::core::config::path::{Issues, KeyPath};
use crate::core::model::{Company, Contact, Event, FollowUpKind, Timestamp};
pub use crate::domain::outbox::Occurrence;
use crate::domain::outbox::{NewSend, Payload, idempotency_key};
use crate::domain::scoring::ScoreChange;
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A broadcast (our own news: trade show, release, award), created at run
/// time and sent to a segment whatever the contacts' temperature.
#[derive(Clone, Debug)]
pub struct Broadcast {
    pub id: String,
    pub name: String,
    pub segment: Condition,
    pub channel: String,
    pub template: String,
    /// Sends go out from `start` and not at or after `end`.
    pub start: Timestamp,
    pub end: Timestamp,
    /// Overrides the event-driven priority.
    pub priority: Option<u32>,
    /// Transactional (see [`super::config::Exemption`]).
    pub exempt: bool,
}

/// A broadcast as written by a user (API, command line), before its segment
/// is compiled.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BroadcastSpec {
    pub id: String,
    pub name: String,
    pub segment: ConditionConfig,
    pub channel: String,
    pub template: String,
    pub start: Timestamp,
    pub end: Timestamp,
    #[serde(default)]
    pub priority: Option<u32>,
    /// Transactional (a service notice to every customer): see
    /// [`super::config::Exemption`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exempt: bool,
}

impl BroadcastSpec {
    pub fn compile(&self) -> Result<Broadcast, FollowupsError> {
        let mut issues = Issues::default();
        let at = KeyPath::root();
        if self.id.trim().is_empty() {
            issues.push(at.key("id"), "an id is required");
        }
        if self.end <= self.start {
            issues.push(at.key("end"), "must be after `start`");
        }
        let segment = self
            .segment
            .compile(&at.key("segment"), Scope::SEGMENT, &mut issues);
        match segment {
            Some(segment) if issues.is_empty() => Ok(Broadcast {
                id: self.id.clone(),
                name: self.name.clone(),
                segment,
                channel: self.channel.clone(),
                template: self.template.clone(),
                start: self.start,
                end: self.end,
                priority: self.priority,
                exempt: self.exempt,
            }),
            _ => Err(FollowupsError::from_issues(&issues)),
        }
    }
}

/// A follow-up planned earlier for this contact, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastPlan {
    pub followup: String,
    /// With the name, tells a broadcast from a nurture of the same name.
    pub kind: FollowUpKind,
    /// The occurrence's instant: enrolment for nurture steps, the signal
    /// for triggers, the planning instant for broadcasts.
    pub at: Timestamp,
    pub due: Timestamp,
}

/// What earlier plans left, keyed by outbox idempotency key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanState {
    pub planned: BTreeMap<String, PastPlan>,
}

impl PlanState {
    /// Records what a plan produced, so the next plan does not repeat it.
    pub fn record(&mut self, planned: &[Planned]) {
        for p in planned {
            self.planned.insert(
                p.idem_key.clone(),
                PastPlan {
                    followup: p.followup.clone(),
                    kind: p.kind,
                    at: p.occurrence.at(),
                    due: p.due,
                },
            );
        }
    }

    fn earliest(&self, followup: &str) -> Option<Timestamp> {
        self.planned
            .values()
            .filter(|p| p.followup == followup && p.kind == FollowUpKind::Systematic)
            .map(|p| p.at)
            .min()
    }

    fn instants<'s>(
        &'s self,
        followup: &'s str,
        kind: FollowUpKind,
    ) -> impl Iterator<Item = Timestamp> + 's {
        self.planned
            .values()
            .filter(move |p| p.followup == followup && p.kind == kind)
            .map(|p| p.at)
    }
}

/// Everything the planner needs to know about one contact.
#[derive(Clone, Copy, Debug)]
pub struct ContactView<'a> {
    pub contact: &'a Contact,
    pub company: Option<&'a Company>,
    /// Oldest first: the recent window at least (triggers look there).
    pub events: &'a [Event],
    /// The last instants of event types in older history, sorted by type.
    pub earlier: &'a [(String, Timestamp)],
    /// Where calls have left the prospect, over the whole history.
    pub calls: CallStatus,
    /// Look-backs are measured from here: the previous planning, or now.
    pub since: Timestamp,
    /// The band of the current score card; `None` when not scored yet.
    pub band: Option<&'a str>,
    /// The current score, in points; `None` when not scored yet.
    pub score: Option<f64>,
    /// The stored prospect status; `None` reads as FROID (nothing set it).
    pub prospect: Option<&'a str>,
    /// Recent score changes, any order.
    pub changes: &'a [ScoreChange],
    pub state: &'a PlanState,
}

impl<'a> ContactView<'a> {
    /// What follow-up conditions read about this contact at `now`.
    pub fn subject(&self, now: Timestamp) -> Subject<'a> {
        Subject::new(self.contact, self.company, self.events, now)
            .with_earlier(self.earlier)
            .with_standing(Standing {
                band: self.band,
                score: self.score,
                call: Some(self.calls.name()),
                prospect: Some(self.prospect.unwrap_or("FROID")),
            })
    }
}

/// One send to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub contact: String,
    /// The contact's owner: call tasks go to them.
    pub owner: Option<String>,
    pub followup: String,
    pub kind: FollowUpKind,
    pub occurrence: Occurrence,
    pub channel: String,
    pub template: String,
    pub priority: u32,
    pub due: Timestamp,
    /// Triggers with `within`: the action must be done by then.
    pub deadline: Option<Timestamp>,
    /// When this occurrence was first planned: deferrals count from there.
    pub first_planned: Timestamp,
    pub idem_key: String,
    /// Transactional: passes fatigue, caps and the budget (not the windows).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exempt: bool,
}

impl Planned {
    /// The outbox row to insert for this follow-up.
    pub fn to_new_send(&self) -> NewSend {
        NewSend {
            idem_key: self.idem_key.clone(),
            contact: self.contact.clone(),
            followup: self.followup.clone(),
            kind: self.kind,
            priority: i32::try_from(self.priority).unwrap_or(i32::MAX),
            channel: self.channel.clone(),
            due_at: self.due,
            payload: Payload {
                deadline: self.deadline,
                exempt: self.exempt,
                occurrence: Some(self.occurrence.clone()),
                owner: self.owner.clone(),
                template: Some(self.template.clone()),
            },
        }
    }
}

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The follow-ups of one contact that are due by `now` plus the arbitration
/// window and were not planned before (by key in `view.state`). Call
/// follow-ups are left out once the call history says stopped or lost.
pub fn plan(
    followups: &CompiledFollowups,
    view: &ContactView<'_>,
    broadcasts: &[Broadcast],
    now: Timestamp,
) -> Vec<Planned> {
    let subject = view.subject(now);
    let horizon = now + followups.arbitration.window.0;
    let priorities = followups.priorities;
    let calls = view.calls;
    let calls_open = calls.allows_calls();
    // A booked meeting (GAGNÉ) hands the prospect to sales: out of nurture.
    let won = calls == CallStatus::Won;
    let mut out: Vec<Planned> = Vec::new();
    let push = |out: &mut Vec<Planned>, mut p: Planned| {
        if !calls_open && followups.call_channels.contains(&p.channel) {
            return;
        }
        if view.state.planned.contains_key(&p.idem_key)
            || out.iter().any(|o| o.idem_key == p.idem_key)
        {
            return;
        }
        p.first_planned = now;
        out.push(p);
    };
    let make = |followup: &str, kind, occurrence: Occurrence, channel: &str, template: &str| {
        let idem_key = idempotency_key(&view.contact.id, followup, &occurrence.key_part());
        Planned {
            contact: view.contact.id.clone(),
            owner: view.contact.owner.clone(),
            followup: followup.to_string(),
            kind,
            occurrence,
            channel: channel.to_string(),
            template: template.to_string(),
            priority: priorities.of(kind),
            due: now,
            deadline: None,
            first_planned: now,
            idem_key,
            exempt: false,
        }
    };
    let in_bands = |bands: &[String]| {
        bands.is_empty() || view.band.is_some_and(|b| bands.iter().any(|x| x == b))
    };

    // Systematic nurture.
    for n in &followups.nurture {
        if left(n, &subject, view, won) {
            continue;
        }
        let enrolled_at = match view.state.earliest(&n.name) {
            Some(at) => at,
            None => {
                let enters =
                    n.enrol.as_ref().is_none_or(|c| c.eval(&subject, None)) && in_bands(&n.bands);
                if !enters {
                    continue;
                }
                now
            }
        };
        let mut previous = enrolled_at;
        for (index, step) in n.steps.iter().enumerate() {
            let base = match step.from {
                StepFrom::Enrolment => enrolled_at,
                StepFrom::Previous => previous,
            };
            let occurrence = Occurrence::Step { index, enrolled_at };
            let mut p = make(
                &n.name,
                FollowUpKind::Systematic,
                occurrence,
                &step.channel,
                &step.template,
            );
            // A step planned before keeps its due instant.
            p.due = view
                .state
                .planned
                .get(&p.idem_key)
                .map_or(base + step.after.0, |past| past.due);
            previous = p.due;
            if p.due > horizon {
                break;
            }
            p.priority = step.priority.or(n.priority).unwrap_or(p.priority);
            p.exempt = step.exempt.holds(&subject, None);
            push(&mut out, p);
        }
    }

    // A company's business signals are kept on the company, not as the
    // contact's events: triggers see them as `business_signal` events with
    // `props.kind`, keyed by company, kind and instant.
    // Only signals recent enough for the widest look-back are built: most
    // of a company's signals are old, and each contact would rebuild them.
    let widest = followups.widest_lookback();
    let company_signals: Vec<Event> = view
        .company
        .map(|c| {
            c.signals
                .iter()
                .filter(|s| s.at <= now && s.at > view.since.min(now) - widest)
                .map(|s| {
                    let mut props = s.props.clone();
                    props.insert("kind".into(), s.kind.clone().into());
                    Event {
                        id: Some(format!("{}:{}:{}", c.id, s.kind, rfc3339(s.at))),
                        contact: view.contact.id.clone(),
                        kind: crate::core::model::event_types::BUSINESS_SIGNAL.into(),
                        at: s.at,
                        channel: None,
                        props,
                    }
                })
                .collect()
        })
        .unwrap_or_default();

    // Opportunistic triggers.
    for t in &followups.triggers {
        if t.segment.as_ref().is_some_and(|c| !c.eval(&subject, None)) {
            continue;
        }
        let recent = |at: Timestamp| at <= now && at > view.since.min(now) - t.lookback;
        let mut signals: Vec<(String, Timestamp, Option<&Event>)> = match &t.on {
            TriggerOn::Event { types, when } => view
                .events
                .iter()
                .chain(&company_signals)
                .filter(|e| recent(e.at) && types.contains(&e.kind))
                .filter(|e| when.as_ref().is_none_or(|c| c.eval(&subject, Some(e))))
                .map(|e| {
                    let signal = match &e.id {
                        Some(id) => format!("event:{id}"),
                        None => format!("event:{}:{}", e.kind, rfc3339(e.at)),
                    };
                    (signal, e.at, Some(e))
                })
                .collect(),
            TriggerOn::Change { on, to_band } => view
                .changes
                .iter()
                .filter(|c| recent(c.at) && on.matches(c.kind))
                .filter(|c| to_band.as_ref().is_none_or(|b| *b == c.to_band))
                .map(|c| {
                    (
                        format!("change:{}:{}", c.kind.as_str(), rfc3339(c.at)),
                        c.at,
                        None,
                    )
                })
                .collect(),
        };
        signals.sort_by_key(|(_, at, _)| *at);
        let mut fired: Vec<Timestamp> = view.state.instants(&t.name, t.kind).collect();
        for (signal, at, event) in signals {
            // Cooling down: skipped before its key is computed.
            if fired.iter().any(|f| (at - *f).abs() < t.cooldown) {
                continue;
            }
            let mut p = make(
                &t.name,
                t.kind,
                Occurrence::Signal { signal, at },
                &t.action.channel,
                &t.action.template,
            );
            if view.state.planned.contains_key(&p.idem_key) {
                continue;
            }
            p.due = at;
            p.deadline = t.action.within.map(|d| at + d.0);
            p.priority = t.priority.unwrap_or(p.priority);
            p.exempt = t.exempt.holds(&subject, event);
            fired.push(at);
            push(&mut out, p);
        }
    }

    // Call-backs (seed 003: RAPP, PISTE, PROJET): a call task on the agreed
    // date, unless a later call or a meeting came since.
    if let Some(cb) = &followups.callback
        && let Some((call, at)) = callback_due(followups, cb, view, now)
    {
        let signal = match &call.id {
            Some(id) => format!("callback:{id}"),
            None => format!("callback:{}", rfc3339(call.at)),
        };
        let mut p = make(
            CALLBACK,
            FollowUpKind::Opportunistic,
            Occurrence::Signal {
                signal,
                at: call.at,
            },
            &cb.channel,
            &cb.template,
        );
        p.due = at;
        p.priority = cb.priority.unwrap_or(priorities.event);
        let before = out.len();
        push(&mut out, p);
        // Deferrals count from the agreed date, not from the call.
        if let Some(p) = out.get_mut(before) {
            p.first_planned = at.max(now);
        }
    }

    // Event-driven broadcasts: whatever the temperature.
    for b in broadcasts {
        if b.start > horizon || now >= b.end || !b.segment.eval(&subject, None) {
            continue;
        }
        let key_probe = idempotency_key(&view.contact.id, &b.name, &format!("broadcast:{}", b.id));
        let at = view.state.planned.get(&key_probe).map_or(now, |p| p.at);
        let mut p = make(
            &b.name,
            FollowUpKind::Event,
            Occurrence::Broadcast {
                id: b.id.clone(),
                at,
            },
            &b.channel,
            &b.template,
        );
        p.due = b.start.max(now);
        p.priority = b.priority.unwrap_or(p.priority);
        p.exempt = b.exempt;
        push(&mut out, p);
    }
    out
}

/// The last call with an outcome, or meeting, in the call-back look-back
/// before `now`: it supersedes the call-backs asked by earlier calls. Only
/// recent events count, so that a planner reading recent history and one
/// reading all of it agree; a call is planned when it arrives.
pub fn last_contact<'e>(
    followups: &CompiledFollowups,
    events: &'e [Event],
    since: Timestamp,
    now: Timestamp,
) -> Option<&'e Event> {
    let call = followups.calls.event_type();
    let from = since.min(now) - followups.callback_lookback();
    events
        .iter()
        .rev()
        .filter(|e| e.at <= now)
        .take_while(|e| e.at > from)
        .find(|e| {
            e.kind == crate::core::model::event_types::MEETING
                || (e.kind == call && e.props.get("outcome").is_some_and(|o| o.is_string()))
        })
}

/// The call asking for a call-back and the agreed instant, when the last
/// call of `view` asks for one: `props.callback_at` (RFC 3339, or a date:
/// midnight in the contact's time zone), else the code's delay.
fn callback_due<'e>(
    followups: &CompiledFollowups,
    cb: &Callback,
    view: &ContactView<'e>,
    now: Timestamp,
) -> Option<(&'e Event, Timestamp)> {
    let call = last_contact(followups, view.events, view.since, now)?;
    if call.kind != followups.calls.event_type() {
        return None;
    }
    let code = call.props.get("outcome")?.as_str()?.trim().to_uppercase();
    let delay = cb.codes.get(&code)?;
    let agreed = call
        .props
        .get("callback_at")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| agreed_instant(s, view.contact.timezone));
    let at = agreed.or_else(|| delay.map(|d| call.at + d))?;
    (at > call.at).then_some((call, at))
}

fn agreed_instant(s: &str, tz: Option<chrono_tz::Tz>) -> Option<Timestamp> {
    use chrono::TimeZone;
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let midnight = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)?;
    match tz {
        Some(tz) => tz
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc)),
        None => Some(midnight.and_utc()),
    }
}

/// The nurture sequences `view`'s contact was enrolled in and has left (out
/// of the segment, exit condition met, or an exit band): their pending
/// steps are dropped.
pub fn leaving<'f>(
    followups: &'f CompiledFollowups,
    view: &ContactView<'_>,
    now: Timestamp,
) -> Vec<&'f str> {
    let subject = view.subject(now);
    let won = view.calls == CallStatus::Won;
    followups
        .nurture
        .iter()
        .filter(|n| view.state.earliest(&n.name).is_some() && left(n, &subject, view, won))
        .map(|n| n.name.as_str())
        .collect()
}

/// Out of the segment, exit condition met, an exit band, or handed to sales.
fn left(n: &Nurture, subject: &Subject<'_>, view: &ContactView<'_>, won: bool) -> bool {
    won || !n.segment.eval(subject, None)
        || n.exit.as_ref().is_some_and(|c| c.eval(subject, None))
        || view
            .band
            .is_some_and(|b| n.exit_bands.iter().any(|x| x == b))
}

/// When this contact must be planned again although nothing happens to it:
/// the next nurture step or broadcast that falls inside the arbitration
/// window later on. `view.state` must include what was just planned. New
/// events and score changes wake the contact anyway.
pub fn next_wake(
    followups: &CompiledFollowups,
    view: &ContactView<'_>,
    broadcasts: &[Broadcast],
    now: Timestamp,
) -> Option<Timestamp> {
    let window = followups.arbitration.window.0;
    let horizon = now + window;
    let subject = view.subject(now);
    let won = view.calls == CallStatus::Won;
    let mut wake: Option<Timestamp> = None;
    let mut consider = |due: Timestamp| {
        if due > horizon {
            let at = due - window;
            wake = Some(wake.map_or(at, |w: Timestamp| w.min(at)));
        }
    };
    for n in &followups.nurture {
        let Some(enrolled_at) = view.state.earliest(&n.name) else {
            continue;
        };
        if left(n, &subject, view, won) {
            continue;
        }
        let mut previous = enrolled_at;
        for (index, step) in n.steps.iter().enumerate() {
            let base = match step.from {
                StepFrom::Enrolment => enrolled_at,
                StepFrom::Previous => previous,
            };
            let key = idempotency_key(
                &view.contact.id,
                &n.name,
                &Occurrence::Step { index, enrolled_at }.key_part(),
            );
            match view.state.planned.get(&key) {
                Some(past) => previous = past.due,
                None => {
                    consider(base + step.after.0);
                    break;
                }
            }
        }
    }
    for b in broadcasts {
        if b.start > horizon && b.segment.eval(&subject, None) {
            consider(b.start);
        }
    }
    wake
}
