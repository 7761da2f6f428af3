//! The planner's tables of the SQLite store: wake instants and broadcasts;
//! planned rows go to the outbox.

use super::conn::{
    Conn, KEYS_PER_QUERY, decode, encode, from_micros, in_list, load_all_companies, load_companies,
    to_micros,
};
use super::events::{EventReader, Interned, StoredProps};
use super::outbox::{ROW_COLUMNS, read_row};
use super::scores::{CHANGE_COLUMNS, read_change, stored_from_row};
use super::sums::Sums;
use crate::core::model::{Company, Contact, Event, FollowUpKind, Timestamp};
use crate::domain::fatigue::admit::Why;
use crate::domain::fatigue::{EXEMPT_PROP, Verdict};
use crate::domain::outbox::State;
use crate::ports::store::BroadcastSpec;
use crate::ports::store::{PassMark, PlanInput, PlanRead, PlanWrite, Props, StoreError};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Writes a planned row, once per idempotency key.
pub(super) const PLAN_ROW: &str =
    "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel, state,
                         due_at, first_due, payload, last_error, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
     ON CONFLICT(idem_key) DO NOTHING";

/// Drops a pending row (its nurture was left) and counts the move; a row
/// no longer pending is left as it is.
fn drop_row(
    tx: &Connection,
    sums: &mut Sums,
    seq: i64,
    reason: &str,
    now_us: i64,
) -> Result<(), StoreError> {
    // Comparisons, not a list: see `ready!`.
    let was = tx
        .prepare_cached(
            "SELECT state, first_due, followup, kind, channel FROM outbox
             WHERE seq = ?1 AND (state = 'planned' OR state = 'deferred' OR state = 'retrying')",
        )?
        .query_row([seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((state, first_due, followup, kind, channel)) = was else {
        return Ok(());
    };
    let state: State = state.parse().map_err(StoreError::Corrupt)?;
    let kind: FollowUpKind = kind.parse().map_err(StoreError::Corrupt)?;
    tx.prepare_cached(
        "UPDATE outbox SET state = 'dropped', last_error = ?2, updated_at = ?3 WHERE seq = ?1",
    )?
    .execute(params![seq, reason, now_us])?;
    sums.moved(
        first_due,
        &followup,
        kind.as_str(),
        &channel,
        state,
        State::Dropped,
    );
    Ok(())
}

/// How an exempt send's mark reads in stored props (compact JSON).
const EXEMPT_MARK: &str = "\"exempt\":true";

impl Conn {
    pub(super) fn plan_candidates(
        &self,
        now: Timestamp,
        after_event_seq: i64,
        after_change_seq: i64,
    ) -> Result<Vec<i64>, StoreError> {
        // UNION ALL keeps each branch on its index (a sorted UNION walks the
        // whole events table in key order); duplicates go below.
        let mut stmt = self.conn.prepare_cached(
            "SELECT contact FROM event_feed WHERE seq > ?1
             UNION ALL SELECT contact FROM score_changes WHERE seq > ?2
             UNION ALL SELECT contact FROM plan_wake WHERE at <= ?3",
        )?;
        let mut keys: Vec<i64> = stmt
            .query_map(
                params![after_event_seq, after_change_seq, to_micros(now)],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    pub(super) fn contact_keys(&self) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rowid FROM contacts ORDER BY rowid")?;
        let keys = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    pub(super) fn contact_key(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT rowid FROM contacts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    pub(super) fn last_change_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM score_changes")?
            .query_row([], |r| r.get(0))?)
    }

    pub(super) fn plan_inputs(
        &self,
        keys: &[i64],
        read: &PlanRead<'_>,
    ) -> Result<Vec<PlanInput>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let out = self.plan_inputs_in_snapshot(keys, read)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Self::plan_inputs`] in the caller's read transaction.
    pub(super) fn plan_inputs_in_snapshot(
        &self,
        keys: &[i64],
        read: &PlanRead<'_>,
    ) -> Result<Vec<PlanInput>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        let events = self.events();
        let mut names = Names::default();
        for batch in keys.chunks(KEYS_PER_QUERY) {
            read_batch(&events, &mut names, batch, read, &mut out)?;
        }
        Ok(out)
    }

    /// Opens a read transaction for several reads: its snapshot is taken
    /// at the first.
    pub(super) fn begin_snapshot(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        Ok(())
    }

    pub(super) fn end_snapshot(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    pub(super) fn save_plan(
        &mut self,
        batch: &[PlanWrite],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let now_us = to_micros(now);
        self.write(|tx| {
            let mut sums = Sums::default();
            for w in batch {
                // Erased since the pass read it: nothing of its plan is kept.
                if tx
                    .prepare_cached("SELECT 1 FROM contacts WHERE rowid = ?1")?
                    .query_row([w.key], |_| Ok(()))
                    .optional()?
                    .is_none()
                {
                    continue;
                }
                for row in &w.rows {
                    let s = &row.send;
                    let n = tx.prepare_cached(PLAN_ROW)?.execute(params![
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
                            match row.decision {
                                Verdict::Drop | Verdict::Block => Some(encode(&row.reasons)?),
                                _ => None,
                            },
                            now_us
                        ])?;
                    if n == 0 {
                        continue;
                    }
                    sums.count(
                        to_micros(row.first_due),
                        &s.followup,
                        s.kind.as_str(),
                        &s.channel,
                        row.state,
                        1,
                    );
                    if row.state == State::Sent {
                        sums.delivered(w.key, &s.followup);
                    }
                    sums.decided(
                        now_us,
                        row.decision.as_str(),
                        row.reasons.first().map_or("", Why::rule),
                    );
                    let until = (row.decision == Verdict::Defer).then(|| to_micros(s.due_at));
                    tx.prepare_cached(
                        "INSERT INTO decision_log (contact, at, followup, channel, decision, until, reasons)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        w.key,
                        now_us,
                        s.followup,
                        s.channel,
                        row.decision.as_str(),
                        until,
                        encode(&row.reasons)?
                    ])?;
                }
                for (seq, reason) in &w.drops {
                    drop_row(tx, &mut sums, *seq, reason, now_us)?;
                }
                if let Some(memo) = &w.memo {
                    let upto = to_micros(memo.upto);
                    // Read in this transaction: an event written later
                    // moves the feed past the mark.
                    let quiet: Option<i64> = tx
                        .prepare_cached(
                            "SELECT coalesce((SELECT seq FROM event_feed WHERE contact = ?1), 0)
                             WHERE NOT EXISTS (SELECT 1 FROM events WHERE contact = ?1 AND at > ?2)",
                        )?
                        .query_row(params![w.key, upto], |r| r.get(0))
                        .optional()?;
                    tx.prepare_cached(
                        "INSERT INTO plan_memo (contact, upto, memo, quiet) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(contact) DO UPDATE
                         SET upto = excluded.upto, memo = excluded.memo, quiet = excluded.quiet",
                    )?
                    .execute(params![w.key, upto, memo.encode(), quiet])?;
                }
                if w.wake == w.wake_was {
                    continue;
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
            sums.finish(tx)
        })
    }

    pub(super) fn finish_pass(
        &mut self,
        marks: &[PassMark<'_>],
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut values: Vec<(&str, String)> = Vec::with_capacity(marks.len() + meta.len());
            for m in marks {
                let current: Option<i64> = tx
                    .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                    .query_row([m.key], |r| r.get::<_, String>(0))
                    .optional()?
                    .and_then(|v| v.parse().ok());
                let value = match current {
                    c if c == m.seen => m.reached,
                    Some(c) => c.min(m.reached),
                    None => m.reached,
                };
                values.push((m.key, value.to_string()));
            }
            values.extend(meta.iter().map(|(k, v)| (*k, v.clone())));
            for (key, value) in values {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, value])?;
            }
            Ok(())
        })
    }

    pub(super) fn create_broadcast(
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
            if n == 1 {
                request_plan(tx)?;
            }
            Ok(n == 1)
        })
    }

    pub(super) fn request_plan(&mut self) -> Result<i64, StoreError> {
        self.write(|tx| {
            request_plan(tx)?;
            Ok(meta_number(tx, PLAN_REQUESTED)?.unwrap_or(0))
        })
    }

    pub(super) fn plan_requested(&self) -> Result<bool, StoreError> {
        let requested = meta_number(&self.conn, PLAN_REQUESTED)?.unwrap_or(0);
        Ok(requested > meta_number(&self.conn, PLAN_DONE)?.unwrap_or(0))
    }

    pub(super) fn plan_done(&mut self, upto: i64) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = max(CAST(value AS INTEGER), ?2)",
            )?
            .execute(params![PLAN_DONE, upto])?;
            Ok(())
        })
    }

    pub(super) fn broadcasts(&self) -> Result<Vec<BroadcastSpec>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT spec FROM broadcasts ORDER BY created_at, id")?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .map(|j| decode(&j?))
            .collect()
    }
}

/// Counts requests for planning (see [`PlanStore::request_plan`]).
const PLAN_REQUESTED: &str = "plan.requested";
/// The highest request a completed pass met.
const PLAN_DONE: &str = "plan.done";

/// Sets the planning-needed mark inside the caller's transaction.
pub(super) fn request_plan(tx: &Connection) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, 1)
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
    )?
    .execute([PLAN_REQUESTED])?;
    Ok(())
}

fn meta_number(conn: &Connection, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, i64>(0))
        .optional()?)
}

/// `keys` as a full `IN` list: short batches repeat their last key.
fn padded(keys: &[i64]) -> impl Iterator<Item = i64> + '_ {
    let last = keys.last().copied().unwrap_or_default();
    keys.iter()
        .copied()
        .chain(std::iter::repeat(last))
        .take(KEYS_PER_QUERY)
}

/// A read of [`read_batch`] in its two forms, built once per process: the
/// keys as a padded `IN` list, or as a range. Each text is `head`, the
/// key filter on `column`, then `tail`; the statement's own parameter is
/// written `?N` (replaced by the first free number).
struct Keyed {
    list: String,
    range: String,
}

impl Keyed {
    fn new(head: &str, column: &str, tail: &str) -> Self {
        let free = format!("?{}", KEYS_PER_QUERY + 1);
        let list = in_list(&format!("{} {column} IN (", head.replace("?N", &free)), ")");
        let range = format!("{} {column} BETWEEN ?1 AND ?2", head.replace("?N", "?3"));
        Self {
            list: format!("{list}{}", tail.replace("?N", &free)),
            range: format!("{range}{}", tail.replace("?N", "?3")),
        }
    }
}

/// How one batch's keys are bound. A full pass reads every contact in key
/// order, so its batches are mostly runs of consecutive keys: bound as a
/// range, each table is searched once per batch instead of once per key.
enum Bound<'k> {
    Range(i64, i64),
    List(&'k [i64]),
}

impl<'k> Bound<'k> {
    /// `keys` ascending and distinct, at most [`KEYS_PER_QUERY`].
    fn of(keys: &'k [i64]) -> Self {
        match (keys.first(), keys.last()) {
            (Some(&first), Some(&last))
                if last
                    .checked_sub(first)
                    .and_then(|span| usize::try_from(span).ok())
                    .is_some_and(|span| span + 1 == keys.len()) =>
            {
                Self::Range(first, last)
            }
            _ => Self::List(keys),
        }
    }

    fn sql<'q>(&self, keyed: &'q Keyed) -> &'q str {
        match self {
            Self::Range(..) => &keyed.range,
            Self::List(_) => &keyed.list,
        }
    }

    fn params(&self) -> impl Iterator<Item = i64> + 'k {
        let (range, list) = match *self {
            Self::Range(first, last) => (Some([first, last]), None),
            Self::List(keys) => (None, Some(padded(keys))),
        };
        range
            .into_iter()
            .flatten()
            .chain(list.into_iter().flatten())
    }
}

// The score's recent snapshots serve rescoring only: not decoded. The
// tables keyed by contact beside it are read apart (`DESK`, `WAKES`,
// `FEED`, `MEMOS`), each a walk of its own range merged by key: as joins
// they cost a seek per contact and table, twice the time of the walks.
static CONTACTS: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT c.rowid, c.record, s.score, s.band, s.next_change_at, s.scored_at, NULL
         FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid
         WHERE",
        "c.rowid",
        " ORDER BY c.rowid",
    )
});
static DESK: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT contact, status FROM contact_desk WHERE",
        "contact",
        " ORDER BY contact",
    )
});
static WAKES: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT contact, at FROM plan_wake WHERE",
        "contact",
        " ORDER BY contact",
    )
});
// The last column is the earliest instant of the contact's events numbered
// above `?N` (`PlanRead::new_after`), sought only where the feed says there
// are some: a memo reaching past it is stale.
static FEED: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT f.contact, f.seq,
                CASE WHEN f.seq > ?N
                     THEN (SELECT min(e.at) FROM events e WHERE e.contact = f.contact AND e.seq > ?N) END
         FROM event_feed f WHERE",
        "f.contact",
        " ORDER BY f.contact",
    )
});
static MEMOS: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT contact, upto, memo, quiet FROM plan_memo WHERE",
        "contact",
        " ORDER BY contact",
    )
});
static EVENTS_AFTER_MEMO: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT e.contact, e.event_id, e.type, e.at, e.channel, e.props
         FROM plan_memo m JOIN events e ON e.contact = m.contact AND e.at > m.upto
         WHERE",
        "m.contact",
        " ORDER BY e.contact, e.at, e.seq",
    )
});
static EVENTS: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT contact, event_id, type, at, channel, props FROM events WHERE",
        "contact",
        " ORDER BY contact, at, seq",
    )
});
static LEDGER: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        "SELECT l.contact, l.at, l.event_type, l.channel, o.idem_key FROM fatigue_ledger l
         JOIN outbox o ON o.seq = l.outbox WHERE",
        "l.contact",
        " ORDER BY l.contact, l.at",
    )
});
static CHANGES: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        &format!("SELECT {CHANGE_COLUMNS} FROM score_changes s WHERE"),
        "s.contact",
        " AND s.at >= ?N ORDER BY s.contact, s.at",
    )
});
// The contact's id comes from its input, not from a join per row.
static ROWS: LazyLock<Keyed> = LazyLock::new(|| {
    Keyed::new(
        &format!(
            "SELECT {}, o.contact FROM outbox o WHERE",
            ROW_COLUMNS.replace("c.id", "''")
        ),
        "o.contact",
        " ORDER BY o.contact, o.seq",
    )
});

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Reads up to [`KEYS_PER_QUERY`] contacts (keys ascending) into `out`:
/// one query per table for the whole batch instead of one per contact.
/// Contacts whose memo the pass trusts read only the events after it.
fn read_batch(
    events: &EventReader<'_>,
    names: &mut Names,
    keys: &[i64],
    read: &PlanRead<'_>,
    out: &mut Vec<PlanInput>,
) -> Result<(), StoreError> {
    let conn = events.conn();
    let first = out.len();
    let bound = Bound::of(keys);
    let mut stmt = conn.prepare_cached(bound.sql(&CONTACTS))?;
    let mut rows = stmt.query(params_from_iter(bound.params()))?;
    while let Some(r) = rows.next()? {
        let key: i64 = r.get(0)?;
        let contact: Contact = decode(r.get_ref(1)?.as_str().map_err(corrupt)?)?;
        let score = stored_from_row(r, &contact)?;
        out.push(PlanInput {
            key,
            contact,
            company: None,
            memo: None,
            older: Vec::new(),
            left_out: 0,
            recent: Vec::new(),
            reserved: Vec::new(),
            score,
            changes: Vec::new(),
            rows: Vec::new(),
            wake: None,
            prospect: None,
        });
    }
    drop(rows);
    drop(stmt);
    let inputs = &mut out[first..];
    if inputs.is_empty() {
        return Ok(());
    }
    // The batch's keys, ascending: each read's rows find their input here.
    let owners: Vec<i64> = inputs.iter().map(|i| i.key).collect();
    each_at(
        conn,
        bound.sql(&DESK),
        bound.params(),
        0,
        &owners,
        |i, r| {
            let input = &mut inputs[i];
            input.prospect = r.get(1)?;
            Ok(())
        },
    )?;
    each_at(
        conn,
        bound.sql(&WAKES),
        bound.params(),
        0,
        &owners,
        |i, r| {
            let input = &mut inputs[i];
            input.wake = Some(from_micros(r.get(1)?)?);
            Ok(())
        },
    )?;
    // Per input: the feed's last sequence number, and the earliest instant
    // of the events after `new_after`.
    let mut feed: Vec<(i64, Option<i64>)> = vec![(0, None); owners.len()];
    let new_after = std::iter::once(read.new_after);
    each_at(
        conn,
        bound.sql(&FEED),
        bound.params().map(Some).chain(new_after),
        0,
        &owners,
        |i, r| {
            feed[i] = (r.get(1)?, r.get(2)?);
            Ok(())
        },
    )?;
    // Contacts whose trusted memo had no event after it, the feed unmoved
    // since: no event to read, older or recent.
    let mut quiet: Vec<i64> = Vec::new();
    each_at(
        conn,
        bound.sql(&MEMOS),
        bound.params(),
        0,
        &owners,
        |i, r| {
            let (seq, late) = feed[i];
            let upto: i64 = r.get(1)?;
            if late.is_some_and(|at| at <= upto) {
                return Ok(());
            }
            let input = &mut inputs[i];
            input.memo = (read.memo)(
                input.key,
                from_micros(upto)?,
                r.get_ref(2)?.as_blob().map_err(corrupt)?,
            );
            if input.memo.is_some() && r.get::<_, Option<i64>>(3)? == Some(seq) {
                quiet.push(input.key);
            }
            Ok(())
        },
    )?;

    let (with_memo, whole): (Vec<&PlanInput>, Vec<&PlanInput>) =
        inputs.iter().partition(|i| i.memo.is_some());
    let with_memo: Vec<i64> = with_memo
        .iter()
        .map(|i| i.key)
        .filter(|k| quiet.binary_search(k).is_err())
        .collect();
    let whole: Vec<i64> = whole.iter().map(|i| i.key).collect();
    // Events after a memo are sought per contact (the memo's edge starts
    // each search): always as a list, as a range would scan every event.
    for (keys, sql, list) in [
        (with_memo, &*EVENTS_AFTER_MEMO, true),
        (whole, &*EVENTS, false),
    ] {
        if keys.is_empty() {
            continue;
        }
        let recent_from = to_micros(read.recent_from);
        let bound = if list {
            Bound::List(&keys)
        } else {
            Bound::of(&keys)
        };
        each_at(conn, bound.sql(sql), bound.params(), 0, &owners, |i, r| {
            let input = &mut inputs[i];
            let at: i64 = r.get(3)?;
            let older = at <= recent_from;
            let (name, folded) = names.get(events, read, r.get_ref(2)?)?;
            if older && !folded {
                input.left_out += 1;
                return Ok(());
            }
            let kind = name.into_owned();
            let at = from_micros(at)?;
            // Older events are only folded: no id, contact or props (but
            // a call's outcome, and the mark of an exempt send) to carry.
            let event = if older {
                Event {
                    id: None,
                    contact: String::new(),
                    props: names.props(events, r.get_ref(5)?, kind == read.props_of)?,
                    kind,
                    at,
                    channel: names.channel(events, read, r.get_ref(4)?)?,
                }
            } else {
                Event {
                    id: r.get(1)?,
                    contact: input.contact.id.clone(),
                    props: names.props(events, r.get_ref(5)?, true)?,
                    kind,
                    at,
                    channel: names.channel(events, read, r.get_ref(4)?)?,
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

    each_at(
        conn,
        bound.sql(&LEDGER),
        bound.params(),
        0,
        &owners,
        |i, r| {
            let input = &mut inputs[i];
            input.reserved.push(Event {
                id: r.get(4)?,
                contact: input.contact.id.clone(),
                kind: r.get(2)?,
                at: from_micros(r.get(1)?)?,
                channel: r.get(3)?,
                props: serde_json::Map::new(),
            });
            Ok(())
        },
    )?;

    let since = std::iter::once(to_micros(read.changes_since));
    each_at(
        conn,
        bound.sql(&CHANGES),
        bound.params().chain(since),
        1,
        &owners,
        |i, r| {
            let input = &mut inputs[i];
            input
                .changes
                .push(read_change(r, input.contact.id.clone())?);
            Ok(())
        },
    )?;

    each_at(
        conn,
        bound.sql(&ROWS),
        bound.params(),
        15,
        &owners,
        |i, r| {
            let input = &mut inputs[i];
            let mut row = read_row(r)?;
            row.contact.clone_from(&input.contact.id);
            input.rows.push(row);
            Ok(())
        },
    )?;

    read.companies.fill(|most| load_all_companies(conn, most))?;
    if read.companies.resolve_inputs(inputs) {
        return Ok(());
    }
    let mut ids: Vec<&str> = inputs
        .iter()
        .filter_map(|i| i.contact.company.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let (mut found, missing) = read.companies.lookup(&ids);
    if !missing.is_empty() {
        let mut loaded: HashMap<String, Arc<Company>> = load_companies(conn, &missing)?
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

/// Event names by id, kept for the reads of one [`Conn::plan_inputs`]: the
/// handle's shared dictionary (a lock and a hash) is asked once per name
/// instead of once per event, and whether older events of the type are
/// folded is decided once too.
#[derive(Default)]
struct Names {
    by_id: Vec<Option<(Arc<str>, bool)>>,
    /// Interned props by id, the same way.
    props_by_id: Vec<Option<Arc<Interned>>>,
}

impl Names {
    /// Ids kept (they are the small row ids of `event_names`).
    const SLOTS: usize = 4096;

    /// The name stored as `v`, and whether older events of the type are
    /// folded.
    fn get(
        &mut self,
        events: &EventReader<'_>,
        read: &PlanRead<'_>,
        v: ValueRef<'_>,
    ) -> Result<(Cow<'_, str>, bool), StoreError> {
        let slot = match v {
            ValueRef::Integer(id) => usize::try_from(id).ok().filter(|&i| i < Self::SLOTS),
            _ => None,
        };
        let Some(i) = slot else {
            let name = events.name(v)?;
            let folded = read.folded.contains(&*name);
            return Ok((Cow::Owned(name.to_string()), folded));
        };
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
        }
        let (name, folded) = match &mut self.by_id[i] {
            Some(known) => known,
            empty => {
                let name = events.name(v)?;
                let folded = read.folded.contains(&*name);
                empty.insert((name, folded))
            }
        };
        Ok((Cow::Borrowed(&**name), *folded))
    }

    /// The props stored as `v`: all of them when `whole`, else only the
    /// mark of an exempt send.
    fn props(
        &mut self,
        events: &EventReader<'_>,
        v: ValueRef<'_>,
        whole: bool,
    ) -> Result<Props, StoreError> {
        let pick = |p: &StoredProps<'_>| -> Result<Props, StoreError> {
            if whole {
                p.to_map()
            } else if p.text().contains(EXEMPT_MARK) {
                let mut props = Props::new();
                props.insert(EXEMPT_PROP.into(), true.into());
                Ok(props)
            } else {
                Ok(Props::new())
            }
        };
        let slot = match v {
            ValueRef::Integer(id) => usize::try_from(id).ok().filter(|&i| i < Self::SLOTS),
            _ => None,
        };
        let Some(i) = slot else {
            return pick(&events.props(v)?);
        };
        if self.props_by_id.len() <= i {
            self.props_by_id.resize(i + 1, None);
        }
        if let Some(known) = &self.props_by_id[i] {
            return pick(&StoredProps::Shared(known));
        }
        let stored = events.props(v)?;
        if let StoredProps::Interned(interned) = &stored {
            self.props_by_id[i] = Some(interned.clone());
        }
        pick(&stored)
    }

    /// An event's channel, NULL for none.
    fn channel(
        &mut self,
        events: &EventReader<'_>,
        read: &PlanRead<'_>,
        v: ValueRef<'_>,
    ) -> Result<Option<String>, StoreError> {
        match v {
            ValueRef::Null => Ok(None),
            v => Ok(Some(self.get(events, read, v)?.0.into_owned())),
        }
    }
}

/// Runs `sql` and hands each row to `f` with the position in `keys`
/// (ascending) of the key in its column `key`; rows of other keys are
/// skipped.
fn each_at<P: rusqlite::ToSql>(
    conn: &Connection,
    sql: &str,
    params: impl Iterator<Item = P>,
    key: usize,
    keys: &[i64],
    mut f: impl FnMut(usize, &rusqlite::Row<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(params))?;
    while let Some(r) = rows.next()? {
        let owner: i64 = r.get(key)?;
        if let Ok(i) = keys.binary_search(&owner) {
            f(i, r)?;
        }
    }
    Ok(())
}
