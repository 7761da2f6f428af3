//! Scores, snapshots, published changes and pass bookkeeping in PostgreSQL.
//!
//! Every compare-and-set is one statement whose `WHERE` PostgreSQL checks
//! again on the newest row version after waiting for a concurrent writer
//! (READ COMMITTED): of two passes that read the same value, the second
//! finds it changed and writes nothing.

use super::PgStore;
use super::arrays::{Param, execute, query, runs};
use super::binary::{bytes, copy_rows, int8, text, text_opt};
use super::keys::Bound;
use super::pipelined::InOrder;
use super::records::{
    contact_rowid, distinct_keys, events_by_key, load_company, set_counter, set_meta, take_counter,
};
use crate::adapters::sqlite::shared::{
    decode, decode_props, decode_recent, encode_recent, from_micros, to_micros,
};
use crate::core::hasher::WordMap;
use crate::core::model::{Company, Contact, Event, Timestamp};
use crate::domain::scoring::StoredScore;
use crate::ports::store::{
    Props, RescoreInput, RescoreVisitor, ScoreStore, ScoreWrite, Snapshot, StoreError, StoredChange,
};
use std::collections::{BTreeMap, HashSet};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row, Transaction};

/// Contacts read per batch by the scans: memory holds one batch. With
/// 1,000 the rebuild at 1,000,000 contacts took 9.2–9.9 s against
/// 9.7–10.4 s with 2,000 and 10.7–10.8 s with 5,000, and its peak was
/// 15–50 MB lower: a smaller batch's rows stay in the processor's caches
/// while they are scored.
const SCAN_BATCH: i64 = 1_000;

/// Contacts and their stored scores (`rowid, record, score, band,
/// next_change_at, scored_at, recent, desk_mark`), `KEY` filtering both
/// tables (so that neither is read beyond the batch, whichever join
/// PostgreSQL picks).
const CONTACT_SCORE: &str = "SELECT c.rowid, c.record, s.score, s.band, s.next_change_at, \
     s.scored_at, s.recent, s.desk_mark FROM contacts c \
     LEFT JOIN scores s ON s.contact = c.rowid AND S_KEY WHERE C_KEY ORDER BY c.rowid";

/// The stored score in columns 2..=6 of a [`CONTACT_SCORE`] row.
pub(super) fn stored_from_row(
    row: &Row,
    contact: &Contact,
) -> Result<Option<StoredScore>, StoreError> {
    let Some(score) = row.get::<_, Option<i64>>(2) else {
        return Ok(None);
    };
    Ok(Some(StoredScore {
        contact: contact.id.clone(),
        score,
        band: row.get(3),
        next_change_at: row.get::<_, Option<i64>>(4).map(from_micros).transpose()?,
        scored_at: from_micros(row.get(5))?,
        recent: decode_recent(row.get::<_, Option<&str>>(6))?,
        desk_mark: None,
    }))
}

/// [`stored_from_row`] with the desk mark in column 7, for the rescoring
/// reads (the only ones that compare it).
fn stored_with_mark(row: &Row, contact: &Contact) -> Result<Option<StoredScore>, StoreError> {
    let mut stored = stored_from_row(row, contact)?;
    if let Some(s) = stored.as_mut() {
        s.desk_mark = row.get(7);
    }
    Ok(stored)
}

/// The columns [`read_change`] reads, from `score_changes s`.
pub(super) const CHANGE_COLUMNS: &str =
    "s.seq, s.contact, s.at, s.kind, s.from_score, s.to_score, s.from_band, s.to_band, s.since";

pub(super) fn read_change(r: &Row, contact: String) -> Result<StoredChange, StoreError> {
    Ok(StoredChange {
        seq: r.get(0),
        contact,
        at: from_micros(r.get(2))?,
        kind: r.get(3),
        from_score: r.get(4),
        to_score: r.get(5),
        from_band: r.get(6),
        to_band: r.get(7),
        since: from_micros(r.get(8))?,
    })
}

/// Turns JIT compilation off for the rest of the transaction. The batch
/// reads are index searches over a batch's keys; estimated without
/// statistics (a store just copied, autovacuum off) they cost enough for
/// PostgreSQL to compile each into machine code, 20–100 ms a statement,
/// several times what running it takes (16 ms for a batch's events after
/// the memos instead of 112 ms).
pub(super) async fn no_jit(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute("SET LOCAL jit = off").await?;
    Ok(())
}

/// Props a scan keeps decoded (then it starts over).
const SEEN_PROPS: usize = 4096;

/// The events of a batch of contacts, in key order, read from a binary
/// COPY into the events of the batch before, in place: their texts keep
/// their buffers and no event is moved, so a scan over millions of events
/// allocates and copies almost nothing per event.
#[derive(Default)]
struct EventBatch {
    /// The events read, `filled` of them this batch (the rest are spare).
    events: Vec<Event>,
    /// The owner key of each event read this batch.
    owners: Vec<i64>,
    filled: usize,
    /// The first event not handed over yet.
    next: usize,
    /// Props met in this scan, decoded once, by their stored text's bytes
    /// (most events repeat one: found without checking the text again).
    props: WordMap<Box<[u8]>, Props>,
}

impl EventBatch {
    /// Reads the events of `keys`' contacts. The events are selected on
    /// their own contact key, in their primary key's order: no join, no
    /// sort.
    async fn read(&mut self, c: &impl GenericClient, keys: Bound<'_>) -> Result<(), StoreError> {
        let sql = format!(
            "COPY (SELECT e.contact, e.event_id, e.type, e.at, e.channel, e.props
                   FROM events e WHERE {} ORDER BY e.contact, e.at, e.seq)
             TO STDOUT (FORMAT binary)",
            keys.literal("e.contact")
        );
        let Self {
            events,
            owners,
            filled,
            next,
            props,
        } = self;
        owners.clear();
        (*filled, *next) = (0, 0);
        copy_rows::<6>(c, &sql, |f| {
            if *filled == events.len() {
                events.push(blank_event());
            }
            let e = &mut events[*filled];
            refill(&mut e.id, text_opt(f[1])?);
            e.kind.clear();
            e.kind.push_str(text(f[2])?);
            e.at = from_micros(int8(f[3])?)?;
            refill(&mut e.channel, text_opt(f[4])?);
            let stored = bytes(f[5])?;
            match props.get(stored) {
                Some(p) => e.props.clone_from(p),
                None if stored == b"{}" => e.props.clear(),
                None => {
                    e.props = decode_props(text(f[5])?)?;
                    if props.len() >= SEEN_PROPS {
                        props.clear();
                    }
                    props.insert(stored.into(), e.props.clone());
                }
            }
            owners.push(int8(f[0])?);
            *filled += 1;
            Ok(())
        })
        .await
    }

    /// The events of contact `key` (`key`s asked in ascending order), their
    /// contact filled in; events of a lower key, left without their contact
    /// (were there one), are skipped.
    fn of(&mut self, key: i64, contact: &str) -> &mut [Event] {
        while self.next < self.filled && self.owners[self.next] < key {
            self.next += 1;
        }
        let start = self.next;
        while self.next < self.filled && self.owners[self.next] == key {
            self.next += 1;
        }
        let events = &mut self.events[start..self.next];
        for e in events.iter_mut() {
            e.contact.clear();
            e.contact.push_str(contact);
        }
        events
    }
}

/// Sets an optional text, reusing its buffer.
fn refill(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(buf), Some(v)) => {
            buf.clear();
            buf.push_str(v);
        }
        (_, v) => *slot = v.map(str::to_string),
    }
}

fn blank_event() -> Event {
    Event {
        id: None,
        contact: String::new(),
        kind: String::new(),
        at: Timestamp::UNIX_EPOCH,
        channel: None,
        props: Props::new(),
    }
}

/// Reads the contacts of `keys` with their stored scores (one query) and
/// their events (one binary COPY), merged in key order, within one
/// snapshot. Hands back the contacts' rows; their events are in `events`.
async fn read_batch(
    c: &impl GenericClient,
    keys: Bound<'_>,
    events: &mut EventBatch,
) -> Result<Vec<Row>, StoreError> {
    let contacts = c
        .query(
            &CONTACT_SCORE
                .replace("S_KEY", &keys.literal("s.contact"))
                .replace("C_KEY", &keys.literal("c.rowid")),
            &[],
        )
        .await?;
    events.read(c, keys).await?;
    Ok(contacts)
}

/// Reads the contacts of `keys` with their events and stored scores.
async fn read_inputs(
    c: &impl GenericClient,
    keys: Bound<'_>,
    out: &mut Vec<RescoreInput>,
) -> Result<(), StoreError> {
    let mut events = EventBatch::default();
    for row in read_batch(c, keys, &mut events).await? {
        let rowid: i64 = row.get(0);
        let contact: Contact = decode(row.get(1))?;
        let history = events.of(rowid, &contact.id).to_vec();
        let previous = stored_with_mark(&row, &contact)?;
        out.push((rowid, contact, history, previous));
    }
    Ok(())
}

/// Called by [`scan_range`] with each contact's events.
pub(super) type ScanVisitor<'a> =
    dyn FnMut(i64, Contact, &[Event], Option<StoredScore>) -> Result<(), StoreError> + 'a;

/// Scans `[range.0, range.1)` in batches of [`SCAN_BATCH`] contacts, each
/// batch one snapshot: memory holds one batch, however many contacts.
pub(super) fn scan_range(
    store: &PgStore,
    range: (i64, i64),
    f: &mut ScanVisitor<'_>,
) -> Result<(), StoreError> {
    let mut from = range.0;
    let mut events = EventBatch::default();
    loop {
        let rows = store.snapshot(async |tx| {
            let upto: Option<i64> = tx
                .query_one(
                    "SELECT max(rowid) FROM (SELECT rowid FROM contacts
                     WHERE rowid >= $1 AND rowid < $2 ORDER BY rowid LIMIT $3) k",
                    &[&from, &range.1, &SCAN_BATCH],
                )
                .await?
                .get(0);
            let Some(upto) = upto else {
                return Ok(Vec::new());
            };
            no_jit(tx).await?;
            read_batch(tx, Bound::Range(from, upto), &mut events).await
        })?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            return Ok(());
        };
        for row in &rows {
            let key: i64 = row.get(0);
            let contact: Contact = decode(row.get(1))?;
            let score = stored_with_mark(row, &contact)?;
            let history = events.of(key, &contact.id);
            f(key, contact, history, score)?;
        }
        if last >= range.1.saturating_sub(1) {
            return Ok(());
        }
        from = last + 1;
    }
}

impl ScoreStore for PgStore {
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(async |c| {
            Ok(
                c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
                    .await?
                    .map(|r| r.get(0)),
            )
        })
    }

    /// One statement: an insert that does nothing if the key exists, or an
    /// update whose condition is checked again after any concurrent writer.
    fn advance_mark(&self, key: &str, expected: Option<i64>, new: i64) -> Result<bool, StoreError> {
        let value = new.to_string();
        self.tx(async |tx| {
            let n = match expected {
                None => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                        &[&key, &value],
                    )
                    .await?
                }
                Some(seen) => {
                    tx.execute(
                        "UPDATE meta SET value = $2 WHERE key = $1
                           AND CASE WHEN value ~ '^-?[0-9]{1,18}$' THEN value::bigint END = $3",
                        &[&key, &value, &seen],
                    )
                    .await?
                }
            };
            Ok(n == 1)
        })
    }

    fn rescore_candidate_keys(
        &self,
        now: Timestamp,
        after_seq: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.read(async |c| {
            distinct_keys(
                c,
                "SELECT contact FROM events WHERE seq > $2
                     UNION ALL SELECT contact FROM scores WHERE next_change_at <= $1",
                &[&to_micros(now), &after_seq],
            )
            .await
        })
    }

    /// The queued contacts nobody holds (or whose holder's lease expired),
    /// taken with `SKIP LOCKED`: two passes taking at once get disjoint
    /// sets, neither waits for the other.
    fn take_changed(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        self.tx(async |tx| {
            let mut keys: Vec<i64> = tx
                .query(
                    "UPDATE rescore_queue q SET owner = $1, lease_until = $3
                     FROM (SELECT contact FROM rescore_queue
                           WHERE owner IS NULL OR lease_until <= $2
                           FOR UPDATE SKIP LOCKED) free
                     WHERE q.contact = free.contact RETURNING q.contact",
                    &[&owner, &to_micros(now), &to_micros(lease_until)],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            keys.sort_unstable();
            Ok(keys)
        })
    }

    fn release_changed(&self, owner: &str) -> Result<u64, StoreError> {
        self.tx(async |tx| {
            Ok(tx
                .execute(
                    "UPDATE rescore_queue SET owner = NULL, lease_until = NULL WHERE owner = $1",
                    &[&owner],
                )
                .await?)
        })
    }

    fn renew_changed(&self, owner: &str, lease_until: Timestamp) -> Result<u64, StoreError> {
        self.tx(async |tx| {
            Ok(tx
                .execute(
                    "UPDATE rescore_queue SET lease_until = $2 WHERE owner = $1",
                    &[&owner, &to_micros(lease_until)],
                )
                .await?)
        })
    }

    fn rescore_inputs(&self, keys: &[i64], out: &mut Vec<RescoreInput>) -> Result<(), StoreError> {
        for batch in keys.chunks(SCAN_BATCH as usize) {
            self.snapshot(async |tx| {
                no_jit(tx).await?;
                read_inputs(tx, Bound::of(batch), out).await
            })?;
        }
        Ok(())
    }

    fn companies(&self, ids: &[&str]) -> Result<Vec<Company>, StoreError> {
        self.snapshot(async |tx| load_companies(tx, ids).await)
    }

    fn companies_in_range(&self, range: (i64, i64)) -> Result<Option<Vec<Company>>, StoreError> {
        self.snapshot(async |tx| {
            let ids: Vec<String> = tx
                .query(
                    "SELECT DISTINCT company FROM contacts
                     WHERE rowid >= $1 AND rowid < $2 AND company IS NOT NULL",
                    &[&range.0, &range.1],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            Ok(Some(load_companies(tx, &ids).await?))
        })
    }

    fn rescore_candidates(
        &self,
        now: Timestamp,
        after_seq: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(async |c| {
            Ok(c.query(
                "SELECT rowid, id FROM contacts WHERE rowid IN (
                     SELECT contact FROM events WHERE seq > $2
                     UNION SELECT contact FROM scores WHERE next_change_at <= $1
                     UNION SELECT contact FROM rescore_queue)
                 ORDER BY rowid",
                &[&to_micros(now), &after_seq],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn rescore_input(
        &self,
        key: i64,
    ) -> Result<Option<(Contact, Vec<Event>, Option<StoredScore>)>, StoreError> {
        let mut out = Vec::new();
        self.snapshot(async |tx| read_inputs(tx, Bound::Range(key, key), &mut out).await)?;
        Ok(out.pop().map(|(_, c, e, s)| (c, e, s)))
    }

    fn scoring_input(
        &self,
        id: &str,
    ) -> Result<Option<(Contact, Option<Company>, Vec<Event>)>, StoreError> {
        self.snapshot(async |tx| {
            let Some(row) = tx
                .query_opt("SELECT rowid, record FROM contacts WHERE id = $1", &[&id])
                .await?
            else {
                return Ok(None);
            };
            let contact: Contact = decode(row.get(1))?;
            let company = match &contact.company {
                Some(c) => load_company(tx, c).await?,
                None => None,
            };
            let events = events_by_key(tx, row.get(0), id).await?;
            Ok(Some((contact, company, events)))
        })
    }

    fn stored_score(&self, id: &str) -> Result<Option<StoredScore>, StoreError> {
        self.read(async |c| {
            let Some(r) = c
                .query_opt(
                    "SELECT s.score, s.band, s.next_change_at, s.scored_at, s.recent FROM scores s
                     JOIN contacts c ON c.rowid = s.contact WHERE c.id = $1",
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(StoredScore {
                contact: id.to_string(),
                score: r.get(0),
                band: r.get(1),
                next_change_at: r.get::<_, Option<i64>>(2).map(from_micros).transpose()?,
                scored_at: from_micros(r.get(3))?,
                recent: decode_recent(Some(r.get(4)))?,
                desk_mark: None,
            }))
        })
    }

    fn score_history(
        &self,
        id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let key = self.read(async |c| contact_rowid(c, id).await)?;
        match key {
            Some(key) => self.score_history_at(key, since),
            None => Ok(Vec::new()),
        }
    }

    fn score_history_at(
        &self,
        key: i64,
        since: Option<Timestamp>,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let since = since.map_or(i64::MIN, to_micros);
        self.read(async |c| {
            c.query(
                "SELECT at, score, band FROM score_snapshots
                 WHERE contact = $1 AND at >= $2 ORDER BY at, seq",
                &[&key, &since],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Snapshot {
                    at: from_micros(r.get(0))?,
                    score: r.get(1),
                    band: r.get(2),
                })
            })
            .collect()
        })
    }

    /// Changes are numbered under the 'changes' counter, taken first when
    /// the batch publishes any, so that numbers grow in commit order (like
    /// events) and no two batches wait for each other's rows in turn. The
    /// batch is written a run of distinct contacts at a time (see
    /// [`write_scores`]), a few statements per run whatever its size.
    fn save_scores(
        &self,
        batch: &[ScoreWrite],
        now: Timestamp,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let now_us = to_micros(now);
        // A first score of a contact erased meanwhile: see `tx_past_erasures`.
        self.tx_past_erasures(async |tx| {
            let campaigns = !batch.is_empty() && super::desk::any_campaign(tx).await?;
            let mut changes = if batch.iter().any(|w| !w.changes.is_empty()) {
                Some(take_counter(tx, "changes").await?)
            } else {
                None
            };
            let first_change = changes;
            for run in runs(batch, |w| w.key) {
                write_scores(tx, run, now_us, campaigns, &mut changes).await?;
            }
            if let Some(last) = changes
                && changes != first_change
            {
                set_counter(tx, "changes", last).await?;
            }
            set_meta(tx, meta).await?;
            Ok(())
        })
    }

    fn score_changes(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredChange>, StoreError> {
        self.read(async |c| {
            c.query(
                &format!(
                    "SELECT {CHANGE_COLUMNS}, c.id FROM score_changes s
                     JOIN contacts c ON c.rowid = s.contact
                     WHERE s.seq > $1 ORDER BY s.seq LIMIT $2"
                ),
                &[&after_seq, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| read_change(r, r.get(9)))
            .collect()
        })
    }

    fn band_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read(async |c| {
            Ok(
                c.query("SELECT band, count(*) FROM scores GROUP BY band", &[])
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                    .collect(),
            )
        })
    }

    fn contact_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        self.read(async |c| {
            let r = c
                .query_one("SELECT min(rowid), max(rowid) FROM contacts", &[])
                .await?;
            Ok(r.get::<_, Option<i64>>(0).zip(r.get::<_, Option<i64>>(1)))
        })
    }

    fn scan_for_rescore(
        &self,
        range: (i64, i64),
        f: &mut RescoreVisitor<'_>,
    ) -> Result<(), StoreError> {
        scan_range(self, range, &mut |key, contact, events, score| {
            f(key, contact, events, score)
        })
    }
}

/// Writes `run` (writes of distinct contacts, in batch order) as
/// [`ScoreStore::save_scores`] says, one statement per table: the scores
/// compared and set (updates and first scores, pipelined), then for the
/// writes that landed, in batch order, their snapshots, changes (numbered
/// from `changes` on), queue rows, desk rows and campaign figures.
/// Each statement is checked row by row as the statement per contact was:
/// an update's `scored_at = seen` is evaluated again on the newest row
/// version after waiting for a concurrent writer, a first score goes
/// through `contacts` (a contact erased meanwhile writes nothing) and
/// yields to one inserted meanwhile.
async fn write_scores(
    tx: &Transaction<'_>,
    run: &[ScoreWrite],
    now_us: i64,
    campaigns: bool,
    changes: &mut Option<i64>,
) -> Result<(), StoreError> {
    let mut updates = ScoreColumns::default();
    let mut firsts = ScoreColumns::default();
    for w in run {
        let recent = encode_recent(&w.recent)?;
        let next = w.next_change_at.map(to_micros);
        match w.seen {
            Some(seen) => updates.push(w, next, recent, Some(to_micros(seen))),
            None => firsts.push(w, next, recent, None),
        }
    }
    let updated_params: [Param<'_>; 8] = [
        (&now_us, Type::INT8),
        (&updates.key, Type::INT8_ARRAY),
        (&updates.score, Type::INT8_ARRAY),
        (&updates.band, Type::TEXT_ARRAY),
        (&updates.next, Type::INT8_ARRAY),
        (&updates.recent, Type::TEXT_ARRAY),
        (&updates.seen, Type::INT8_ARRAY),
        (&updates.mark, Type::INT8_ARRAY),
    ];
    let updated = query(
        tx,
        updates.key.len(),
        "UPDATE scores s SET score = u.score, band = u.band, next_change_at = u.next,
           scored_at = $1, recent = u.recent, desk_mark = u.mark
         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                     $7::bigint[], $8::bigint[]) AS u(contact, score, band, next, recent, seen, mark)
         WHERE s.contact = u.contact AND s.scored_at = u.seen
         RETURNING s.contact",
        &updated_params,
    );
    let inserted_params: [Param<'_>; 7] = [
        (&now_us, Type::INT8),
        (&firsts.key, Type::INT8_ARRAY),
        (&firsts.score, Type::INT8_ARRAY),
        (&firsts.band, Type::TEXT_ARRAY),
        (&firsts.next, Type::INT8_ARRAY),
        (&firsts.recent, Type::TEXT_ARRAY),
        (&firsts.mark, Type::INT8_ARRAY),
    ];
    // Through `contacts`, so a contact erased meanwhile writes nothing.
    let inserted = query(
        tx,
        firsts.key.len(),
        "INSERT INTO scores (contact, score, band, next_change_at, scored_at, recent, desk_mark)
         SELECT u.contact, u.score, u.band, u.next, $1, u.recent, u.mark
         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                     $7::bigint[])
              AS u(contact, score, band, next, recent, mark)
         WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.rowid = u.contact)
         ON CONFLICT (contact) DO NOTHING
         RETURNING contact",
        &inserted_params,
    );
    let (updated, inserted) = tokio::join!(updated, inserted).in_order()?;
    let landed: HashSet<i64> = updated
        .iter()
        .chain(&inserted)
        .map(|r| r.get::<_, i64>(0))
        .collect();
    if landed.is_empty() {
        return Ok(());
    }
    let done: Vec<&ScoreWrite> = run.iter().filter(|w| landed.contains(&w.key)).collect();

    let (mut snap_key, mut snap_score, mut snap_band) = (Vec::new(), Vec::new(), Vec::new());
    let mut published = ChangeColumns::default();
    for w in &done {
        if w.snapshot {
            snap_key.push(w.key);
            snap_score.push(w.score);
            snap_band.push(w.band.as_str());
        }
        for c in &w.changes {
            let seq = changes.map_or(1, |s| s + 1);
            *changes = Some(seq);
            published.push(seq, w.key, c);
        }
    }
    let keys: Vec<i64> = done.iter().map(|w| w.key).collect();
    let snapshots_params: [Param<'_>; 4] = [
        (&now_us, Type::INT8),
        (&snap_key, Type::INT8_ARRAY),
        (&snap_score, Type::INT8_ARRAY),
        (&snap_band, Type::TEXT_ARRAY),
    ];
    let snapshots = execute(
        tx,
        snap_key.len(),
        "INSERT INTO score_snapshots (contact, at, score, band)
         SELECT contact, $1, score, band
         FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS s(contact, score, band)",
        &snapshots_params,
    );
    let changed_params: [Param<'_>; 9] = [
        (&published.seq, Type::INT8_ARRAY),
        (&published.contact, Type::INT8_ARRAY),
        (&published.at, Type::INT8_ARRAY),
        (&published.kind, Type::TEXT_ARRAY),
        (&published.from_score, Type::INT8_ARRAY),
        (&published.to_score, Type::INT8_ARRAY),
        (&published.from_band, Type::TEXT_ARRAY),
        (&published.to_band, Type::TEXT_ARRAY),
        (&published.since, Type::INT8_ARRAY),
    ];
    let changed = execute(
        tx,
        published.seq.len(),
        "INSERT INTO score_changes (seq, contact, at, kind, from_score, to_score,
           from_band, to_band, since)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[],
                              $5::bigint[], $6::bigint[], $7::text[], $8::text[],
                              $9::bigint[])",
        &changed_params,
    );
    // Queued again since it was taken: the next pass sees the change.
    let dequeued_params: [Param<'_>; 1] = [(&keys, Type::INT8_ARRAY)];
    let dequeued = execute(
        tx,
        keys.len(),
        "DELETE FROM rescore_queue WHERE contact = ANY($1) AND owner IS NOT NULL",
        &dequeued_params,
    );
    tokio::join!(snapshots, changed, dequeued).in_order()?;
    // After the changes: the campaign figures read the band crossings.
    super::desk::save_desks(tx, &done, campaigns).await
}

/// Scores to compare and set, a column each.
#[derive(Default)]
struct ScoreColumns<'a> {
    key: Vec<i64>,
    score: Vec<i64>,
    band: Vec<&'a str>,
    next: Vec<Option<i64>>,
    recent: Vec<String>,
    seen: Vec<i64>,
    mark: Vec<i64>,
}

impl<'a> ScoreColumns<'a> {
    fn push(&mut self, w: &'a ScoreWrite, next: Option<i64>, recent: String, seen: Option<i64>) {
        self.key.push(w.key);
        self.score.push(w.score);
        self.band.push(&w.band);
        self.next.push(next);
        self.recent.push(recent);
        self.mark.push(w.desk_mark);
        if let Some(seen) = seen {
            self.seen.push(seen);
        }
    }
}

/// Published changes, a column each.
#[derive(Default)]
struct ChangeColumns<'a> {
    seq: Vec<i64>,
    contact: Vec<i64>,
    at: Vec<i64>,
    kind: Vec<&'a str>,
    from_score: Vec<i64>,
    to_score: Vec<i64>,
    from_band: Vec<&'a str>,
    to_band: Vec<&'a str>,
    since: Vec<i64>,
}

impl<'a> ChangeColumns<'a> {
    fn push(&mut self, seq: i64, key: i64, c: &'a StoredChange) {
        self.seq.push(seq);
        self.contact.push(key);
        self.at.push(to_micros(c.at));
        self.kind.push(&c.kind);
        self.from_score.push(c.from_score);
        self.to_score.push(c.to_score);
        self.from_band.push(&c.from_band);
        self.to_band.push(&c.to_band);
        self.since.push(to_micros(c.since));
    }
}

/// Companies by id with their signals, two queries for any number of ids;
/// unknown ids are left out.
pub(super) async fn load_companies(
    c: &impl GenericClient,
    ids: &[&str],
) -> Result<Vec<Company>, StoreError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let companies = c.query(
        "SELECT rowid, id, name, attributes FROM companies WHERE id = ANY($1) ORDER BY rowid",
        &params,
    );
    let signals = c.query(
        "SELECT s.company, s.kind, s.at, s.props FROM company_signals s
         JOIN companies c ON c.rowid = s.company WHERE c.id = ANY($1)
         ORDER BY s.company, s.at, s.seq",
        &params,
    );
    let (companies, signals) = tokio::join!(companies, signals).in_order()?;
    read_companies(&companies, &signals)
}

/// Every company of the store, or `None` when there are more than `most`
/// (see [`crate::ports::store::CompanyCache::fill`]).
pub(super) async fn load_all_companies(
    c: &impl GenericClient,
    most: usize,
) -> Result<Option<Vec<Company>>, StoreError> {
    let count: i64 = c
        .query_one("SELECT count(*) FROM companies", &[])
        .await?
        .get(0);
    if usize::try_from(count).map_or(true, |n| n > most) {
        return Ok(None);
    }
    let companies = c.query(
        "SELECT rowid, id, name, attributes FROM companies ORDER BY rowid",
        &[],
    );
    let signals = c.query(
        "SELECT company, kind, at, props FROM company_signals ORDER BY company, at, seq",
        &[],
    );
    let (companies, signals) = tokio::join!(companies, signals).in_order()?;
    Ok(Some(read_companies(&companies, &signals)?))
}

/// Companies (`rowid, id, name, attributes`, by rowid) with their signals
/// (`company, kind, at, props`, by company).
fn read_companies(companies: &[Row], signals: &[Row]) -> Result<Vec<Company>, StoreError> {
    let mut out: Vec<(i64, Company)> = companies
        .iter()
        .map(|r| {
            Ok((
                r.get(0),
                Company {
                    id: r.get(1),
                    name: r.get(2),
                    attributes: decode(r.get(3))?,
                    signals: Vec::new(),
                },
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    for r in signals {
        let owner: i64 = r.get(0);
        if let Ok(i) = out.binary_search_by_key(&owner, |(rowid, _)| *rowid) {
            out[i].1.signals.push(crate::core::model::BusinessSignal {
                kind: r.get(1),
                at: from_micros(r.get(2))?,
                props: decode_props(r.get(3))?,
            });
        }
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}
