//! Retention on SQLite: the oldest prunable rows of each kind deleted in
//! one short write transaction (see [`RetentionStore`]). The statements
//! serve the PostgreSQL store too (SQLite binds `$1` … by name).
//!
//! [`RetentionStore`]: crate::ports::store::RetentionStore

use super::conn::{Conn, encode, to_micros};
use crate::ports::store::StoreError;
use crate::ports::store::retention::{Cut, Pruned};

/// What a prune deletes, oldest first, at most `$2` rows: delivered rows
/// settled before `$1` (except nurture rows and the follow-ups `keep`
/// names: `keep` is the store's way to test a list), then decisions and
/// snapshots made before `$1`. `lock` ends each row choice: PostgreSQL
/// skips rows another transaction holds; SQLite has one writer.
///
/// The delivered rows' condition repeats the one of the outbox index of
/// [`super::migrations::RETENTION_INDEXES`], so that the index is used.
pub(crate) fn prune_statements(keep: &str, lock: &str) -> [String; 3] {
    let oldest = |table: &str| {
        format!(
            "DELETE FROM {table} WHERE seq IN (
               SELECT seq FROM {table} WHERE at < $1 ORDER BY at LIMIT $2 {lock})"
        )
    };
    [
        format!(
            "DELETE FROM outbox WHERE seq IN (
               SELECT seq FROM outbox WHERE state = 'sent' AND kind <> 'systematic'
                 AND updated_at < $1 AND {keep}
               ORDER BY updated_at LIMIT $2 {lock})"
        ),
        oldest("decision_log"),
        oldest("score_snapshots"),
    ]
}

impl Conn {
    pub(super) fn prune(&mut self, cut: &Cut<'_>) -> Result<Pruned, StoreError> {
        let limit = i64::from(cut.limit);
        let keep = encode(&cut.keep)?;
        let [sent, decisions, snapshots] =
            prune_statements("followup NOT IN (SELECT value FROM json_each($3))", "");
        self.write(|tx| {
            // Bound by name: SQLite numbers `$3` by its first appearance.
            let run = |sql: &str, before, keep: Option<&str>| -> Result<u64, StoreError> {
                let mut stmt = tx.prepare_cached(sql)?;
                let before = to_micros(before);
                let n = match keep {
                    Some(k) => stmt.execute(rusqlite::named_params! {
                        "$1": before, "$2": limit, "$3": k
                    })?,
                    None => stmt.execute(rusqlite::named_params! { "$1": before, "$2": limit })?,
                };
                Ok(n as u64)
            };
            Ok(Pruned {
                sent: run(&sent, cut.sent_before, Some(&keep))?,
                decisions: run(&decisions, cut.decisions_before, None)?,
                snapshots: run(&snapshots, cut.snapshots_before, None)?,
            })
        })
    }
}
