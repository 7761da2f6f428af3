//! The dashboard's aggregates in SQLite (see [`crate::ports::store::ui`]).

use super::conn::{Conn, from_micros, to_micros};
use crate::core::model::Timestamp;
use crate::ports::store::StoreError;
use crate::ports::store::ui::{ContactHit, DayCount, FollowupCount, UiReads};
use rusqlite::params;

const DAY_MICROS: i64 = 86_400_000_000;

impl Conn {
    /// Runs a grouping query whose first column is a day and whose last is
    /// a count, the columns between being the key.
    fn day_counts(
        &self,
        sql: &str,
        keys: usize,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![to_micros(from), to_micros(to), DAY_MICROS], |r| {
            let mut key = Vec::with_capacity(keys);
            for i in 0..keys {
                key.push(r.get::<_, Option<String>>(i + 1)?.unwrap_or_default());
            }
            Ok(DayCount {
                day: r.get(0)?,
                key,
                n: r.get::<_, i64>(keys + 1)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl UiReads for Conn {
    fn score_histogram(&self, width: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let w = width.max(1);
        // Floor division, negative scores included.
        let mut stmt = self.conn.prepare_cached(
            "SELECT (score - ((score % ?1) + ?1) % ?1) AS lo, count(*) FROM scores GROUP BY lo ORDER BY lo",
        )?;
        let rows = stmt.query_map([w], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn band_moves(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT at / ?3, from_band, to_band, count(*) FROM score_changes
             WHERE at >= ?1 AND at < ?2 AND from_band <> to_band GROUP BY 1, 2, 3",
            2,
            from,
            to,
        )
    }

    fn outbox_by_day(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT first_due / ?3, state, kind, channel, count(*) FROM outbox
             WHERE first_due >= ?1 AND first_due < ?2 GROUP BY 1, 2, 3, 4",
            3,
            from,
            to,
        )
    }

    fn decision_reasons(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT at / ?3, decision,
                    coalesce(json_extract(reasons, '$[0].rule'),
                             json_extract(reasons, '$.reasons[0].rule'),
                             json_extract(reasons, '$[0]'), ''),
                    count(*)
             FROM decision_log WHERE at >= ?1 AND at < ?2 GROUP BY 1, 2, 3",
            2,
            from,
            to,
        )
    }

    fn outbox_by_followup(&self) -> Result<Vec<FollowupCount>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT followup, kind, channel, state, count(*) FROM outbox
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FollowupCount {
                followup: r.get(0)?,
                kind: r.get(1)?,
                channel: r.get(2)?,
                state: r.get(3)?,
                n: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn search_contacts(&self, q: &str, limit: u32) -> Result<Vec<ContactHit>, StoreError> {
        let q = q.trim();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        const COLUMNS: &str =
            "SELECT c.id, trim(coalesce(json_extract(c.record, '$.first_name'), '') || ' ' ||
                    coalesce(json_extract(c.record, '$.last_name'), '')), c.email, s.score, s.band
             FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid";
        let hit = |r: &rusqlite::Row<'_>| {
            Ok(ContactHit {
                id: r.get(0)?,
                name: r.get(1)?,
                email: r.get(2)?,
                score: r.get(3)?,
                band: r.get(4)?,
            })
        };
        // Exact id or email first: both are indexed.
        let mut stmt = self.conn.prepare_cached(&format!(
            "{COLUMNS} WHERE c.id = ?1 UNION SELECT * FROM ({COLUMNS} WHERE c.email = lower(?1)) LIMIT ?2"
        ))?;
        let exact: Vec<ContactHit> = stmt
            .query_map(params![q, limit], hit)?
            .collect::<Result<_, _>>()?;
        if !exact.is_empty() {
            return Ok(exact);
        }
        // A name: a scan, stopped at `limit` hits.
        let pattern = format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let mut stmt = self.conn.prepare_cached(&format!(
            "{COLUMNS} WHERE (coalesce(json_extract(c.record, '$.first_name'), '') || ' ' ||
                    coalesce(json_extract(c.record, '$.last_name'), '')) LIKE ?1 ESCAPE '\\'
             ORDER BY c.id LIMIT ?2"
        ))?;
        Ok(stmt
            .query_map(params![pattern, limit], hit)?
            .collect::<Result<_, _>>()?)
    }

    fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError> {
        let at: Option<i64> = self.conn.query_row(
            "SELECT min(due_at) FROM outbox WHERE state IN ('planned', 'deferred', 'retrying')",
            [],
            |r| r.get(0),
        )?;
        at.map(from_micros).transpose()
    }
}
