//! What a rule change would do before it is made: the same contacts scored
//! by two models, band counts before and after, and who changes band.

use super::model::ScoringModel;
use super::points::Points;
use crate::core::model::{Company, Contact, Event, Timestamp};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WhatIf {
    /// Contacts per band under the current model (every band listed).
    pub before: BTreeMap<String, usize>,
    /// Contacts per band under the proposed model.
    pub after: BTreeMap<String, usize>,
    /// Contacts whose band differs, in input order.
    pub moves: Vec<BandMove>,
    /// The largest score changes, largest first (see [`WhatIf::finish`]).
    pub largest_deltas: Vec<ScoreDelta>,
    /// Every contact's score before and after, in hundredths: what the
    /// distributions are drawn from.
    #[serde(skip)]
    pub scores: Vec<(i64, i64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreDelta {
    pub contact: String,
    pub score_before: Points,
    pub score_after: Points,
    pub delta: Points,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BandMove {
    pub contact: String,
    pub from: String,
    pub to: String,
    pub score_before: Points,
    pub score_after: Points,
}

/// Scores every contact under both models at `now` and compares bands.
pub fn what_if<'a>(
    before: &ScoringModel,
    after: &ScoringModel,
    contacts: impl IntoIterator<Item = (&'a Contact, Option<&'a Company>, &'a [Event])>,
    now: Timestamp,
) -> WhatIf {
    let mut out = WhatIf::new(before, after);
    for (contact, company, events) in contacts {
        out.add(before, after, contact, company, events, now);
    }
    out.finish(20);
    out
}

impl WhatIf {
    /// Empty counts for every band of both models.
    pub fn new(before: &ScoringModel, after: &ScoringModel) -> Self {
        Self {
            before: before.band_names().map(|b| (b.to_string(), 0)).collect(),
            after: after.band_names().map(|b| (b.to_string(), 0)).collect(),
            moves: Vec::new(),
            largest_deltas: Vec::new(),
            scores: Vec::new(),
        }
    }

    /// Keeps the `n` largest score changes (by size, then contact id).
    pub fn finish(&mut self, n: usize) {
        self.largest_deltas.sort_by(|a, b| {
            b.delta
                .0
                .abs()
                .cmp(&a.delta.0.abs())
                .then_with(|| a.contact.cmp(&b.contact))
        });
        self.largest_deltas.truncate(n);
    }

    /// Adds one contact: lets a caller stream contacts from the store
    /// instead of holding them all.
    pub fn add(
        &mut self,
        before: &ScoringModel,
        after: &ScoringModel,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
        now: Timestamp,
    ) {
        let old = before.score(contact, company, events, now);
        let new = after.score(contact, company, events, now);
        self.scores.push((old.score.0, new.score.0));
        if old.score != new.score {
            self.largest_deltas.push(ScoreDelta {
                contact: contact.id.clone(),
                score_before: old.score,
                score_after: new.score,
                delta: new.score - old.score,
            });
            // Bounded memory on large stores: keep the largest ones.
            if self.largest_deltas.len() >= 10_000 {
                self.finish(1_000);
            }
        }
        *self.before.entry(old.band.to_string()).or_default() += 1;
        *self.after.entry(new.band.to_string()).or_default() += 1;
        if old.band != new.band {
            self.moves.push(BandMove {
                contact: contact.id.clone(),
                from: old.band.to_string(),
                to: new.band.to_string(),
                score_before: old.score,
                score_after: new.score,
            });
        }
    }
}
