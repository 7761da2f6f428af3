//! What the dashboard reads from PostgreSQL: aggregates grouped in the
//! database (see [`crate::ports::store::ui`]).

use super::PgStore;
use crate::adapters::sqlite::shared::{from_micros, to_micros};
use crate::core::model::Timestamp;
use crate::ports::store::StoreError;
use crate::ports::store::ui::{
    ContactHit, DayCount, FollowupCount, PressureGrid, PressureList, PressureRow, UiReads,
};

const DAY_MICROS: i64 = 86_400_000_000;

/// `first_name last_name` of a stored contact record.
const NAME: &str = "trim(coalesce(c.record::jsonb ->> 'first_name', '') || ' ' || \
     coalesce(c.record::jsonb ->> 'last_name', ''))";

impl PgStore {
    /// Runs a grouping query whose first column is a day and whose last is
    /// a count, the `keys` columns between being the key.
    fn day_counts(
        &self,
        sql: &str,
        keys: usize,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.read(async |c| {
            Ok(
                c.query(sql, &[&to_micros(from), &to_micros(to), &DAY_MICROS])
                    .await?
                    .iter()
                    .map(|r| DayCount {
                        day: r.get(0),
                        key: (0..keys)
                            .map(|i| r.get::<_, Option<String>>(i + 1).unwrap_or_default())
                            .collect(),
                        n: r.get::<_, i64>(keys + 1).max(0) as u64,
                    })
                    .collect(),
            )
        })
    }
}

impl UiReads for PgStore {
    fn score_histogram(&self, width: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        let w = width.max(1);
        self.read(async |c| {
            // Floor division, negative scores included.
            Ok(c.query(
                "SELECT score - ((score % $1) + $1) % $1 AS lo, count(*) FROM scores
                 GROUP BY lo ORDER BY lo",
                &[&w],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
        })
    }

    fn band_moves(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT at / $3, from_band, to_band, count(*) FROM score_changes
             WHERE at >= $1 AND at < $2 AND from_band <> to_band GROUP BY 1, 2, 3",
            2,
            from,
            to,
        )
    }

    fn outbox_by_day(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        self.day_counts(
            "SELECT first_due / $3, state, kind, channel, count(*) FROM outbox
             WHERE first_due >= $1 AND first_due < $2 GROUP BY 1, 2, 3, 4",
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
            "SELECT at / $3, decision,
                    coalesce(reasons::jsonb #>> '{0,rule}', reasons::jsonb #>> '{reasons,0,rule}',
                             reasons::jsonb #>> '{0}', ''),
                    count(*)
             FROM decision_log WHERE at >= $1 AND at < $2 GROUP BY 1, 2, 3",
            2,
            from,
            to,
        )
    }

    fn outbox_by_followup(&self) -> Result<Vec<FollowupCount>, StoreError> {
        self.read(async |c| {
            Ok(c.query(
                "SELECT followup, kind, channel, state, count(*) FROM outbox
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
                &[],
            )
            .await?
            .iter()
            .map(|r| FollowupCount {
                followup: r.get(0),
                kind: r.get(1),
                channel: r.get(2),
                state: r.get(3),
                n: r.get::<_, i64>(4).max(0) as u64,
            })
            .collect())
        })
    }

    fn search_contacts(&self, q: &str, limit: u32) -> Result<Vec<ContactHit>, StoreError> {
        let q = q.trim();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let columns = format!(
            "SELECT c.id, {NAME}, c.email, s.score, s.band
             FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid"
        );
        let limit = i64::from(limit);
        let pattern = format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        self.read(async |c| {
            let hit = |r: &tokio_postgres::Row| ContactHit {
                id: r.get(0),
                name: r.get(1),
                email: r.get(2),
                score: r.get(3),
                band: r.get(4),
            };
            // Exact id or email first: both are indexed.
            let exact: Vec<ContactHit> = c
                .query(
                    &format!(
                        "{columns} WHERE c.id = $1 UNION {columns} WHERE c.email = lower($1) LIMIT $2"
                    ),
                    &[&q, &limit],
                )
                .await?
                .iter()
                .map(hit)
                .collect();
            if !exact.is_empty() {
                return Ok(exact);
            }
            // A name: a scan, stopped at `limit` hits.
            Ok(c.query(
                &format!("{columns} WHERE {NAME} ILIKE $1 ORDER BY c.id LIMIT $2"),
                &[&pattern, &limit],
            )
            .await?
            .iter()
            .map(hit)
            .collect())
        })
    }

    fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(async |c| {
            c.query_one(
                "SELECT min(due_at) FROM outbox WHERE state IN ('planned', 'deferred', 'retrying')",
                &[],
            )
            .await?
            .get::<_, Option<i64>>(0)
            .map(from_micros)
            .transpose()
        })
    }

    fn replace_pressure(&self, rows: &[PressureRow], at: Timestamp) -> Result<(), StoreError> {
        let at = to_micros(at).to_string();
        self.tx(async |tx| {
            tx.batch_execute("DELETE FROM pressure_cells").await?;
            let insert = tx
                .prepare(
                    "INSERT INTO pressure_cells (contact, id, p, v, gap, fatigue, solicitations)
                     SELECT rowid, id, $2, $3, $4, $5, $6 FROM contacts WHERE id = $1",
                )
                .await?;
            for r in rows {
                tx.execute(
                    &insert,
                    &[
                        &r.contact,
                        &i16::from(r.pressure.min(4)),
                        &i16::from(r.value.min(4)),
                        &i16::from(r.gap),
                        &r.fatigue_milli,
                        &i64::from(r.solicitations),
                    ],
                )
                .await?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('pressure_at', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&at],
            )
            .await?;
            Ok(())
        })
    }

    fn pressure_grid(&self) -> Result<PressureGrid, StoreError> {
        self.read(async |c| {
            let mut grid = PressureGrid::default();
            // At most 25 groups over the index of (p, v).
            for r in c
                .query(
                    "SELECT p, v, count(*) FROM pressure_cells GROUP BY 1, 2",
                    &[],
                )
                .await?
            {
                let (p, v): (i16, i16) = (r.get(0), r.get(1));
                if let (Ok(p @ 0..=4), Ok(v @ 0..=4)) = (usize::try_from(p), usize::try_from(v)) {
                    grid.counts[p][v] = r.get::<_, i64>(2).max(0) as u64;
                }
            }
            grid.computed = c
                .query_opt("SELECT value FROM meta WHERE key = 'pressure_at'", &[])
                .await?
                .and_then(|r| r.get::<_, String>(0).parse::<i64>().ok())
                .map(from_micros)
                .transpose()?;
            Ok(grid)
        })
    }

    fn pressure_list(
        &self,
        which: PressureList,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<PressureRow>, u64), StoreError> {
        let (filter, order, a, b) = match which {
            PressureList::Cell(p, v) => ("p = $1 AND v = $2", "id", i16::from(p), i16::from(v)),
            PressureList::Over(t) => ("gap > $1 AND $2 = $2", "gap DESC, id", i16::from(t), 0),
            PressureList::Under(t) => ("gap < -$1 AND $2 = $2", "gap, id", i16::from(t), 0),
        };
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        self.snapshot(async |tx| {
            let total: i64 = tx
                .query_one(
                    &format!("SELECT count(*) FROM pressure_cells WHERE {filter}"),
                    &[&a, &b],
                )
                .await?
                .get(0);
            let rows = tx
                .query(
                    &format!(
                        "SELECT id, p, v, gap, fatigue, solicitations FROM pressure_cells
                         WHERE {filter} ORDER BY {order} LIMIT $3 OFFSET $4"
                    ),
                    &[&a, &b, &limit, &offset],
                )
                .await?
                .iter()
                .map(|r| PressureRow {
                    contact: r.get(0),
                    pressure: r.get::<_, i16>(1).clamp(0, 4) as u8,
                    value: r.get::<_, i16>(2).clamp(0, 4) as u8,
                    gap: r.get::<_, i16>(3).clamp(-4, 4) as i8,
                    fatigue_milli: r.get(4),
                    solicitations: r.get::<_, i64>(5).clamp(0, i64::from(u32::MAX)) as u32,
                })
                .collect();
            Ok((rows, total.max(0) as u64))
        })
    }
}
