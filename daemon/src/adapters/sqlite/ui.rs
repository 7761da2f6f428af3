//! The dashboard's aggregates in SQLite (see [`crate::ports::store::ui`]).

use super::conn::{Conn, from_micros, to_micros};
use crate::core::model::Timestamp;
use crate::ports::store::StoreError;
use crate::ports::store::ui::{
    ContactHit, DayCount, FollowupCount, PressureGrid, PressureList, PressureRow,
};
use rusqlite::{OptionalExtension, params};

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

/// Inherent, so that the pool runs the reads on a reader and the one
/// write on the writer.
impl Conn {
    pub(super) fn score_histogram(&self, width: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let w = bucket(width);
        // Floor division of the one-point buckets, negative scores included.
        let mut stmt = self.conn.prepare_cached(
            "SELECT (lo - ((lo % ?1) + ?1) % ?1) AS b, sum(n) FROM ui_score_buckets
             GROUP BY b HAVING sum(n) > 0 ORDER BY b",
        )?;
        let rows = stmt.query_map([w], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn band_moves(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT day, from_band, to_band, n FROM ui_band_moves
             WHERE day >= ?1 / ?3 AND day < (?2 + ?3 - 1) / ?3 AND n > 0",
            2,
            from,
            to,
        )
    }

    pub(super) fn outbox_by_day(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT day, state, kind, channel, sum(n) FROM ui_outbox_counts
             WHERE day >= ?1 / ?3 AND day < (?2 + ?3 - 1) / ?3
             GROUP BY 1, 2, 3, 4 HAVING sum(n) > 0",
            3,
            from,
            to,
        )
    }

    pub(super) fn decision_reasons(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT day, decision, rule, n FROM ui_decisions
             WHERE day >= ?1 / ?3 AND day < (?2 + ?3 - 1) / ?3 AND n > 0",
            2,
            from,
            to,
        )
    }

    pub(super) fn outbox_by_followup(&self) -> Result<Vec<FollowupCount>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT followup, kind, channel, state, sum(n) FROM ui_outbox_counts
             GROUP BY 1, 2, 3, 4 HAVING sum(n) > 0 ORDER BY 1, 2, 3, 4",
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

    pub(super) fn search_contacts(
        &self,
        q: &str,
        limit: u32,
    ) -> Result<Vec<ContactHit>, StoreError> {
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
        // Exact id or email (normalised) first: both are indexed.
        let mut stmt = self.conn.prepare_cached(&format!(
            "{COLUMNS} WHERE c.id = ?1 UNION SELECT * FROM ({COLUMNS} WHERE c.email_key = ?3) LIMIT ?2"
        ))?;
        let exact: Vec<ContactHit> = stmt
            .query_map(
                params![q, limit, crate::domain::desk::keys::email_key(q)],
                hit,
            )?
            .collect::<Result<_, _>>()?;
        if !exact.is_empty() {
            return Ok(exact);
        }
        // A name: a prefix of the first or last name, or of both, through
        // the kept keys (migration 7).
        let key = q.to_lowercase();
        let mut stmt = self.conn.prepare_cached(&format!(
            "{COLUMNS} WHERE c.rowid IN (SELECT contact FROM ui_names WHERE key >= ?1 AND key < ?1 || char(1114111)
                                        LIMIT ?2 * 3)
             ORDER BY c.id LIMIT ?2"
        ))?;
        Ok(stmt
            .query_map(params![key, limit], hit)?
            .collect::<Result<_, _>>()?)
    }

    pub(super) fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError> {
        // Through the partial index of rows to claim: its condition, written
        // as it is, then the claimed rows left out.
        let at: Option<i64> = self
            .conn
            .query_row(
                concat!(
                    "SELECT due_at FROM outbox WHERE ",
                    ready!(),
                    " AND state <> 'claimed' ORDER BY due_at LIMIT 1"
                ),
                [],
                |r| r.get(0),
            )
            .optional()?;
        at.map(from_micros).transpose()
    }

    pub(super) fn replace_pressure(
        &mut self,
        rows: &[PressureRow],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute_batch("DELETE FROM pressure_grid; DELETE FROM pressure_cells;")?;
            let mut counts = [[0u64; 5]; 5];
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO pressure_cells (contact, id, p, v, gap, fatigue, solicitations)
                 SELECT rowid, id, ?2, ?3, ?4, ?5, ?6 FROM contacts WHERE id = ?1",
                )?;
                for r in rows {
                    let (p, v) = (usize::from(r.pressure.min(4)), usize::from(r.value.min(4)));
                    if insert.execute(params![
                        r.contact,
                        p as i64,
                        v as i64,
                        r.gap,
                        r.fatigue_milli,
                        r.solicitations
                    ])? > 0
                    {
                        counts[p][v] += 1;
                    }
                }
                let mut cell =
                    tx.prepare_cached("INSERT INTO pressure_grid (p, v, n) VALUES (?1, ?2, ?3)")?;
                for (p, row) in counts.iter().enumerate() {
                    for (v, n) in row.iter().enumerate() {
                        cell.execute(params![p as i64, v as i64, *n as i64])?;
                    }
                }
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('pressure_at', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [to_micros(at).to_string()],
            )?;
            Ok(())
        })
    }

    pub(super) fn pressure_grid(&self) -> Result<PressureGrid, StoreError> {
        let mut grid = PressureGrid::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT p, v, n FROM pressure_grid")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (p, v, n) = row?;
            if let (Ok(p @ 0..=4), Ok(v @ 0..=4)) = (usize::try_from(p), usize::try_from(v)) {
                grid.counts[p][v] = n.max(0) as u64;
            }
        }
        let at: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'pressure_at'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        grid.computed = at
            .and_then(|v| v.parse::<i64>().ok())
            .map(from_micros)
            .transpose()?;
        Ok(grid)
    }

    pub(super) fn pressure_list(
        &self,
        which: PressureList,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<PressureRow>, u64), StoreError> {
        const COLUMNS: &str = "SELECT id, p, v, gap, fatigue, solicitations FROM pressure_cells";
        let (filter, order, a, b) = match which {
            PressureList::Cell(p, v) => ("p = ?1 AND v = ?2", "id", i64::from(p), i64::from(v)),
            PressureList::Over(t) => ("gap > ?1 AND ?2 = ?2", "gap DESC, id", i64::from(t), 0),
            PressureList::Under(t) => ("gap < -?1 AND ?2 = ?2", "gap, id", i64::from(t), 0),
        };
        let total: i64 = self.conn.query_row(
            &format!("SELECT count(*) FROM pressure_cells WHERE {filter}"),
            params![a, b],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "{COLUMNS} WHERE {filter} ORDER BY {order} LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(
            params![a, b, limit, i64::try_from(offset).unwrap_or(i64::MAX)],
            |r| {
                Ok(PressureRow {
                    contact: r.get(0)?,
                    pressure: r.get::<_, i64>(1)?.clamp(0, 4) as u8,
                    value: r.get::<_, i64>(2)?.clamp(0, 4) as u8,
                    gap: r.get::<_, i64>(3)?.clamp(-4, 4) as i8,
                    fatigue_milli: r.get(4)?,
                    solicitations: r.get::<_, i64>(5)?.max(0) as u32,
                })
            },
        )?;
        Ok((rows.collect::<Result<_, _>>()?, total.max(0) as u64))
    }
}

/// A bucket width in hundredths: whole points (the kept buckets' width),
/// at least one.
fn bucket(width: i64) -> i64 {
    ((width.max(1) + 99) / 100) * 100
}
