//! The planner's tables of the PostgreSQL store: wake instants, memos,
//! broadcasts and pass marks; planned rows go to the outbox.

use super::PgStore;
use super::outbox::{ROW_COLUMNS, read_row};
use super::records::{contact_rowid, distinct_keys, request_plan, set_meta};
use super::scores::{CHANGE_COLUMNS, load_companies, read_change, stored_from_row};
use crate::adapters::sqlite::shared::{decode, decode_props, encode, from_micros, to_micros};
use crate::core::model::{Company, Contact, Event, Timestamp};
use crate::domain::fatigue::{EXEMPT_PROP, Verdict};
use crate::ports::store::{
    BroadcastSpec, PassMark, PlanInput, PlanRead, PlanStore, PlanWrite, StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::{GenericClient, Transaction};

/// How an exempt send's mark reads in stored props (compact JSON).
const EXEMPT_MARK: &str = "\"exempt\":true";
/// Contacts read per query by [`PlanStore::plan_inputs`].
const PLAN_BATCH: usize = 1_000;
/// Counts requests for planning (see [`PlanStore::request_plan`]).
const PLAN_REQUESTED: &str = "plan.requested";
/// The highest request a completed pass met.
const PLAN_DONE: &str = "plan.done";

async fn meta_number(c: &impl GenericClient, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(c
        .query_opt(
            "SELECT CASE WHEN value ~ '^-?[0-9]{1,18}$' THEN value::bigint END FROM meta WHERE key = $1",
            &[&key],
        )
        .await?
        .and_then(|r| r.get(0)))
}

/// Hands each row to the input of the contact whose key is in column
/// `key` (`inputs` sorted by key); rows of other keys are skipped.
fn each_row(
    rows: &[tokio_postgres::Row],
    key: usize,
    inputs: &mut [PlanInput],
    mut f: impl FnMut(&mut PlanInput, &tokio_postgres::Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for r in rows {
        let owner: i64 = r.get(key);
        if let Ok(i) = inputs.binary_search_by_key(&owner, |i| i.key) {
            f(&mut inputs[i], r)?;
        }
    }
    Ok(())
}

/// Reads a batch of contacts (keys ascending) into `out`: one query per
/// table for the whole batch. Contacts whose memo the pass trusts read only
/// the events after it.
async fn read_batch(
    tx: &Transaction<'_>,
    keys: &[i64],
    read: &PlanRead<'_>,
    out: &mut Vec<PlanInput>,
) -> Result<(), StoreError> {
    let first = out.len();
    let rows = tx
        .query(
            "SELECT c.rowid, c.record, s.score, s.band, s.next_change_at, s.scored_at, s.recent,
                    m.upto, m.memo, w.at, d.status
             FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid
             LEFT JOIN contact_desk d ON d.contact = c.rowid
             LEFT JOIN plan_memo m ON m.contact = c.rowid
             LEFT JOIN plan_wake w ON w.contact = c.rowid
             WHERE c.rowid = ANY($1) ORDER BY c.rowid",
            &[&keys],
        )
        .await?;
    for r in &rows {
        let key: i64 = r.get(0);
        let contact: Contact = decode(r.get(1))?;
        let score = stored_from_row(r, &contact)?;
        let memo = match r.get::<_, Option<i64>>(7) {
            Some(upto) => (read.memo)(key, from_micros(upto)?, r.get::<_, &[u8]>(8)),
            None => None,
        };
        out.push(PlanInput {
            key,
            contact,
            company: None,
            memo,
            older: Vec::new(),
            left_out: 0,
            recent: Vec::new(),
            reserved: Vec::new(),
            score,
            changes: Vec::new(),
            rows: Vec::new(),
            wake: r.get::<_, Option<i64>>(9).map(from_micros).transpose()?,
            prospect: r.get(10),
        });
    }
    let inputs = &mut out[first..];
    if inputs.is_empty() {
        return Ok(());
    }
    let (with_memo, whole): (Vec<&PlanInput>, Vec<&PlanInput>) =
        inputs.iter().partition(|i| i.memo.is_some());
    let with_memo: Vec<i64> = with_memo.iter().map(|i| i.key).collect();
    let whole: Vec<i64> = whole.iter().map(|i| i.key).collect();
    let recent_from = to_micros(read.recent_from);
    for (keys, sql) in [
        (
            with_memo,
            "SELECT e.contact, e.event_id, e.type, e.at, e.channel, e.props
             FROM plan_memo m JOIN events e ON e.contact = m.contact AND e.at > m.upto
             WHERE m.contact = ANY($1) ORDER BY e.contact, e.at, e.seq",
        ),
        (
            whole,
            "SELECT contact, event_id, type, at, channel, props FROM events
             WHERE contact = ANY($1) ORDER BY contact, at, seq",
        ),
    ] {
        if keys.is_empty() {
            continue;
        }
        let rows = tx.query(sql, &[&keys]).await?;
        each_row(&rows, 0, inputs, |input, r| {
            let at: i64 = r.get(3);
            let older = at <= recent_from;
            let kind: &str = r.get(2);
            if older && !read.folded.contains(kind) {
                input.left_out += 1;
                return Ok(());
            }
            let at = from_micros(at)?;
            let text: &str = r.get(5);
            // Older events are only folded: no id, contact or props (but a
            // call's outcome, and the mark of an exempt send) to carry.
            let event = if older {
                Event {
                    id: None,
                    contact: String::new(),
                    props: if kind == read.props_of {
                        decode_props(text)?
                    } else if text.contains(EXEMPT_MARK) {
                        let mut props = serde_json::Map::new();
                        props.insert(EXEMPT_PROP.into(), true.into());
                        props
                    } else {
                        serde_json::Map::new()
                    },
                    kind: kind.to_string(),
                    at,
                    channel: r.get(4),
                }
            } else {
                Event {
                    id: r.get(1),
                    contact: input.contact.id.clone(),
                    props: decode_props(text)?,
                    kind: kind.to_string(),
                    at,
                    channel: r.get(4),
                }
            };
            if older {
                input.older.push(event);
            } else {
                input.recent.push(event);
            }
            Ok(())
        })?;
    }

    let rows = tx
        .query(
            "SELECT l.contact, l.at, l.event_type, l.channel, o.idem_key FROM fatigue_ledger l
             JOIN outbox o ON o.seq = l.outbox WHERE l.contact = ANY($1)
             ORDER BY l.contact, l.at",
            &[&keys],
        )
        .await?;
    each_row(&rows, 0, inputs, |input, r| {
        input.reserved.push(Event {
            id: r.get(4),
            contact: input.contact.id.clone(),
            kind: r.get(2),
            at: from_micros(r.get(1))?,
            channel: r.get(3),
            props: serde_json::Map::new(),
        });
        Ok(())
    })?;

    let rows = tx
        .query(
            &format!(
                "SELECT {CHANGE_COLUMNS} FROM score_changes s WHERE s.contact = ANY($1)
                 AND s.at >= $2 ORDER BY s.contact, s.at"
            ),
            &[&keys, &to_micros(read.changes_since)],
        )
        .await?;
    each_row(&rows, 1, inputs, |input, r| {
        input
            .changes
            .push(read_change(r, input.contact.id.clone())?);
        Ok(())
    })?;

    let rows = tx
        .query(
            &format!(
                "SELECT {ROW_COLUMNS}, o.contact FROM outbox o JOIN contacts c ON c.rowid = o.contact
                 WHERE o.contact = ANY($1) ORDER BY o.contact, o.seq"
            ),
            &[&keys],
        )
        .await?;
    each_row(&rows, 15, inputs, |input, r| {
        input.rows.push(read_row(r)?);
        Ok(())
    })?;

    let mut ids: Vec<&str> = inputs
        .iter()
        .filter_map(|i| i.contact.company.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (mut found, missing) = read.companies.lookup(&ids);
    if !missing.is_empty() {
        let mut loaded: HashMap<String, Arc<Company>> = load_companies(tx, &missing)
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), Arc::new(c)))
            .collect();
        let fresh: Vec<(String, Option<Arc<Company>>)> = missing
            .iter()
            .map(|&id| (id.to_string(), loaded.remove(id)))
            .collect();
        for (&id, (_, company)) in missing.iter().zip(&fresh) {
            found.insert(id, company.clone());
        }
        read.companies.remember(fresh);
    }
    let companies: Vec<Option<Arc<Company>>> = inputs
        .iter()
        .map(|i| {
            i.contact
                .company
                .as_deref()
                .and_then(|id| found.get(id).cloned().flatten())
        })
        .collect();
    for (input, company) in inputs.iter_mut().zip(companies) {
        input.company = company;
    }
    Ok(())
}

impl PlanStore for PgStore {
    fn plan_candidates(
        &self,
        now: Timestamp,
        after_event_seq: i64,
        after_change_seq: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.read(async |c| {
            distinct_keys(
                c,
                "SELECT contact FROM events WHERE seq > $1
                     UNION ALL SELECT contact FROM score_changes WHERE seq > $2
                     UNION ALL SELECT contact FROM plan_wake WHERE at <= $3",
                &[&after_event_seq, &after_change_seq, &to_micros(now)],
            )
            .await
        })
    }

    fn contact_keys(&self) -> Result<Vec<i64>, StoreError> {
        self.read(async |c| {
            Ok(c.query("SELECT rowid FROM contacts ORDER BY rowid", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn contact_key(&self, id: &str) -> Result<Option<i64>, StoreError> {
        self.read(async |c| contact_rowid(c, id).await)
    }

    fn last_change_seq(&self) -> Result<i64, StoreError> {
        self.read(async |c| {
            Ok(
                c.query_one("SELECT value FROM counters WHERE name = 'changes'", &[])
                    .await?
                    .get(0),
            )
        })
    }

    fn plan_inputs(&self, keys: &[i64], read: &PlanRead<'_>) -> Result<Vec<PlanInput>, StoreError> {
        self.snapshot(async |tx| {
            let mut out = Vec::with_capacity(keys.len());
            for batch in keys.chunks(PLAN_BATCH) {
                read_batch(tx, batch, read, &mut out).await?;
            }
            Ok(out)
        })
    }

    fn new_events(&self, after_seq: i64) -> Result<Vec<(i64, Timestamp)>, StoreError> {
        self.read(async |c| {
            c.query(
                "SELECT contact, min(at) FROM events WHERE seq > $1 GROUP BY contact",
                &[&after_seq],
            )
            .await?
            .iter()
            .map(|r| Ok((r.get(0), from_micros(r.get(1))?)))
            .collect()
        })
    }

    fn save_plan(&self, batch: &[PlanWrite], now: Timestamp) -> Result<(), StoreError> {
        let now_us = to_micros(now);
        self.tx(async |tx| {
            for w in batch {
                for row in &w.rows {
                    let s = &row.send;
                    let error = match row.decision {
                        Verdict::Drop | Verdict::Block => Some(encode(&row.reasons)?),
                        _ => None,
                    };
                    let n = tx
                        .execute(
                            "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel,
                               state, due_at, first_due, payload, last_error, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                             ON CONFLICT (idem_key) DO NOTHING",
                            &[
                                &s.idem_key,
                                &w.key,
                                &s.followup,
                                &s.kind.as_str(),
                                &i64::from(s.priority),
                                &s.channel,
                                &row.state.as_str(),
                                &to_micros(s.due_at),
                                &to_micros(row.first_due),
                                &encode(&s.payload)?,
                                &error,
                                &now_us,
                            ],
                        )
                        .await?;
                    if n == 0 {
                        continue;
                    }
                    let until = (row.decision == Verdict::Defer).then(|| to_micros(s.due_at));
                    tx.execute(
                        "INSERT INTO decision_log (contact, at, followup, channel, decision, until, reasons)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &w.key,
                            &now_us,
                            &s.followup,
                            &s.channel,
                            &row.decision.as_str(),
                            &until,
                            &encode(&row.reasons)?,
                        ],
                    )
                    .await?;
                }
                for (seq, reason) in &w.drops {
                    tx.execute(
                        "UPDATE outbox SET state = 'dropped', last_error = $2, updated_at = $3
                         WHERE seq = $1 AND state IN ('planned', 'deferred', 'retrying')",
                        &[seq, reason, &now_us],
                    )
                    .await?;
                }
                if let Some(memo) = &w.memo {
                    tx.execute(
                        "INSERT INTO plan_memo (contact, upto, memo) SELECT rowid, $2, $3
                         FROM contacts WHERE rowid = $1
                         ON CONFLICT (contact) DO UPDATE SET upto = excluded.upto, memo = excluded.memo",
                        &[&w.key, &to_micros(memo.upto), &memo.encode()],
                    )
                    .await?;
                }
                if w.wake == w.wake_was {
                    continue;
                }
                match w.wake {
                    Some(at) => {
                        tx.execute(
                            "INSERT INTO plan_wake (contact, at) SELECT rowid, $2
                             FROM contacts WHERE rowid = $1
                             ON CONFLICT (contact) DO UPDATE SET at = excluded.at",
                            &[&w.key, &to_micros(at)],
                        )
                        .await?
                    }
                    None => {
                        tx.execute("DELETE FROM plan_wake WHERE contact = $1", &[&w.key])
                            .await?
                    }
                };
            }
            Ok(())
        })
    }

    /// Each mark in one upsert: set to `reached` if it still holds `seen`,
    /// else to the lower of the two, checked on the newest row version.
    fn finish_pass(
        &self,
        marks: &[PassMark<'_>],
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        self.tx(async |tx| {
            for m in marks {
                let seen = m.seen.map(|s| s.to_string());
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $3::bigint::text)
                     ON CONFLICT (key) DO UPDATE SET value = CASE
                       WHEN meta.value = $2 THEN $3::bigint::text
                       WHEN meta.value ~ '^-?[0-9]{1,18}$' THEN least(meta.value::bigint, $3)::text
                       ELSE $3::bigint::text END",
                    &[&m.key, &seen, &m.reached],
                )
                .await?;
            }
            set_meta(tx, meta).await?;
            Ok(())
        })
    }

    fn create_broadcast(&self, spec: &BroadcastSpec, now: Timestamp) -> Result<bool, StoreError> {
        let json = encode(spec)?;
        self.tx(async |tx| {
            let n = tx
                .execute(
                    "INSERT INTO broadcasts (id, spec, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                    &[&spec.id, &json, &to_micros(now)],
                )
                .await?;
            if n == 1 {
                request_plan(tx).await?;
            }
            Ok(n == 1)
        })
    }

    fn broadcasts(&self) -> Result<Vec<BroadcastSpec>, StoreError> {
        self.read(async |c| {
            c.query("SELECT spec FROM broadcasts ORDER BY created_at, id", &[])
                .await?
                .iter()
                .map(|r| decode(r.get(0)))
                .collect()
        })
    }

    fn request_plan(&self) -> Result<i64, StoreError> {
        self.tx(async |tx| {
            request_plan(tx).await?;
            Ok(meta_number(tx, PLAN_REQUESTED).await?.unwrap_or(0))
        })
    }

    fn plan_requested(&self) -> Result<bool, StoreError> {
        self.snapshot(async |tx| {
            let requested = meta_number(tx, PLAN_REQUESTED).await?.unwrap_or(0);
            Ok(requested > meta_number(tx, PLAN_DONE).await?.unwrap_or(0))
        })
    }

    fn plan_done(&self, upto: i64) -> Result<(), StoreError> {
        self.tx(async |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2::bigint::text)
                 ON CONFLICT (key) DO UPDATE SET value = greatest(
                   CASE WHEN meta.value ~ '^-?[0-9]{1,18}$' THEN meta.value::bigint END, $2)::text",
                &[&PLAN_DONE, &upto],
            )
            .await?;
            Ok(())
        })
    }
}
