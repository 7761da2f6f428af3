//! The planner's tables of the SQLite store: wake instants and broadcasts;
//! planned rows go to the outbox.

use super::sqlite::{SqliteStore, decode, encode, from_micros, load_company, to_micros};
use super::sqlite_outbox::{ROW_COLUMNS, read_row, weighs};
use super::{PlanInput, PlanStore, PlanWrite, ScoreStore, StoreError, StoredChange};
use crate::followups::BroadcastSpec;
use crate::model::{Contact, Timestamp};
use rusqlite::{OptionalExtension, params};

impl PlanStore for SqliteStore {
    fn plan_candidates(
        &self,
        now: Timestamp,
        after_event_seq: i64,
        after_change_seq: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT contact FROM events WHERE seq > ?1
             UNION SELECT contact FROM score_changes WHERE seq > ?2
             UNION SELECT contact FROM plan_wake WHERE at <= ?3
             ORDER BY 1",
        )?;
        let keys = stmt
            .query_map(
                params![after_event_seq, after_change_seq, to_micros(now)],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn contact_keys(&self) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rowid FROM contacts ORDER BY rowid")?;
        let keys = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn contact_key(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT rowid FROM contacts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    fn last_change_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM score_changes")?
            .query_row([], |r| r.get(0))?)
    }

    fn plan_input(
        &self,
        key: i64,
        changes_since: Timestamp,
    ) -> Result<Option<PlanInput>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached("SELECT id, record FROM contacts WHERE rowid = ?1")?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((id, record)) = row else {
            return Ok(None);
        };
        let contact: Contact = decode(&record)?;
        let events = weighs(&self.conn, key, &id)?;
        let company = match &contact.company {
            Some(c) => load_company(&self.conn, c)?,
            None => None,
        };
        let score = self.stored_score(&id)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, at, kind, from_score, to_score, from_band, to_band, since
             FROM score_changes WHERE contact = ?1 AND at >= ?2 ORDER BY at",
        )?;
        let mut q = stmt.query(params![key, to_micros(changes_since)])?;
        let mut changes = Vec::new();
        while let Some(r) = q.next()? {
            changes.push(StoredChange {
                seq: r.get(0)?,
                contact: id.clone(),
                at: from_micros(r.get(1)?)?,
                kind: r.get(2)?,
                from_score: r.get(3)?,
                to_score: r.get(4)?,
                from_band: r.get(5)?,
                to_band: r.get(6)?,
                since: from_micros(r.get(7)?)?,
            });
        }
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM outbox o JOIN contacts c ON c.rowid = o.contact
             WHERE o.contact = ?1 ORDER BY o.seq"
        ))?;
        let mut q = stmt.query([key])?;
        let mut rows = Vec::new();
        while let Some(r) = q.next()? {
            rows.push(read_row(r)?);
        }
        Ok(Some(PlanInput {
            key,
            contact,
            company,
            events,
            score,
            changes,
            rows,
        }))
    }

    fn plan_inputs(
        &self,
        keys: &[i64],
        changes_since: Timestamp,
    ) -> Result<Vec<PlanInput>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut out = Vec::with_capacity(keys.len());
        for &key in keys {
            if let Some(input) = self.plan_input(key, changes_since)? {
                out.push(input);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn save_plan(
        &mut self,
        batch: &[PlanWrite],
        now: Timestamp,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let now_us = to_micros(now);
        self.write(|tx| {
            for w in batch {
                for row in &w.rows {
                    let s = &row.send;
                    let n = tx
                        .prepare_cached(
                            "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel, state,
                                                 due_at, first_due, payload, last_error, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                             ON CONFLICT(idem_key) DO NOTHING",
                        )?
                        .execute(params![
                            s.idem_key,
                            w.key,
                            s.followup,
                            s.kind.as_str(),
                            s.priority,
                            s.channel,
                            row.state.as_str(),
                            to_micros(s.due_at),
                            to_micros(row.first_due),
                            encode(&s.payload)?,
                            (row.decision == "drop" || row.decision == "block")
                                .then(|| row.reasons.to_string()),
                            now_us
                        ])?;
                    if n == 0 {
                        continue;
                    }
                    let until = (row.decision == "defer").then(|| to_micros(s.due_at));
                    tx.prepare_cached(
                        "INSERT INTO decision_log (contact, at, followup, channel, decision, until, reasons)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        w.key,
                        now_us,
                        s.followup,
                        s.channel,
                        row.decision,
                        until,
                        encode(&row.reasons)?
                    ])?;
                }
                for (seq, reason) in &w.drops {
                    tx.prepare_cached(
                        "UPDATE outbox SET state = 'dropped', last_error = ?2, updated_at = ?3
                         WHERE seq = ?1 AND state IN ('planned', 'deferred', 'retrying')",
                    )?
                    .execute(params![seq, reason, now_us])?;
                }
                match w.wake {
                    Some(at) => tx
                        .prepare_cached(
                            "INSERT INTO plan_wake (contact, at) VALUES (?1, ?2)
                             ON CONFLICT(contact) DO UPDATE SET at = excluded.at",
                        )?
                        .execute(params![w.key, to_micros(at)])?,
                    None => tx
                        .prepare_cached("DELETE FROM plan_wake WHERE contact = ?1")?
                        .execute([w.key])?,
                };
            }
            for (key, value) in meta {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, value])?;
            }
            Ok(())
        })
    }

    fn create_broadcast(
        &mut self,
        spec: &BroadcastSpec,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let json = encode(spec)?;
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "INSERT INTO broadcasts (id, spec, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO NOTHING",
                )?
                .execute(params![spec.id, json, to_micros(now)])?;
            Ok(n == 1)
        })
    }

    fn broadcasts(&self) -> Result<Vec<BroadcastSpec>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT spec FROM broadcasts ORDER BY created_at, id")?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .map(|j| decode(&j?))
            .collect()
    }
}
