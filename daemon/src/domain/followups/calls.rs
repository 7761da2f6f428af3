//! Call outcomes (seed 003): a prospect's status from its call history.
//! Sales must know who never to call again, so the planner stops call
//! follow-ups once a prospect is stopped (too many unsuccessful calls) or
//! lost (refusal, out of target).

use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath};
use crate::core::model::{Event, event_types as et};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Call outcomes (seed 003): which `props.outcome` codes win, lose or count
/// as unsuccessful, and after how many unsuccessful calls to stop.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct CallsConfig {
    /// The event type of an outbound call.
    pub event: String,
    /// ARRÊTÉ after this many unsuccessful calls in a row.
    pub stop_after: u32,
    pub won: Vec<String>,
    pub lost: Vec<String>,
    pub unsuccessful: Vec<String>,
    /// Channels that make calls: no follow-up on them once stopped or
    /// lost. None by default, since channel names are the user's.
    pub channels: Vec<String>,
    /// Outcomes asking for a call-back on an agreed date (`props.callback_at`,
    /// or `callback_delay` after the call): RAPP, PISTE, PROJET.
    pub callback: Vec<String>,
    /// Per outcome code, when to call back if the call names no date.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub callback_delay: BTreeMap<String, Duration>,
    /// The call task's channel and template; no call-backs without them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_template: Option<String>,
    /// Defaults to the event-driven priority: above systematic nurture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_priority: Option<u32>,
}

impl Default for CallsConfig {
    fn default() -> Self {
        let s = |l: &[&str]| l.iter().map(|c| (*c).to_string()).collect();
        Self {
            event: et::CALL.into(),
            stop_after: 5,
            won: s(&["RDV"]),
            lost: s(&["REFUS", "HORS CIBLE"]),
            unsuccessful: s(&["NRP", "OCC", "REFUS COMM", "ERR"]),
            channels: Vec::new(),
            callback: s(&["RAPP", "PISTE", "PROJET"]),
            callback_delay: BTreeMap::new(),
            callback_channel: None,
            callback_template: None,
            callback_priority: None,
        }
    }
}

/// Where calls have left a prospect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CallStatus {
    /// Still worth calling; `unsuccessful` calls in a row so far.
    Open { unsuccessful: u32 },
    /// GAGNÉ: a meeting was booked.
    Won,
    /// ARRÊTÉ: too many unsuccessful calls in a row.
    Stopped,
    /// PERDU: refused or out of target.
    Lost,
}

impl CallStatus {
    /// The name conditions compare (`call.status`).
    pub fn name(self) -> &'static str {
        match self {
            CallStatus::Open { .. } => "open",
            CallStatus::Won => "won",
            CallStatus::Stopped => "stopped",
            CallStatus::Lost => "lost",
        }
    }

    /// Whether calling the prospect again makes sense.
    pub fn allows_calls(self) -> bool {
        matches!(self, CallStatus::Open { .. } | CallStatus::Won)
    }
}

/// The compiled outcome codes (upper-cased, trimmed).
#[derive(Clone, Debug)]
pub struct CallOutcomes {
    event: String,
    stop_after: u32,
    won: BTreeSet<String>,
    lost: BTreeSet<String>,
    unsuccessful: BTreeSet<String>,
}

fn code(s: &str) -> String {
    s.trim().to_uppercase()
}

impl CallsConfig {
    pub(crate) fn compile(&self, at: &KeyPath, issues: &mut Issues) -> CallOutcomes {
        if self.event.trim().is_empty() {
            issues.push(at.key("event"), "name the event type of a call");
        }
        if self.stop_after == 0 {
            issues.push(at.key("stop_after"), "must be at least 1");
        }
        let mut seen = BTreeSet::new();
        let mut set = |key: &str, list: &[String], issues: &mut Issues| {
            let mut out = BTreeSet::new();
            for (i, c) in list.iter().enumerate() {
                let c = code(c);
                if c.is_empty() {
                    issues.push(at.key(key).index(i), "an outcome code cannot be empty");
                } else if !seen.insert(c.clone()) {
                    issues.push(
                        at.key(key).index(i),
                        format!("outcome `{c}` is listed twice"),
                    );
                }
                out.insert(c);
            }
            out
        };
        CallOutcomes {
            event: self.event.clone(),
            stop_after: self.stop_after,
            won: set("won", &self.won, issues),
            lost: set("lost", &self.lost, issues),
            unsuccessful: set("unsuccessful", &self.unsuccessful, issues),
        }
    }
}

impl CallOutcomes {
    /// The status after `events` (oldest first; other event types ignored).
    /// The latest decisive outcome wins: a meeting booked after a refusal
    /// is won. Outcomes that reached the person (RAPP, PISTE, PROJET, MAIL)
    /// restart the count of unsuccessful calls; once stopped, only a won or
    /// lost outcome changes the status.
    pub fn status(&self, events: &[Event]) -> CallStatus {
        events
            .iter()
            .fold(CallStatus::Open { unsuccessful: 0 }, |s, e| {
                self.after(s, e)
            })
    }

    /// The status once `event` is folded into `status`: a planner keeps the
    /// status of older history and folds only recent events.
    pub fn after(&self, status: CallStatus, event: &Event) -> CallStatus {
        if event.kind != self.event {
            return status;
        }
        let Some(outcome) = event.props.get("outcome").and_then(|v| v.as_str()) else {
            return status;
        };
        let outcome = code(outcome);
        if self.won.contains(&outcome) {
            CallStatus::Won
        } else if self.lost.contains(&outcome) {
            CallStatus::Lost
        } else {
            match status {
                CallStatus::Open { unsuccessful } if self.unsuccessful.contains(&outcome) => {
                    let n = unsuccessful.saturating_add(1);
                    if n >= self.stop_after {
                        CallStatus::Stopped
                    } else {
                        CallStatus::Open { unsuccessful: n }
                    }
                }
                CallStatus::Open { .. } => CallStatus::Open { unsuccessful: 0 },
                other => other,
            }
        }
    }

    /// The event type whose `props.outcome` moves the status.
    pub fn event_type(&self) -> &str {
        &self.event
    }
}
