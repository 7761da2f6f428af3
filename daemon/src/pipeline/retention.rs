//! The retention pass (`job = "prune"`): deletes delivered sends, logged
//! decisions and score snapshots older than `[retention]` says, a batch
//! per transaction, until none is left; so that tables and indexes stay
//! bounded while relance runs for years.
//!
//! A delivered send is also planning's memory of what it sent: a pass
//! plans a follow-up again when its outbox key is gone. So the pass keeps
//! what planning still reads:
//! - nurture rows (kind `systematic`), whatever their age: a contact's
//!   enrolment and steps (bounded per contact by the sequences' steps);
//! - rows of broadcasts not over yet: a broadcast's key is looked up until
//!   its end;
//! - trigger and call-back rows for [`sent_reach`] after their sending,
//!   which the configuration guarantees (`[retention] sent` is checked
//!   against it at load).

use crate::core::model::Timestamp;
use crate::pipeline::config::Config;
use crate::ports::store::retention::{Cut, Pruned};
use crate::ports::store::{Store, StoreError};
use serde::Serialize;

#[cfg(doc)]
use crate::pipeline::plan::sent_reach;

/// What a prune did, for the run log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub pruned: Pruned,
    /// Transactions it took.
    pub batches: u64,
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pruned {} sent rows, {} decisions, {} snapshots in {} batches",
            self.pruned.sent, self.pruned.decisions, self.pruned.snapshots, self.batches
        )
    }
}

/// Deletes what `config.retention` no longer keeps at `now`, batch by
/// batch. Several processes may prune at once: each batch is its own
/// transaction and skips rows another one holds.
pub fn prune(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
) -> Result<PruneReport, StoreError> {
    let r = &config.retention;
    let keep: Vec<String> = store
        .broadcasts()?
        .into_iter()
        .filter(|b| b.end > now)
        .map(|b| b.name)
        .collect();
    let cut = Cut {
        sent_before: now - r.sent.0,
        keep: &keep,
        decisions_before: now - r.decisions.0,
        snapshots_before: now - r.snapshots.0,
        limit: r.batch,
    };
    let mut report = PruneReport::default();
    loop {
        let round = store.prune(&cut)?;
        report.batches += 1;
        report.pruned.add(round);
        // Every round deletes rows older than the cut, which only
        // shrink in number: the loop ends.
        if !round.full(cut.limit) {
            return Ok(report);
        }
    }
}
