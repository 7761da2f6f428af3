//! The guard in front of the outbox: turns its decision for one pending
//! send into what the store records in the claim transaction. Pure: plain
//! data in ([`Candidate`]), an [`Admission`] out.

use super::guard::{Decision, Guard, Proposal, Reason, Verdict};
use super::state::ContactState;
use crate::core::config::ChannelConfig;
use crate::core::config::duration::Duration;
use crate::core::model::{Contact, Event, FollowUpKind, Timestamp};
use serde::Serialize;
use std::collections::BTreeMap;

/// A pending send put to the guard at claim time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub channel: &'a str,
    pub kind: FollowUpKind,
    pub priority: i32,
    /// Transactional: passes fatigue, caps and the budget (not the windows).
    pub exempt: bool,
    /// When it was first due: the maximum deferral counts from here.
    pub first_due: Timestamp,
}

/// The guard's answer for one pending send, as the store records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    pub verdict: AdmissionVerdict,
    /// Logged as they are (JSON, one object a reason, tagged by `rule`).
    pub reasons: Vec<Why>,
}

/// Why a follow-up was decided as it was: a rule of the guard, the
/// arbitration giving up on it, or what stopped its claim before the guard.
/// Serialized as the inner reason, so that the log reads the same whichever
/// step decided.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Why {
    Guard(Reason),
    Dropped(DropReason),
    Claim(ClaimStop),
}

/// Why a follow-up was given up: the arbitration's rule, recorded by the
/// claim as well.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum DropReason {
    /// It could not pass within `max_deferral` of its first planning;
    /// `until` is the earliest instant it would have passed, if any.
    MaxDeferral {
        first_planned: Timestamp,
        max_deferral: Duration,
        until: Option<Timestamp>,
    },
}

/// What stops a claim before the guard decides.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ClaimStop {
    /// The row names a channel the configuration no longer has.
    UnknownChannel { channel: String },
    /// The contact's stored history could not be replayed.
    History { error: String },
    /// The channel's plugin refused its settings: the send waits.
    ChannelNotConfigured { channel: String, detail: String },
}

impl Why {
    /// The rule's name, as in the log (`fatigue`, `cap`, `budget` …).
    pub fn rule(&self) -> &'static str {
        match self {
            Why::Guard(r) => r.rule(),
            Why::Dropped(DropReason::MaxDeferral { .. }) => "max_deferral",
            Why::Claim(ClaimStop::UnknownChannel { .. }) => "unknown_channel",
            Why::Claim(ClaimStop::History { .. }) => "history",
            Why::Claim(ClaimStop::ChannelNotConfigured { .. }) => "channel_not_configured",
        }
    }
}

impl From<Reason> for Why {
    fn from(r: Reason) -> Self {
        Why::Guard(r)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AdmissionVerdict {
    /// Claim the row and reserve a send recorded as `event_type`.
    Allow {
        event_type: String,
    },
    Defer {
        until: Timestamp,
    },
    Block,
}

impl AdmissionVerdict {
    pub fn verdict(&self) -> Verdict {
        match self {
            AdmissionVerdict::Allow { .. } => Verdict::Allow,
            AdmissionVerdict::Defer { .. } => Verdict::Defer,
            AdmissionVerdict::Block => Verdict::Block,
        }
    }
    /// When a deferred send is due again.
    pub fn until(&self) -> Option<Timestamp> {
        match self {
            AdmissionVerdict::Defer { until } => Some(*until),
            _ => None,
        }
    }
}

/// Decides `send` for `contact`, whose events and in-flight reservations
/// are `weighs` (oldest first).
pub fn admit(
    guard: &Guard,
    channels: &BTreeMap<String, ChannelConfig>,
    send: &Candidate<'_>,
    contact: &Contact,
    weighs: &[Event],
    now: Timestamp,
) -> Admission {
    let Some(channel) = guard.channel(send.channel) else {
        return unknown_channel(send.channel);
    };
    let Some(event_type) = channels.get(send.channel).map(|c| c.event.clone()) else {
        return unknown_channel(send.channel);
    };
    // Only what happened by `now` weighs (an event imported with a later
    // instant counts from then on).
    let state = match ContactState::replay(guard, contact, weighs.iter().filter(|e| e.at <= now)) {
        Ok(s) => s,
        Err(e) => {
            return block(ClaimStop::History {
                error: e.to_string(),
            });
        }
    };
    let proposal = Proposal {
        channel,
        kind: send.kind,
        priority: u32::try_from(send.priority).ok(),
        exempt: send.exempt,
        first_proposed: Some(send.first_due),
    };
    let decision = guard.decide(&proposal, &state, now);
    Admission {
        verdict: verdict(&decision, event_type),
        reasons: decision.reasons.into_iter().map(Why::Guard).collect(),
    }
}

fn unknown_channel(channel: &str) -> Admission {
    block(ClaimStop::UnknownChannel {
        channel: channel.to_owned(),
    })
}

fn verdict(decision: &Decision, event_type: String) -> AdmissionVerdict {
    match (decision.decision, decision.until) {
        (Verdict::Allow, _) => AdmissionVerdict::Allow { event_type },
        (Verdict::Defer, Some(until)) => AdmissionVerdict::Defer { until },
        (Verdict::Defer, None) | (Verdict::Drop | Verdict::Block, _) => AdmissionVerdict::Block,
    }
}

fn block(stop: ClaimStop) -> Admission {
    Admission {
        verdict: AdmissionVerdict::Block,
        reasons: vec![Why::Claim(stop)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored reasons' `rule` tag is what [`Why::rule`] says: the
    /// dashboard's decision counts are kept from either (the SQLite
    /// store's triggers read the tag, its batches the method).
    #[test]
    fn a_reason_is_stored_under_its_rule() {
        let at: Timestamp = "2026-11-20T12:00:00Z".parse().expect("instant");
        let whys = [
            Why::Guard(Reason::UnknownChannel { channel: 3 }),
            Why::Guard(Reason::DoNotContact {
                channel: "email".into(),
            }),
            Why::Dropped(DropReason::MaxDeferral {
                first_planned: at,
                max_deferral: Duration(chrono::Duration::days(3)),
                until: None,
            }),
            Why::Claim(ClaimStop::UnknownChannel {
                channel: "fax".into(),
            }),
            Why::Claim(ClaimStop::History {
                error: "bad".into(),
            }),
            Why::Claim(ClaimStop::ChannelNotConfigured {
                channel: "email".into(),
                detail: "no host".into(),
            }),
        ];
        for why in whys {
            let json = serde_json::to_value(&why).expect("json");
            assert_eq!(json["rule"], why.rule(), "{json}");
        }
    }
}
