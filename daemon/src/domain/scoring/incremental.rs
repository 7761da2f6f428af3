//! Incremental rescoring: keep every contact's last card and recompute only
//! the contacts that received events or whose `next_change_at` has passed.
//! The property test in `tests.rs` checks this equals a full recomputation.

use super::model::ScoreCard;
use crate::core::model::Timestamp;
use std::collections::{BTreeSet, HashMap};

/// The cards of the last pass and when each may change.
#[derive(Clone, Debug, Default)]
pub struct Rescorer {
    cards: HashMap<String, ScoreCard>,
    due: BTreeSet<(Timestamp, String)>,
}

impl Rescorer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Contacts whose card may be stale at `now` even without new events.
    pub fn due(&self, now: Timestamp) -> Vec<String> {
        self.due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Keeps a freshly computed card; returns the one it replaces, for the
    /// change detector.
    pub fn store(&mut self, card: ScoreCard) -> Option<ScoreCard> {
        if let Some(at) = card.next_change_at {
            self.due.insert((at, card.contact.clone()));
        }
        let previous = self.cards.insert(card.contact.clone(), card);
        if let Some(prev) = &previous
            && let Some(at) = prev.next_change_at
        {
            let still = self
                .cards
                .get(&prev.contact)
                .is_some_and(|c| c.next_change_at == Some(at));
            if !still {
                self.due.remove(&(at, prev.contact.clone()));
            }
        }
        previous
    }

    pub fn get(&self, contact: &str) -> Option<&ScoreCard> {
        self.cards.get(contact)
    }

    pub fn cards(&self) -> impl Iterator<Item = &ScoreCard> {
        self.cards.values()
    }
}
