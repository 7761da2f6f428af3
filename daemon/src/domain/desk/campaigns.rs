//! Campaign effectiveness (seed 002: did the people who clicked match the
//! intended target?): per broadcast and nurture sequence, sends, opens,
//! clicks and unsubscribes; of the clickers, the share inside the intended
//! segment and bands; conversions within a window after the send.

use super::ratio;
use crate::core::model::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A send of a campaign (a delivered outbox row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRow {
    pub key: String,
    pub contact: String,
    pub followup: String,
    pub at: Timestamp,
}

/// A kept event (see [`crate::domain::desk::DeskEvent`]) with its contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptEvent {
    pub contact: String,
    pub at: Timestamp,
    pub kind: String,
    pub code: String,
    pub key: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    Broadcast,
    Nurture,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Conversions {
    /// Contacts whose band went up within the window after a send.
    pub band_up: u64,
    pub meeting: u64,
    pub purchase: u64,
    /// Contacts with at least one of the three.
    pub contacts: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Campaign {
    pub name: String,
    pub kind: CampaignKind,
    /// Sends delivered, and the contacts they reached.
    pub sent: u64,
    pub contacts: u64,
    /// Contacts who opened, clicked, unsubscribed (counted once each).
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
    /// Clickers inside the intended segment (and bands) and outside.
    pub clicked_in_target: u64,
    pub clicked_off_target: u64,
    /// Share of the clickers inside the target.
    pub in_target_share: Option<f64>,
    pub conversions: Conversions,
}

/// What a campaign's figures are computed from.
pub struct Input<'a> {
    pub name: String,
    pub kind: CampaignKind,
    pub sends: &'a [SendRow],
    /// Kept events of the contacts sent to, from the first send on.
    pub events: &'a [KeptEvent],
    /// Upward band crossings of those contacts: (contact, at).
    pub band_ups: &'a [(String, Timestamp)],
    /// Whether a contact is inside the intended segment and bands.
    pub in_target: &'a dyn Fn(&str) -> bool,
    pub window: chrono::Duration,
    /// Call codes that book a meeting.
    pub appointment: &'a BTreeSet<String>,
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("name", &self.name)
            .field("sends", &self.sends.len())
            .finish_non_exhaustive()
    }
}

/// A campaign's figures. A reaction counts when it carries the send's key;
/// an unsubscribe without a key counts within the window after a send.
pub fn campaign(i: &Input<'_>) -> Campaign {
    let keys: BTreeMap<&str, &SendRow> = i.sends.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut sent_at: BTreeMap<&str, Vec<Timestamp>> = BTreeMap::new();
    for s in i.sends {
        sent_at.entry(&s.contact).or_default().push(s.at);
    }
    let within = |contact: &str, at: Timestamp| {
        sent_at
            .get(contact)
            .is_some_and(|l| l.iter().any(|s| at > *s && at <= *s + i.window))
    };
    let mut opened = BTreeSet::new();
    let mut clicked = BTreeSet::new();
    let mut unsubscribed = BTreeSet::new();
    let (mut meeting, mut purchase) = (BTreeSet::new(), BTreeSet::new());
    for e in i.events {
        let ours = keys
            .get(e.key.as_str())
            .is_some_and(|s| s.contact == e.contact);
        match e.kind.as_str() {
            "open" if ours => {
                opened.insert(e.contact.as_str());
            }
            "click" if ours => {
                clicked.insert(e.contact.as_str());
            }
            "unsubscribe" if ours || (e.key.is_empty() && within(&e.contact, e.at)) => {
                unsubscribed.insert(e.contact.as_str());
            }
            "meeting" if within(&e.contact, e.at) => {
                meeting.insert(e.contact.as_str());
            }
            "call" if i.appointment.contains(&e.code) && within(&e.contact, e.at) => {
                meeting.insert(e.contact.as_str());
            }
            "purchase" if within(&e.contact, e.at) => {
                purchase.insert(e.contact.as_str());
            }
            _ => {}
        }
    }
    let band_up: BTreeSet<&str> = i
        .band_ups
        .iter()
        .filter(|(c, at)| within(c, *at))
        .map(|(c, _)| c.as_str())
        .collect();
    let inside = clicked.iter().filter(|c| (i.in_target)(c)).count() as u64;
    let converted: BTreeSet<&str> = band_up
        .iter()
        .chain(&meeting)
        .chain(&purchase)
        .copied()
        .collect();
    Campaign {
        name: i.name.clone(),
        kind: i.kind,
        sent: i.sends.len() as u64,
        contacts: sent_at.len() as u64,
        opened: opened.len() as u64,
        clicked: clicked.len() as u64,
        unsubscribed: unsubscribed.len() as u64,
        clicked_in_target: inside,
        clicked_off_target: clicked.len() as u64 - inside,
        in_target_share: ratio(inside as f64, clicked.len() as f64),
        conversions: Conversions {
            band_up: band_up.len() as u64,
            meeting: meeting.len() as u64,
            purchase: purchase.len() as u64,
            contacts: converted.len() as u64,
        },
    }
}
