//! The prospect status (seed 003) and the desk facts a scoring pass keeps
//! per contact, folded from its events so that reads never scan them.

use super::config::DeskConfig;
use crate::core::model::{Contact, Event, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where calls and meetings have left a prospect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProspectStatus {
    /// A meeting was obtained.
    #[serde(rename = "GAGNÉ")]
    Won,
    /// Interest and an agreed follow-up date: follow-up priority 1.
    #[serde(rename = "CHAUD")]
    Hot,
    /// Not now, call back: priority 2.
    #[serde(rename = "TIÈDE")]
    Warm,
    /// Never reached with interest (or never called).
    #[serde(rename = "FROID")]
    Cold,
    /// Too many unsuccessful calls in a row.
    #[serde(rename = "ARRÊTÉ")]
    Stopped,
    /// Refused or out of target.
    #[serde(rename = "PERDU")]
    Lost,
}

impl ProspectStatus {
    pub const ALL: [ProspectStatus; 6] = [
        ProspectStatus::Won,
        ProspectStatus::Hot,
        ProspectStatus::Warm,
        ProspectStatus::Cold,
        ProspectStatus::Stopped,
        ProspectStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProspectStatus::Won => "GAGNÉ",
            ProspectStatus::Hot => "CHAUD",
            ProspectStatus::Warm => "TIÈDE",
            ProspectStatus::Cold => "FROID",
            ProspectStatus::Stopped => "ARRÊTÉ",
            ProspectStatus::Lost => "PERDU",
        }
    }

    /// Reads a status as a user types it: accents and case optional,
    /// English names accepted (`won`, `hot`, `warm`, `cold`, `stopped`, `lost`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let plain: String = s
            .trim()
            .to_uppercase()
            .chars()
            .map(|c| match c {
                'É' | 'È' | 'Ê' => 'E',
                other => other,
            })
            .collect();
        Ok(match plain.as_str() {
            "GAGNE" | "WON" => ProspectStatus::Won,
            "CHAUD" | "HOT" => ProspectStatus::Hot,
            "TIEDE" | "WARM" => ProspectStatus::Warm,
            "FROID" | "COLD" => ProspectStatus::Cold,
            "ARRETE" | "STOPPED" => ProspectStatus::Stopped,
            "PERDU" | "LOST" => ProspectStatus::Lost,
            _ => {
                return Err(format!(
                    "unknown prospect status `{s}`; expected one of GAGNÉ, CHAUD, TIÈDE, FROID, ARRÊTÉ, PERDU"
                ));
            }
        })
    }

    /// Whether the call desk may call the prospect again.
    pub fn callable(self) -> bool {
        !matches!(self, ProspectStatus::Stopped | ProspectStatus::Lost)
    }
}

impl std::fmt::Display for ProspectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event that set a status.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetBy {
    #[serde(rename = "type")]
    pub kind: String,
    /// The call's result code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The event's id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A contact's prospect status with when and what set it (none for a
/// prospect still FROID by default).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatusView {
    pub status: ProspectStatus,
    pub since: Option<Timestamp>,
    pub set_by: Option<SetBy>,
}

impl Default for StatusView {
    fn default() -> Self {
        Self {
            status: ProspectStatus::Cold,
            since: None,
            set_by: None,
        }
    }
}

/// One event the desk keeps (calls, meetings, purchases, documentation,
/// email reactions carrying their send's key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeskEvent {
    pub at: Timestamp,
    pub kind: DeskKind,
    /// Call result code ('' otherwise).
    pub code: String,
    pub owner: String,
    /// The outbox key of the send reacted to ('' otherwise).
    pub key: String,
    /// A refusal's reason (`props.reason`, else `props.note`).
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeskKind {
    Call,
    Meeting,
    Purchase,
    Documentation,
    Open,
    Click,
    Unsubscribe,
}

impl DeskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeskKind::Call => "call",
            DeskKind::Meeting => "meeting",
            DeskKind::Purchase => "purchase",
            DeskKind::Documentation => "documentation",
            DeskKind::Open => "open",
            DeskKind::Click => "click",
            DeskKind::Unsubscribe => "unsubscribe",
        }
    }
}

/// What the desk keeps of one contact, written by the scoring pass.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeskRow {
    pub status: StatusView,
    pub calls: u32,
    pub last_call: Option<(Timestamp, String)>,
    pub callback_at: Option<Timestamp>,
    /// When documentation was last sent or downloaded.
    pub documentation_at: Option<Timestamp>,
    /// Why never to call again, besides the status (do-not-contact).
    pub do_not_call: Option<String>,
    pub owner: Option<String>,
    pub events: Vec<DeskEvent>,
}

/// `[calls]` and `[followups.calls]` compiled for the pass.
#[derive(Clone, Debug)]
pub struct DeskRules {
    pub config: DeskConfig,
    call_event: String,
    stop_after: u32,
    won: BTreeSet<String>,
    lost: BTreeSet<String>,
    unsuccessful: BTreeSet<String>,
    hot: BTreeSet<String>,
    warm: BTreeSet<String>,
    documentation: BTreeSet<String>,
    appointment: BTreeSet<String>,
    callback: BTreeMap<String, Option<chrono::Duration>>,
    /// Channels a do-not-contact entry on which stops calls.
    call_channels: BTreeSet<String>,
}

fn codes(list: &[String]) -> BTreeSet<String> {
    list.iter().map(|c| code(c)).collect()
}

/// A result code as compared: trimmed, upper-cased.
pub fn code(s: &str) -> String {
    s.trim().to_uppercase()
}

impl DeskRules {
    /// `desk` (`[calls]`) with the call rules of `[followups.calls]`; the
    /// channels served by the task plugin are call channels too.
    pub fn new(
        desk: &DeskConfig,
        calls: &crate::domain::followups::config::CallsConfig,
        task_channels: Vec<String>,
    ) -> Self {
        let mut call_channels: BTreeSet<String> = calls.channels.iter().cloned().collect();
        call_channels.extend(task_channels);
        call_channels.insert("phone".into());
        Self {
            config: desk.clone(),
            call_event: calls.event.clone(),
            stop_after: calls.stop_after.max(1),
            won: codes(&calls.won),
            lost: codes(&calls.lost),
            unsuccessful: codes(&calls.unsuccessful),
            hot: codes(&desk.hot),
            warm: codes(&desk.warm),
            documentation: codes(&desk.documentation),
            appointment: codes(&desk.appointment),
            callback: calls
                .callback
                .iter()
                .map(|c| {
                    let c = code(c);
                    let delay = calls.callback_delay.get(&c).map(|d| d.0);
                    (c, delay)
                })
                .collect(),
            call_channels,
        }
    }

    /// The rules as text, for the pass's fingerprint: a change of rules
    /// rebuilds every row.
    pub fn fingerprint(&self) -> String {
        format!(
            "{:?}{}{}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
            self.config.reached,
            self.call_event,
            self.stop_after,
            self.won,
            self.lost,
            self.unsuccessful,
            self.hot,
            self.warm,
            self.documentation,
            self.callback,
            self.call_channels
        ) + &format!(
            "{}{}{}{}{}{:?}",
            self.config.meeting_event,
            self.config.purchase_event,
            self.config.open_event,
            self.config.click_event,
            self.config.unsubscribe_event,
            self.config.documentation_events
        ) + &format!(
            // The campaign figures the pass keeps (version 1).
            "campaigns-1{:?}{:?}call-queue-1{:?}",
            self.appointment, self.config.conversion_window.0, self.config.hot_bands
        )
    }

    /// The status after `events` (oldest first). The latest decisive outcome
    /// wins (a meeting after a refusal is GAGNÉ); once GAGNÉ, ARRÊTÉ or
    /// PERDU, only a won or lost outcome, or a meeting, changes it. Calls
    /// that reached the person restart the count of unsuccessful calls.
    pub fn status(&self, events: &[Event]) -> StatusView {
        // The status and the event that set it (its position, its code):
        // the view is built once, at the end.
        let mut status = ProspectStatus::Cold;
        let mut set_by: Option<(usize, Option<String>)> = None;
        let mut unsuccessful = 0u32;
        for (i, e) in events.iter().enumerate() {
            if e.kind == self.config.meeting_event {
                (status, set_by) = (ProspectStatus::Won, Some((i, None)));
                continue;
            }
            let Some(c) = self.outcome(e) else {
                continue;
            };
            let sticky = matches!(
                status,
                ProspectStatus::Won | ProspectStatus::Stopped | ProspectStatus::Lost
            );
            let next = if self.won.contains(&c) {
                Some(ProspectStatus::Won)
            } else if self.lost.contains(&c) {
                Some(ProspectStatus::Lost)
            } else if sticky {
                None
            } else if self.unsuccessful.contains(&c) {
                unsuccessful = unsuccessful.saturating_add(1);
                (unsuccessful >= self.stop_after).then_some(ProspectStatus::Stopped)
            } else {
                unsuccessful = 0;
                if self.hot.contains(&c) {
                    Some(ProspectStatus::Hot)
                } else if self.warm.contains(&c) {
                    Some(ProspectStatus::Warm)
                } else {
                    None
                }
            };
            if let Some(next) = next {
                (status, set_by) = (next, Some((i, Some(c))));
            }
        }
        let Some((i, outcome)) = set_by else {
            return StatusView::default();
        };
        let e = &events[i];
        StatusView {
            status,
            since: Some(e.at),
            set_by: Some(SetBy {
                kind: e.kind.clone(),
                outcome,
                id: e.id.clone(),
            }),
        }
    }

    fn outcome(&self, e: &Event) -> Option<String> {
        if e.kind != self.call_event {
            return None;
        }
        e.props
            .get("outcome")
            .and_then(|v| v.as_str())
            .map(code)
            .filter(|c| !c.is_empty())
    }

    /// What the desk keeps of a contact; `None` when nothing concerns it
    /// (never called, no meeting, no reaction, no do-not-contact): such a
    /// contact reads as FROID, never called.
    pub fn row(&self, contact: &Contact, events: &[Event]) -> Option<DeskRow> {
        let c = &self.config;
        let do_not_call = contact
            .do_not_contact
            .iter()
            .find(|ch| self.call_channels.contains(*ch))
            .map(|ch| format!("do not contact on {ch}"));
        let mut out = DeskRow {
            status: self.status(events),
            calls: 0,
            last_call: None,
            callback_at: None,
            documentation_at: None,
            do_not_call,
            owner: contact.owner.clone(),
            events: Vec::new(),
        };
        let text = |e: &Event, k: &str| {
            e.props
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .unwrap_or_default()
        };
        for e in events {
            let mut push = |kind: DeskKind, code: String, key: String| {
                out.events.push(DeskEvent {
                    at: e.at,
                    kind,
                    code,
                    owner: String::new(),
                    key,
                    reason: String::new(),
                });
            };
            if let Some(code) = self.outcome(e) {
                out.calls += 1;
                out.last_call = Some((e.at, code.clone()));
                out.callback_at = self.callback.get(&code).and_then(|delay| {
                    e.props
                        .get("callback_at")
                        .and_then(|v| serde_json::from_value::<Timestamp>(v.clone()).ok())
                        .or_else(|| delay.and_then(|d| e.at.checked_add_signed(d)))
                });
                if self.documentation.contains(&code) {
                    out.documentation_at = Some(e.at);
                }
                let owner = Some(text(e, "owner"))
                    .filter(|o| !o.is_empty())
                    .or_else(|| contact.owner.clone())
                    .unwrap_or_default();
                let reason = Some(text(e, "reason"))
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| text(e, "note"));
                // An appointment is a meeting to the campaigns (never stored).
                if self.appointment.contains(&code) {
                    push(DeskKind::Meeting, code.clone(), String::new());
                }
                out.events.push(DeskEvent {
                    at: e.at,
                    kind: DeskKind::Call,
                    code,
                    owner,
                    key: String::new(),
                    reason: reason.chars().take(200).collect(),
                });
            } else if e.kind == c.meeting_event {
                push(DeskKind::Meeting, String::new(), String::new());
            } else if e.kind == c.purchase_event {
                push(DeskKind::Purchase, String::new(), String::new());
            } else if c.documentation_events.contains(&e.kind) {
                out.documentation_at = Some(e.at);
                push(DeskKind::Documentation, String::new(), String::new());
            } else {
                let kind = if e.kind == c.open_event {
                    DeskKind::Open
                } else if e.kind == c.click_event {
                    DeskKind::Click
                } else if e.kind == c.unsubscribe_event {
                    DeskKind::Unsubscribe
                } else {
                    continue;
                };
                let key = text(e, "key");
                if !key.is_empty() || kind == DeskKind::Unsubscribe {
                    push(kind, String::new(), key.chars().take(200).collect());
                }
            }
        }
        let nothing = out.events.is_empty() && out.do_not_call.is_none();
        (!nothing).then_some(out)
    }
}
