//! Campaign effectiveness (seed 002: did the people who clicked match the
//! intended target?): per broadcast and nurture sequence, sends, opens,
//! clicks and unsubscribes; of the clickers, the share inside the intended
//! segment and bands; conversions within a window after the send.
//!
//! Kept per campaign and contact as the outbox delivers and the scoring pass
//! folds a contact's history ([`contact_flags`]); the store sums them per
//! campaign, and [`campaign`] reads the sums. No report reads the events.

use super::ratio;
use super::{DeskEvent, DeskKind};
use crate::core::model::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

/// A delivered send of a campaign to the contact being folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactSend {
    /// The outbox key its tracking links and unsubscribe link carry.
    pub key: String,
    pub campaign: String,
    pub at: Timestamp,
}

/// What the scoring pass hands the store with a contact, for its campaigns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CampaignFacts {
    /// Conversions count within this long after a send.
    pub window: chrono::Duration,
    /// Campaigns (broadcast or sequence names) whose target the contact is
    /// in now: segment, and the sequence's bands. Judged only for a contact
    /// with a click carrying a send's key (empty otherwise).
    pub in_target: Vec<String>,
}

/// One contact's figures for one campaign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub opened: bool,
    pub clicked: bool,
    pub unsubscribed: bool,
    pub in_target: bool,
    pub band_up: bool,
    pub meeting: bool,
    pub purchase: bool,
}

impl Flags {
    /// The figures of a campaign to store for a contact, from those
    /// stored (`old`) and those just found (`new`, `None` when none of the
    /// campaign's sends is left to look at). When retention deleted some
    /// of its sends (`complete` false), what was counted stays counted:
    /// a reaction to a deleted send is no longer found, not undone.
    pub fn refold(old: Flags, new: Option<Flags>, complete: bool) -> Flags {
        match (new, complete) {
            (Some(new), true) => new,
            (Some(new), false) => Flags {
                opened: old.opened || new.opened,
                clicked: old.clicked || new.clicked,
                unsubscribed: old.unsubscribed || new.unsubscribed,
                in_target: old.in_target || new.in_target,
                band_up: old.band_up || new.band_up,
                meeting: old.meeting || new.meeting,
                purchase: old.purchase || new.purchase,
            },
            (None, true) => Flags::default(),
            (None, false) => old,
        }
    }
}

/// A contact's figures to store again, from those stored (campaign,
/// flags, sends counted) and what the scoring pass found (see
/// [`contact_flags`]): only the campaigns whose figures changed. A
/// campaign with fewer sends left than it counted had some deleted by
/// retention (see [`Flags::refold`]).
pub fn refolded(
    stored: Vec<(String, Flags, u64)>,
    sends: &[ContactSend],
    events: &[DeskEvent],
    band_ups: &[Timestamp],
    facts: &CampaignFacts,
) -> Vec<(String, Flags)> {
    let flags = contact_flags(sends, events, band_ups, facts);
    stored
        .into_iter()
        .filter_map(|(campaign, old, counted)| {
            let found = sends.iter().filter(|s| s.campaign == campaign).count() as u64;
            let new = Flags::refold(old, flags.get(&campaign).copied(), found >= counted);
            (new != old).then_some((campaign, new))
        })
        .collect()
}

/// A contact's figures per campaign sent to it. A reaction counts when it
/// carries the key of one of the campaign's sends; an unsubscribe without
/// a key, a meeting (or an appointment call), a purchase or an upward band
/// crossing (`band_ups`) count within the window after one of its sends.
pub fn contact_flags(
    sends: &[ContactSend],
    events: &[DeskEvent],
    band_ups: &[Timestamp],
    facts: &CampaignFacts,
) -> BTreeMap<String, Flags> {
    let mut out: BTreeMap<String, Flags> = BTreeMap::new();
    for s in sends {
        out.entry(s.campaign.clone()).or_default();
    }
    let within = |campaign: &str, at: Timestamp| {
        sends
            .iter()
            .any(|s| s.campaign == campaign && at > s.at && at <= s.at + facts.window)
    };
    for (campaign, f) in &mut out {
        let ours = |key: &str| {
            sends
                .iter()
                .any(|s| s.key == key && s.campaign == *campaign)
        };
        for e in events {
            match e.kind {
                DeskKind::Open if ours(&e.key) => f.opened = true,
                DeskKind::Click if ours(&e.key) => f.clicked = true,
                DeskKind::Unsubscribe
                    if ours(&e.key) || (e.key.is_empty() && within(campaign, e.at)) =>
                {
                    f.unsubscribed = true
                }
                DeskKind::Meeting if within(campaign, e.at) => f.meeting = true,
                DeskKind::Purchase if within(campaign, e.at) => f.purchase = true,
                _ => {}
            }
        }
        f.band_up = band_ups.iter().any(|at| within(campaign, *at));
        f.in_target = f.clicked && facts.in_target.iter().any(|c| c == campaign);
    }
    out
}

/// A campaign's sums, as the store keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CampaignCounts {
    pub campaign: String,
    pub sent: u64,
    pub contacts: u64,
    pub opened: u64,
    pub clicked: u64,
    pub unsubscribed: u64,
    pub clicked_in_target: u64,
    pub band_up: u64,
    pub meeting: u64,
    pub purchase: u64,
    /// Contacts with any of the three conversions.
    pub converted: u64,
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

/// A campaign's figures from its sums.
pub fn campaign(name: &str, kind: CampaignKind, c: &CampaignCounts) -> Campaign {
    let inside = c.clicked_in_target.min(c.clicked);
    Campaign {
        name: name.to_string(),
        kind,
        sent: c.sent,
        contacts: c.contacts,
        opened: c.opened,
        clicked: c.clicked,
        unsubscribed: c.unsubscribed,
        clicked_in_target: inside,
        clicked_off_target: c.clicked - inside,
        in_target_share: ratio(inside as f64, c.clicked as f64),
        conversions: Conversions {
            band_up: c.band_up,
            meeting: c.meeting,
            purchase: c.purchase,
            contacts: c.converted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("instant")
    }

    fn event(kind: DeskKind, when: &str, key: &str) -> DeskEvent {
        DeskEvent {
            at: at(when),
            kind,
            code: String::new(),
            owner: String::new(),
            key: key.into(),
            reason: String::new(),
        }
    }

    #[test]
    fn reactions_count_by_key_and_conversions_within_the_window() {
        let sends = [
            ContactSend {
                key: "a1".into(),
                campaign: "spring".into(),
                at: at("2026-11-01T10:00:00Z"),
            },
            ContactSend {
                key: "b1".into(),
                campaign: "welcome".into(),
                at: at("2026-10-01T10:00:00Z"),
            },
        ];
        let events = [
            event(DeskKind::Click, "2026-11-01T11:00:00Z", "a1"),
            event(DeskKind::Open, "2026-11-01T11:00:00Z", "other"),
            event(DeskKind::Unsubscribe, "2026-10-02T08:00:00Z", ""),
            event(DeskKind::Meeting, "2026-11-10T10:00:00Z", ""),
            event(DeskKind::Purchase, "2026-11-20T10:00:00Z", ""),
        ];
        let facts = CampaignFacts {
            window: chrono::Duration::days(14),
            in_target: vec!["spring".into(), "welcome".into()],
        };
        let flags = contact_flags(&sends, &events, &[at("2026-11-01T10:00:00Z")], &facts);
        assert_eq!(
            flags["spring"],
            Flags {
                clicked: true,
                in_target: true,
                meeting: true,
                ..Flags::default()
            },
            "the purchase is a day past the window, the crossing at the send itself"
        );
        assert_eq!(
            flags["welcome"],
            Flags {
                unsubscribed: true,
                ..Flags::default()
            }
        );
    }
}
