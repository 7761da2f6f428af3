//! Outbox reads and writes of the built-in channels: the reason written on
//! the sends of a channel that is not configured, and the call tasks of the
//! task channel (a task is the delivered outbox row itself; its outcome is
//! a `call` event keyed by the task, so it is recorded once).

use super::conn::Conn;
use super::events::event_by_id_key;
use super::outbox::{ROW_COLUMNS, read_row};
use crate::core::model::Timestamp;
use crate::domain::outbox::Row;
use crate::ports::store::{Props, StoreError};
use rusqlite::params;

impl Conn {
    /// Writes `reason` as the error of every pending send on `channel`,
    /// found through outbox_ready (its predicate named in the query).
    pub(super) fn note_waiting(&mut self, channel: &str, reason: &str) -> Result<u64, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(concat!(
                    "UPDATE outbox SET last_error = ?2 WHERE ",
                    ready!(),
                    " AND state <> 'claimed' AND channel = ?1 AND last_error IS NOT ?2"
                ))?
                .execute(params![channel, reason])?;
            Ok(n as u64)
        })
    }

    /// One outbox row by its idempotency key.
    pub(super) fn outbox_row(&self, key: &str) -> Result<Option<Row>, StoreError> {
        let mut stmt = self.connection().prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM outbox o JOIN contacts c ON c.rowid = o.contact WHERE o.idem_key = ?1"
        ))?;
        let mut q = stmt.query([key])?;
        q.next()?.map(read_row).transpose()
    }

    /// Delivered sends on `channels`, oldest first.
    pub(super) fn delivered_on(
        &self,
        channels: &[String],
        limit: u32,
    ) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        for channel in channels {
            let mut stmt = self.connection().prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM outbox o JOIN contacts c ON c.rowid = o.contact
                 WHERE o.channel = ?1 AND o.state = 'sent' ORDER BY o.first_due, o.seq LIMIT ?2"
            ))?;
            let mut q = stmt.query(params![channel, limit])?;
            while let Some(r) = q.next()? {
                out.push(read_row(r)?);
            }
        }
        out.sort_by_key(|r| (r.first_due, r.seq));
        out.truncate(limit as usize);
        Ok(out)
    }

    /// The props and instant of the event stored under `dedup`, the key of
    /// a producer's id (the only events the task channel looks up), if any.
    pub(super) fn event_by_dedup(
        &self,
        dedup: &[u8],
    ) -> Result<Option<(Props, Timestamp)>, StoreError> {
        event_by_id_key(&self.events(), dedup)
    }
}
