//! The `[calls]` section: how the call desk and the sales-ops reports read
//! the history. Won, lost and unsuccessful codes and `stop_after` stay under
//! `[followups.calls]`, so that the planner and the desk agree.

use crate::core::config::{Duration, Issues, KeyPath, Validate};
use crate::core::model::event_types as et;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DeskConfig {
    /// Calls of one owner less than this apart belong to one session.
    pub session_gap: Duration,
    /// What a call lasts when a session's span is counted (a session of one
    /// call lasts this long).
    pub call_length: Duration,
    /// Country of phone numbers written without an international prefix
    /// (ISO 3166 alpha-2), for duplicate detection in E.164.
    pub default_country: String,
    /// Codes that mean the person was reached (a pitch).
    pub reached: Vec<String>,
    /// Codes counted by the appointment, call-back and refusal rates.
    pub appointment: Vec<String>,
    pub callback: Vec<String>,
    pub refused: Vec<String>,
    /// Codes that leave a prospect CHAUD (hot) or TIÈDE (warm).
    pub hot: Vec<String>,
    pub warm: Vec<String>,
    /// Codes meaning documentation was sent (with `documentation_events`).
    pub documentation: Vec<String>,
    pub documentation_events: Vec<String>,
    /// An event of this type is a meeting: the prospect is GAGNÉ (won).
    pub meeting_event: String,
    pub purchase_event: String,
    /// Email reactions counted by `relance campaigns` (with `props.key`).
    pub open_event: String,
    pub click_event: String,
    pub unsubscribe_event: String,
    /// Bands whose contacts are hot leads to call.
    pub hot_bands: Vec<String>,
    /// A hot lead called within this long is not listed again.
    pub hot_recall: Duration,
    /// How long after a send a conversion counts for its campaign.
    pub conversion_window: Duration,
}

impl Default for DeskConfig {
    fn default() -> Self {
        let s = |l: &[&str]| l.iter().map(|c| (*c).to_string()).collect();
        Self {
            session_gap: Duration(chrono::Duration::minutes(30)),
            call_length: Duration(chrono::Duration::minutes(5)),
            default_country: "FR".into(),
            reached: s(&[
                "RDV",
                "PISTE",
                "PROJET",
                "MAIL",
                "REFUS",
                "REFUS COMM",
                "HORS CIBLE",
            ]),
            appointment: s(&["RDV"]),
            callback: s(&["RAPP"]),
            refused: s(&["REFUS", "REFUS COMM"]),
            hot: s(&["PISTE"]),
            warm: s(&["RAPP", "PROJET", "MAIL"]),
            documentation: s(&["MAIL"]),
            documentation_events: s(&[et::DOWNLOAD]),
            meeting_event: et::MEETING.into(),
            purchase_event: et::PURCHASE.into(),
            open_event: et::EMAIL_OPEN.into(),
            click_event: et::EMAIL_CLICK.into(),
            unsubscribe_event: et::UNSUBSCRIBE.into(),
            hot_bands: s(&["hot"]),
            hot_recall: Duration(chrono::Duration::days(7)),
            conversion_window: Duration(chrono::Duration::days(14)),
        }
    }
}

impl Validate for DeskConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        for (key, d) in [
            ("session_gap", self.session_gap),
            ("call_length", self.call_length),
            ("conversion_window", self.conversion_window),
        ] {
            if d.seconds() < 1 {
                issues.push(at.key(key), "must be at least 1s");
            }
        }
        if super::keys::calling_code(&self.default_country).is_none() {
            issues.push(
                at.key("default_country"),
                format!(
                    "unknown country `{}`; known: {}",
                    self.default_country,
                    super::keys::COUNTRIES
                        .iter()
                        .map(|(c, _)| *c)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        for (key, list) in [
            ("reached", &self.reached),
            ("appointment", &self.appointment),
            ("callback", &self.callback),
            ("refused", &self.refused),
            ("hot", &self.hot),
            ("warm", &self.warm),
            ("documentation", &self.documentation),
        ] {
            for (i, c) in list.iter().enumerate() {
                if c.trim().is_empty() || c.len() > 64 {
                    issues.push(at.key(key).index(i), "a code has 1 to 64 characters");
                }
            }
        }
        for (key, v) in [
            ("meeting_event", &self.meeting_event),
            ("purchase_event", &self.purchase_event),
            ("open_event", &self.open_event),
            ("click_event", &self.click_event),
            ("unsubscribe_event", &self.unsubscribe_event),
        ] {
            if v.trim().is_empty() {
                issues.push(at.key(key), "name an event type");
            }
        }
    }
}
