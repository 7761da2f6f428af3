//! Retention: what the store deletes once only the past would read it (see
//! [`crate::pipeline::retention`] for the pass and what it keeps).

use super::StoreError;
use crate::core::model::Timestamp;
use serde::Serialize;

/// What one call of [`RetentionStore::prune`] may delete.
#[derive(Clone, Copy, Debug)]
pub struct Cut<'a> {
    /// Delivered sends (`sent`) settled before this instant, except those
    /// of nurture sequences (kind `systematic`: planning reads them to know
    /// a contact's enrolment and steps for as long as the contact exists)
    /// and those of the follow-ups named in `keep`.
    pub sent_before: Timestamp,
    /// Follow-ups whose delivered rows stay whatever their age (broadcasts
    /// not over yet: planning looks their keys up until their end).
    pub keep: &'a [String],
    /// Logged decisions made before this instant.
    pub decisions_before: Timestamp,
    /// Score snapshots taken before this instant.
    pub snapshots_before: Timestamp,
    /// At most this many rows of each kind.
    pub limit: u32,
}

/// How many rows of each kind a prune deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub sent: u64,
    pub decisions: u64,
    pub snapshots: u64,
}

impl Pruned {
    /// Whether a kind hit the limit, so that more may be left.
    pub fn full(&self, limit: u32) -> bool {
        let limit = u64::from(limit);
        self.sent >= limit || self.decisions >= limit || self.snapshots >= limit
    }

    pub fn add(&mut self, other: Pruned) {
        self.sent += other.sent;
        self.decisions += other.decisions;
        self.snapshots += other.snapshots;
    }
}

/// Deleting past rows in small batches.
pub trait RetentionStore: Send + Sync {
    /// Deletes the oldest rows the cut allows, at most `cut.limit` of each
    /// kind, in one short transaction; returns how many. A pass calls it
    /// until no kind comes back full. Safe beside every other writer and
    /// process: rows another transaction holds are left for the next call.
    /// Counts kept by the store (campaign figures) are not lowered: a
    /// delivered send once counted stays counted.
    fn prune(&self, cut: &Cut<'_>) -> Result<Pruned, StoreError>;
}
