//! Scores, snapshots, published changes and pass bookkeeping in SQLite.

use super::conn::{
    Conn, KEYS_PER_QUERY, from_micros, in_list, load_companies, load_company, merge_rows, to_micros,
};
use super::events::EVENT_COLUMNS;
use super::sums::Sums;
use crate::core::model::{Company, Contact, Event, Timestamp};
use crate::domain::scoring::StoredScore;
use crate::ports::store::{RescoreVisitor, ScoreWrite, Snapshot, StoreError, StoredChange};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;

/// A contact's record with its stored score, if any.
type ScoreRow = (
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

/// `[[at, score], …]` as stored.
pub(crate) fn decode_recent(text: Option<&str>) -> Result<Vec<(Timestamp, i64)>, StoreError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let raw: Vec<(i64, i64)> = super::conn::decode(text)?;
    raw.into_iter()
        .map(|(at, score)| Ok((from_micros(at)?, score)))
        .collect()
}

pub(crate) fn encode_recent(recent: &[(Timestamp, i64)]) -> Result<String, StoreError> {
    let raw: Vec<(i64, i64)> = recent.iter().map(|(at, s)| (to_micros(*at), *s)).collect();
    super::conn::encode(&raw)
}

/// What rescoring one contact needs: its internal key, the contact, its
/// events (oldest first) and its stored score.
type RescoreInput = (i64, Contact, Vec<Event>, Option<StoredScore>);

/// The stored score in columns 2..=6 of a contact row (`score, band,
/// next_change_at, scored_at, recent`), none if never scored.
pub(super) fn stored_from_row(
    row: &rusqlite::Row<'_>,
    contact: &Contact,
) -> Result<Option<StoredScore>, StoreError> {
    let Some(score) = row.get::<_, Option<i64>>(2)? else {
        return Ok(None);
    };
    Ok(Some(StoredScore {
        contact: contact.id.clone(),
        score,
        band: row.get(3)?,
        next_change_at: row.get::<_, Option<i64>>(4)?.map(from_micros).transpose()?,
        scored_at: from_micros(row.get(5)?)?,
        recent: decode_recent(
            row.get_ref(6)?
                .as_str_or_null()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )?,
        desk_mark: None,
    }))
}

/// [`stored_from_row`] with the desk mark in column 7, for the rescoring
/// reads (the only ones that compare it).
fn stored_with_mark(
    row: &rusqlite::Row<'_>,
    contact: &Contact,
) -> Result<Option<StoredScore>, StoreError> {
    let mut stored = stored_from_row(row, contact)?;
    if let Some(s) = stored.as_mut() {
        s.desk_mark = row.get(7)?;
    }
    Ok(stored)
}

/// The columns [`read_change`] reads, from `score_changes s`.
pub(super) const CHANGE_COLUMNS: &str =
    "s.seq, s.contact, s.at, s.kind, s.from_score, s.to_score, s.from_band, s.to_band, s.since";

/// A published change from a row starting with [`CHANGE_COLUMNS`].
pub(super) fn read_change(
    r: &rusqlite::Row<'_>,
    contact: String,
) -> Result<StoredChange, StoreError> {
    Ok(StoredChange {
        seq: r.get(0)?,
        contact,
        at: from_micros(r.get(2)?)?,
        kind: r.get(3)?,
        from_score: r.get(4)?,
        to_score: r.get(5)?,
        from_band: r.get(6)?,
        to_band: r.get(7)?,
        since: from_micros(r.get(8)?)?,
    })
}

impl Conn {
    /// The internal keys of [`ScoreStore::rescore_candidates`], sorted,
    /// without reading each contact's id: a pass that reads its contacts
    /// by key has no use for them, and the lookup costs a B-tree descent
    /// per candidate before any worker starts.
    pub(super) fn rescore_candidate_keys(
        &self,
        now: Timestamp,
        after_seq: i64,
    ) -> Result<Vec<i64>, StoreError> {
        // UNION ALL keeps each branch on its index; duplicates go below.
        let mut stmt = self.conn.prepare_cached(
            "SELECT contact FROM event_feed WHERE seq > ?2
             UNION ALL SELECT contact FROM scores WHERE next_change_at <= ?1",
        )?;
        let rows = stmt.query_map(params![to_micros(now), after_seq], |r| r.get(0))?;
        let mut keys: Vec<i64> = rows.collect::<Result<_, _>>()?;
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// [`ScoreStore::rescore_input`] for many contacts, in key order: one
    /// query for contacts and scores and one for events per
    /// [`KEYS_PER_QUERY`] keys, merge-joined like a full rebuild's scan.
    /// Point reads cost a statement run and a B-tree descent per table and
    /// contact; sorted batches share both. Unknown keys are left out.
    pub(super) fn rescore_inputs(
        &self,
        keys: &[i64],
        out: &mut Vec<RescoreInput>,
    ) -> Result<(), StoreError> {
        let mut contacts = self.conn.prepare_cached(&in_list(
            "SELECT c.rowid, c.record, s.score, s.band, s.next_change_at, s.scored_at, s.recent,
               s.desk_mark
             FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid WHERE c.rowid IN (",
            ") ORDER BY c.rowid",
        ))?;
        let mut events = self.conn.prepare_cached(&in_list(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE contact IN ("),
            ") ORDER BY contact, at, seq",
        ))?;
        let reader = self.events();
        for batch in keys.chunks(KEYS_PER_QUERY) {
            let Some(&last) = batch.last() else { continue };
            // Short batches repeat their last key: `IN` ignores duplicates.
            let padded = || {
                batch
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(last))
                    .take(KEYS_PER_QUERY)
            };
            // Both statements run inside one read transaction, so they see
            // the same snapshot.
            merge_rows(
                contacts.query(rusqlite::params_from_iter(padded()))?,
                events.query(rusqlite::params_from_iter(padded()))?,
                &reader,
                &mut |row, contact, events| {
                    let previous = stored_with_mark(row, &contact)?;
                    out.push((row.get(0)?, contact, std::mem::take(events), previous));
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    /// Takes the queued contacts no unexpired lease holds, in one write
    /// transaction: a concurrent taker (another process) waits for it and
    /// then finds them held.
    pub(super) fn take_changed(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE rescore_queue SET owner = ?1, lease_until = ?3
                 WHERE owner IS NULL OR lease_until <= ?2 RETURNING contact",
            )?;
            let rows = stmt.query_map(
                params![owner, to_micros(now), to_micros(lease_until)],
                |r| r.get(0),
            )?;
            let mut keys: Vec<i64> = rows.collect::<Result<_, _>>()?;
            keys.sort_unstable();
            Ok(keys)
        })
    }

    pub(super) fn release_changed(&mut self, owner: &str) -> Result<u64, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE rescore_queue SET owner = NULL, lease_until = NULL WHERE owner = ?1",
                )?
                .execute([owner])?;
            Ok(n as u64)
        })
    }

    pub(super) fn renew_changed(
        &mut self,
        owner: &str,
        lease_until: Timestamp,
    ) -> Result<u64, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("UPDATE rescore_queue SET lease_until = ?2 WHERE owner = ?1")?
                .execute(params![owner, to_micros(lease_until)])?;
            Ok(n as u64)
        })
    }

    /// Compare-and-set inside one IMMEDIATE transaction: the read and the
    /// write cannot be split by another writer.
    pub(super) fn advance_mark(
        &mut self,
        key: &str,
        expected: Option<i64>,
        new: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let current: Option<String> = tx
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            if current.map(|v| v.parse::<i64>().ok()) != expected.map(Some) {
                return Ok(false);
            }
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, new.to_string()])?;
            Ok(true)
        })
    }

    /// Companies by id with their signals, a few queries for many ids;
    /// unknown ids are left out.
    pub(super) fn companies(&self, ids: &[&str]) -> Result<Vec<Company>, StoreError> {
        load_companies(&self.conn, ids)
    }
}

impl Conn {
    pub(super) fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub(super) fn rescore_candidates(
        &self,
        now: Timestamp,
        after_seq: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, id FROM contacts WHERE rowid IN (
                 SELECT contact FROM event_feed WHERE seq > ?2
                 UNION SELECT contact FROM scores WHERE next_change_at <= ?1
                 UNION SELECT contact FROM rescore_queue)
             ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![to_micros(now), after_seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn rescore_input(
        &self,
        key: i64,
    ) -> Result<Option<(Contact, Vec<Event>, Option<StoredScore>)>, StoreError> {
        let row: Option<ScoreRow> = self
            .conn
            .prepare_cached(
                "SELECT c.record, s.score, s.band, s.next_change_at, s.scored_at, s.recent,
                   s.desk_mark
                 FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid WHERE c.rowid = ?1",
            )?
            .query_row([key], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .optional()?;
        let Some((record, score, band, next, scored_at, recent, desk_mark)) = row else {
            return Ok(None);
        };
        let contact: Contact = super::conn::decode(&record)?;
        let previous = match (score, band, scored_at) {
            (Some(score), Some(band), Some(at)) => Some(StoredScore {
                contact: contact.id.clone(),
                score,
                band,
                next_change_at: next.map(from_micros).transpose()?,
                scored_at: from_micros(at)?,
                recent: decode_recent(recent.as_deref())?,
                desk_mark,
            }),
            _ => None,
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE contact = ?1 ORDER BY at, seq"
        ))?;
        let mut q = stmt.query([key])?;
        let reader = self.events();
        let mut events = Vec::new();
        while let Some(r) = q.next()? {
            let (_, mut event) = reader.event(r)?;
            event.contact.clone_from(&contact.id);
            events.push(event);
        }
        Ok(Some((contact, events, previous)))
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn scoring_input(
        &self,
        id: &str,
    ) -> Result<Option<(Contact, Option<Company>, Vec<Event>)>, StoreError> {
        let Some(contact) = self.contact(id)? else {
            return Ok(None);
        };
        let company = match &contact.company {
            Some(c) => load_company(&self.conn, c)?,
            None => None,
        };
        let events = self.events_of(id)?;
        Ok(Some((contact, company, events)))
    }

    pub(super) fn stored_score(&self, id: &str) -> Result<Option<StoredScore>, StoreError> {
        let row: Option<(i64, String, Option<i64>, i64, String)> = self
            .conn
            .prepare_cached(
                "SELECT s.score, s.band, s.next_change_at, s.scored_at, s.recent FROM scores s
                 JOIN contacts c ON c.rowid = s.contact WHERE c.id = ?1",
            )?
            .query_row([id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        row.map(|row| stored(id, row)).transpose()
    }

    pub(super) fn score_history(
        &self,
        id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let key: Option<i64> = self
            .conn
            .prepare_cached("SELECT rowid FROM contacts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        match key {
            Some(key) => self.score_history_at(key, since),
            None => Ok(Vec::new()),
        }
    }

    pub(super) fn score_history_at(
        &self,
        key: i64,
        since: Option<Timestamp>,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, score, band FROM score_snapshots WHERE contact = ?1 AND at >= ?2 ORDER BY at, seq",
        )?;
        let mut q = stmt.query(params![key, since.map_or(i64::MIN, to_micros)])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(Snapshot {
                at: from_micros(r.get(0)?)?,
                score: r.get(1)?,
                band: r.get(2)?,
            });
        }
        Ok(out)
    }

    pub(super) fn save_scores(
        &mut self,
        batch: &[ScoreWrite],
        now: Timestamp,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let now_us = to_micros(now);
            let campaigns = super::desk::any_campaign(tx)?;
            let mut sums = Sums::default();
            for w in batch {
                let rowid = w.key;
                let recent = encode_recent(&w.recent)?;
                let values = params![
                    rowid,
                    w.score,
                    w.band,
                    w.next_change_at.map(to_micros),
                    now_us,
                    recent,
                    w.desk_mark
                ];
                // Compared and set: another pass may have scored it since.
                // The score and band replaced are read with the check, for
                // the dashboard's buckets (`Sums::scored`); the writer's
                // transaction keeps them so until the update.
                let was = match w.seen {
                    // Most contacts have a score already.
                    Some(seen) => {
                        let Some(was) = tx
                            .prepare_cached(
                                "SELECT score, band FROM scores WHERE contact = ?1 AND scored_at = ?2",
                            )?
                            .query_row(params![rowid, to_micros(seen)], |r| {
                                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                            })
                            .optional()?
                        else {
                            continue;
                        };
                        tx.prepare_cached(
                            "UPDATE scores SET score = ?2, band = ?3, next_change_at = ?4,
                               scored_at = ?5, recent = ?6, desk_mark = ?7
                             WHERE contact = ?1",
                        )?
                        .execute(values)?;
                        Some(was)
                    }
                    // Through `contacts`, so a contact erased meanwhile writes nothing.
                    None => {
                        let added = tx
                            .prepare_cached(
                                "INSERT INTO scores (contact, score, band, next_change_at, scored_at, recent,
                                   desk_mark)
                                 SELECT rowid, ?2, ?3, ?4, ?5, ?6, ?7 FROM contacts WHERE rowid = ?1
                                 ON CONFLICT(contact) DO NOTHING",
                            )?
                            .execute(values)?;
                        if added == 0 {
                            continue;
                        }
                        None
                    }
                };
                sums.scored(
                    was.as_ref().map(|(score, band)| (*score, band.as_str())),
                    w.score,
                    &w.band,
                );
                if w.snapshot {
                    tx.prepare_cached("INSERT INTO score_snapshots (contact, at, score, band) VALUES (?1, ?2, ?3, ?4)")?
                        .execute(params![rowid, now_us, w.score, w.band])?;
                }
                for c in &w.changes {
                    tx.prepare_cached(
                        "INSERT INTO score_changes (contact, at, kind, from_score, to_score, from_band, to_band, since)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        rowid,
                        to_micros(c.at),
                        c.kind,
                        c.from_score,
                        c.to_score,
                        c.from_band,
                        c.to_band,
                        to_micros(c.since)
                    ])?;
                    sums.changed(to_micros(c.at), &c.from_band, &c.to_band);
                }
                super::desk::save_desk(
                    tx,
                    rowid,
                    (&w.contact, &w.band, w.score),
                    w.desk.as_ref(),
                    &w.campaigns,
                    campaigns,
                    w.seen.is_some(),
                )?;
                super::desk::save_queue(tx, rowid, w)?;
                // Queued again since it was taken: the next pass sees the change.
                tx.prepare_cached("DELETE FROM rescore_queue WHERE contact = ?1 AND owner IS NOT NULL")?
                    .execute([rowid])?;
            }
            sums.finish(tx)?;
            for (key, value) in meta {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, value])?;
            }
            Ok(())
        })
    }

    pub(super) fn score_changes(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<StoredChange>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {CHANGE_COLUMNS}, c.id FROM score_changes s JOIN contacts c ON c.rowid = s.contact
             WHERE s.seq > ?1 ORDER BY s.seq LIMIT ?2"
        ))?;
        let mut q = stmt.query(params![after_seq, limit])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(read_change(r, r.get(9)?)?);
        }
        Ok(out)
    }

    pub(super) fn contact_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT min(rowid), max(rowid) FROM contacts")?
            .query_row([], |r| {
                Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .map(|(lo, hi)| lo.zip(hi))?)
    }

    pub(super) fn scan_for_rescore(
        &self,
        range: (i64, i64),
        f: &mut RescoreVisitor<'_>,
    ) -> Result<(), StoreError> {
        self.merge_scan(
            "SELECT c.rowid, c.record, s.score, s.band, s.next_change_at, s.scored_at, s.recent,
               s.desk_mark
             FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid
             WHERE c.rowid >= ?1 AND c.rowid < ?2 ORDER BY c.rowid",
            range,
            &mut |row, contact, events| {
                let previous = stored_with_mark(row, &contact)?;
                f(row.get(0)?, contact, events, previous)
            },
        )
    }

    /// From the per-bucket counts the triggers keep (migration 6), not a
    /// scan of the scores.
    pub(super) fn band_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT band, sum(n) FROM ui_score_buckets GROUP BY band HAVING sum(n) > 0",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The stored score of the contact with internal key `key` (and id `id`).
pub(super) fn stored_score_of(
    conn: &Connection,
    key: i64,
    id: &str,
) -> Result<Option<StoredScore>, StoreError> {
    conn.prepare_cached(
        "SELECT score, band, next_change_at, scored_at, recent FROM scores WHERE contact = ?1",
    )?
    .query_row([key], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()?
    .map(|row| stored(id, row))
    .transpose()
}

/// A `scores` row as read: score, band, next change, scored at, recent.
fn stored(
    id: &str,
    (score, band, next, at, recent): (i64, String, Option<i64>, i64, String),
) -> Result<StoredScore, StoreError> {
    Ok(StoredScore {
        contact: id.to_string(),
        score,
        band,
        next_change_at: next.map(from_micros).transpose()?,
        scored_at: from_micros(at)?,
        recent: decode_recent(Some(&recent))?,
        desk_mark: None,
    })
}

#[cfg(test)]
mod tests {
    use crate::adapters::sqlite::SqliteStore;
    use crate::core::model::Timestamp;
    use crate::domain::ingest::{Format, Kind, read_lines};
    use crate::ports::store::{PlanStore, Records, ScoreStore, ScoreWrite, StoredChange};
    use std::time::Duration;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("instant")
    }

    /// A score of `score` in `band` for contact `key`, compared and set
    /// against `seen`, with the band change `moved` (from, to) if any.
    fn write(
        key: i64,
        score: i64,
        band: &str,
        seen: Option<Timestamp>,
        moved: Option<(&str, &str)>,
        at: Timestamp,
    ) -> ScoreWrite {
        ScoreWrite {
            key,
            contact: String::new(),
            score,
            band: band.into(),
            next_change_at: None,
            snapshot: true,
            recent: Vec::new(),
            changes: moved
                .map(|(from, to)| StoredChange {
                    seq: 0,
                    contact: String::new(),
                    at,
                    kind: "band".into(),
                    from_score: 0,
                    to_score: score,
                    from_band: from.into(),
                    to_band: to.into(),
                    since: at,
                })
                .into_iter()
                .collect(),
            seen,
            desk: None,
            campaigns: Default::default(),
            desk_mark: 0,
            hot_lead: None,
        }
    }

    /// A rescoring pass adds the dashboard's score buckets and band
    /// crossings as sums over its transaction: after each batch they are
    /// those recounted from the scores and changes (negative scores,
    /// unchanged rewrites, a lost compare-and-set and an erasure included).
    #[test]
    fn score_buckets_and_band_moves_summed_match_a_recount() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path, Duration::from_secs(5), 16).expect("open");
        let raw = rusqlite::Connection::open(&path).expect("raw");
        let csv = "id,email\nc1,c1@example.org\nc2,c2@example.org\nc3,c3@example.org\nc4,c4@example.org\n";
        let patches: Vec<_> = read_lines(csv.as_bytes(), Format::Csv, Kind::Contact)
            .expect("header")
            .map(|l| l.item.expect("valid"))
            .collect();
        store.upsert_contacts(&patches).expect("contacts");
        let key = |id: &str| store.contact_key(id).expect("read").expect("known");
        let (c1, c2, c3, c4) = (key("c1"), key("c2"), key("c3"), key("c4"));
        let recount = || {
            let rows = |sql: &str| -> Vec<(i64, String, String, i64)> {
                let mut stmt = raw.prepare(sql).expect("sql");
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .expect("query")
                    .map(|r| r.expect("row"))
                    .collect()
            };
            assert_eq!(
                rows("SELECT lo, band, '', n FROM ui_score_buckets WHERE n <> 0 ORDER BY 1, 2"),
                rows(
                    "SELECT score - ((score % 100) + 100) % 100, band, '', count(*) FROM scores
                     GROUP BY 1, 2 ORDER BY 1, 2"
                )
            );
            assert_eq!(
                rows(
                    "SELECT day, from_band, to_band, n FROM ui_band_moves WHERE n <> 0 ORDER BY 1, 2, 3"
                ),
                rows(
                    "SELECT at / 86400000000, from_band, to_band, count(*) FROM score_changes
                     WHERE from_band <> to_band GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
                )
            );
        };

        let first = t("2026-11-20T12:00:00Z");
        let batch = [
            write(c1, 120, "warm", None, None, first),
            write(c2, 250, "hot", None, Some(("cold", "hot")), first),
            write(c3, -30, "cold", None, Some(("cold", "cold")), first),
            write(c4, 120, "warm", None, None, first),
        ];
        store.save_scores(&batch, first, &[]).expect("first scores");
        recount();
        let buckets: i64 = raw
            .query_row("SELECT sum(n) FROM ui_score_buckets", [], |r| r.get(0))
            .expect("sum");
        assert_eq!(buckets, 4);

        // The next day: c1 moves within its bucket, c2 to another bucket,
        // c3 to another band; c4's compare-and-set is lost (scored since),
        // and a second write of c1 in the batch is lost too.
        let second = t("2026-11-21T12:00:00Z");
        let batch = [
            write(c1, 180, "warm", Some(first), None, second),
            write(c2, 310, "hot", Some(first), None, second),
            write(c3, 40, "warm", Some(first), Some(("cold", "warm")), second),
            write(c4, 900, "hot", Some(second), Some(("warm", "hot")), second),
            write(c1, 500, "hot", Some(first), None, second),
        ];
        store
            .save_scores(&batch, second, &[])
            .expect("second scores");
        recount();
        let stored: (i64, String) = raw
            .query_row(
                "SELECT score, band FROM scores WHERE contact = ?1",
                [c4],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("c4");
        assert_eq!(stored, (120, "warm".into()));

        // The same scores again: nothing moves.
        let third = t("2026-11-22T12:00:00Z");
        let batch = [write(c2, 310, "hot", Some(second), None, third)];
        store.save_scores(&batch, third, &[]).expect("unchanged");
        recount();

        // An erasure takes the contact's score and changes out (the delete
        // triggers).
        assert!(store.erase_contact("c2").expect("erase"));
        recount();
    }
}
