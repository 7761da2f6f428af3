//! Retention on PostgreSQL: the oldest prunable rows of each kind deleted
//! in one short transaction (see [`RetentionStore`]), with the statements
//! of the SQLite store. Rows another transaction holds are skipped (`SKIP
//! LOCKED`) and left for the next call, so a prune never waits behind a
//! claim or a pass.

use super::PgStore;
use crate::adapters::sqlite::shared::{prune_statements, to_micros};
use crate::ports::store::StoreError;
use crate::ports::store::retention::{Cut, Pruned, RetentionStore};

impl RetentionStore for PgStore {
    fn prune(&self, cut: &Cut<'_>) -> Result<Pruned, StoreError> {
        let limit = i64::from(cut.limit);
        let [sent, decisions, snapshots] =
            prune_statements("followup <> ALL($3)", "FOR UPDATE SKIP LOCKED");
        self.tx(async |tx| {
            Ok(Pruned {
                sent: tx
                    .execute(&sent, &[&to_micros(cut.sent_before), &limit, &cut.keep])
                    .await?,
                decisions: tx
                    .execute(&decisions, &[&to_micros(cut.decisions_before), &limit])
                    .await?,
                snapshots: tx
                    .execute(&snapshots, &[&to_micros(cut.snapshots_before), &limit])
                    .await?,
            })
        })
    }
}
