//! The planner's tables of the PostgreSQL store: wake instants, memos,
//! broadcasts and pass marks; planned rows go to the outbox.

use super::PgStore;
use super::arrays::{DecisionLog, Param, execute, query, runs};
use super::binary::{copy_rows, int8, text, text_opt};
use super::keys::Bound;
use super::outbox::{ROW_COLUMNS, read_row};
use super::pipelined::InOrder;
use super::records::{contact_rowid, distinct_keys, request_plan, set_meta};
use super::scores::{
    CHANGE_COLUMNS, load_all_companies, load_companies, read_change, stored_from_row,
};
use super::statements::{Statements, query as prepared};
use crate::adapters::sqlite::shared::{decode, decode_props, encode, from_micros, to_micros};
use crate::core::model::{Company, Contact, Event, Timestamp};
use crate::domain::fatigue::{EXEMPT_PROP, Verdict};
use crate::ports::store::{
    BroadcastSpec, PassMark, PlanInput, PlanRead, PlanRow, PlanStore, PlanWrite, StoreError,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Transaction};

/// How an exempt send's mark reads in stored props (compact JSON).
const EXEMPT_MARK: &str = "\"exempt\":true";
/// Contacts read per query by [`PlanStore::plan_inputs`], and a pass's
/// chunk ([`PlanStore::plan_chunk`]). Each batch costs a few round trips
/// and eight statement starts on the server: at 1,000,000 contacts the
/// pass a day later took 4.4–4.5 s with 3,000 a batch against 5.0–5.1 s
/// with 1,000 (4,000: no faster, 20 MB more at the peak).
const PLAN_BATCH: usize = 3_000;
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

/// The row of `key` (column 0) among rows in key order, those before it
/// passed over: read along with the contacts, in the same order.
fn next_of<'r>(
    rows: &mut std::iter::Peekable<std::slice::Iter<'r, tokio_postgres::Row>>,
    key: i64,
) -> Option<&'r tokio_postgres::Row> {
    while let Some(r) = rows.peek() {
        match r.get::<_, i64>(0).cmp(&key) {
            std::cmp::Ordering::Less => {
                rows.next();
            }
            std::cmp::Ordering::Equal => return rows.next(),
            std::cmp::Ordering::Greater => return None,
        }
    }
    None
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

/// The contacts with their scores, desk status and wake instants, each
/// table read over the batch's keys and merge-joined. The score's recent
/// snapshots serve rescoring only: not read.
const CONTACTS: &str = "SELECT c.rowid, c.record, s.score, s.band, s.next_change_at, s.scored_at,
        NULL::text, w.at, d.status
     FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid AND KEY(s.contact)
     LEFT JOIN contact_desk d ON d.contact = c.rowid AND KEY(d.contact)
     LEFT JOIN plan_wake w ON w.contact = c.rowid AND KEY(w.contact)
     WHERE KEY(c.rowid) ORDER BY c.rowid";
/// The batch's memos, read on their own: joined to the contacts, they
/// were sought contact by contact (a nested loop, 1 ms a batch).
const MEMOS: &str = "SELECT contact, upto, memo FROM plan_memo WHERE KEY(contact) ORDER BY contact";
/// The earliest instant of the events numbered above `$N`
/// (`PlanRead::new_after`) of each contact of the batch: a memo reaching
/// past it is stale. One grouped read per batch, through `events_by_seq`
/// when few events came since the last pass (the usual case), or through
/// the primary key over the batch's keys (`seq` is in it) when many did;
/// not a search per contact.
const LATE: &str =
    "SELECT contact, min(at) FROM events WHERE KEY(contact) AND seq > $N GROUP BY contact";
/// The events of a range of contacts after the earliest edge of their
/// memos (`$N`), in the primary key's order: one scan of the range's index
/// entries, `at` tested in the index, against a search per contact; each
/// contact's own edge is applied when the rows are filed.
const EVENTS_AFTER_EDGE: &str = "SELECT contact, event_id, type, at, channel, props FROM events
     WHERE KEY(contact) AND at > $N ORDER BY contact, at, seq";
/// The whole histories of a list of contacts ($1), in the primary key's
/// order, sought contact by contact in the primary key (see
/// [`EVENTS_AFTER_MEMO`]): as `contact = ANY($1)`, PostgreSQL without
/// statistics on `events` guesses every key at 0.5 % of the table and
/// scans all of it, in parallel, for a list of a few hundred.
const EVENTS_LISTED: &str = "SELECT e.contact, e.event_id, e.type, e.at, e.channel, e.props
     FROM unnest($1::bigint[]) AS k(contact)
     CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.contact = k.contact OFFSET 0) e
     ORDER BY e.contact, e.at, e.seq";
/// The events after each memo's edge ($1: contacts, $2: edges), sought
/// per contact from that edge in the primary key, for a list of contacts
/// (a range reads [`EVENTS_AFTER_EDGE`]): a day's events, not whole
/// histories. `OFFSET 0` keeps the lateral search from being
/// flattened into a join, which PostgreSQL (without statistics, or with
/// an array it guesses at 10 rows) ran as a hash join over a parallel scan
/// of the whole table, 0.6 s per batch at 4,000,000 events (22 ms so).
const EVENTS_AFTER_MEMO: &str = "SELECT e.contact, e.event_id, e.type, e.at, e.channel, e.props
     FROM unnest($1::bigint[], $2::bigint[]) AS m(contact, upto)
     CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.contact = m.contact AND e.at > m.upto
                         OFFSET 0) e
     ORDER BY e.contact, e.at, e.seq";
const LEDGER: &str = "SELECT l.contact, l.at, l.event_type, l.channel, o.idem_key
     FROM fatigue_ledger l JOIN outbox o ON o.seq = l.outbox AND KEY(o.contact)
     WHERE KEY(l.contact) ORDER BY l.contact, l.at";
/// The contact's id of each row comes from its input, not from a join.
static ROWS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {}, o.contact FROM outbox o WHERE KEY(o.contact) ORDER BY o.contact, o.seq",
        ROW_COLUMNS.replace("c.id", "''::text")
    )
});

/// An event as stored, borrowed from a row or a COPY tuple.
struct StoredEvent<'r> {
    id: Option<&'r str>,
    kind: &'r str,
    at: i64,
    channel: Option<&'r str>,
    props: &'r str,
}

impl StoredEvent<'_> {
    /// Files the event in its contact's input: recent events whole; older
    /// ones only to fold into the memo (no id, contact or props, but a
    /// call's outcome and the mark of an exempt send), or counted as left
    /// out when the memo does not fold their type.
    fn file(
        &self,
        input: &mut PlanInput,
        read: &PlanRead<'_>,
        recent_from: i64,
    ) -> Result<(), StoreError> {
        let older = self.at <= recent_from;
        if older && !read.folded.contains(self.kind) {
            input.left_out += 1;
            return Ok(());
        }
        let at = from_micros(self.at)?;
        let event = if older {
            Event {
                id: None,
                contact: String::new(),
                props: if self.kind == read.props_of {
                    decode_props(self.props)?
                } else if self.props.contains(EXEMPT_MARK) {
                    let mut props = serde_json::Map::new();
                    props.insert(EXEMPT_PROP.into(), true.into());
                    props
                } else {
                    serde_json::Map::new()
                },
                kind: self.kind.to_string(),
                at,
                channel: self.channel.map(str::to_string),
            }
        } else {
            Event {
                id: self.id.map(str::to_string),
                contact: input.contact.id.clone(),
                props: decode_props(self.props)?,
                kind: self.kind.to_string(),
                at,
                channel: self.channel.map(str::to_string),
            }
        };
        if older {
            input.older.push(event);
        } else {
            input.recent.push(event);
        }
        Ok(())
    }
}

/// Reads a batch of contacts (keys ascending) into `out`: one query per
/// table for the whole batch, the contacts first, then the other tables'
/// statements pipelined (sent together, typed: no separate preparation).
/// Contacts whose memo the pass trusts read only the events after it.
async fn read_batch(
    tx: &Transaction<'_>,
    st: &mut Statements,
    keys: &[i64],
    read: &PlanRead<'_>,
    out: &mut Vec<PlanInput>,
) -> Result<(), StoreError> {
    let first = out.len();
    let bound = Bound::of(keys);
    let ends = bound.ends();
    let params = bound.params(&ends);
    let mut late_params = bound.params(&ends);
    late_params.push((&read.new_after, Type::INT8));
    let contacts = st.get(tx, &bound.sql(CONTACTS), &params).await?;
    let memos = st.get(tx, &bound.sql(MEMOS), &params).await?;
    let late = st.get(tx, &bound.sql(LATE), &late_params).await?;
    let (rows, memos, late) = tokio::join!(
        prepared(tx, Some(&contacts), &params),
        prepared(tx, Some(&memos), &params),
        prepared(tx, read.new_after.is_some().then_some(&late), &late_params),
    )
    .in_order()?;
    let (mut memos, mut late) = (memos.iter().peekable(), late.iter().peekable());
    // Contacts with a trusted memo, and its edge (keys ascending).
    let mut after: Vec<(i64, i64)> = Vec::new();
    let mut whole = Vec::new();
    for r in &rows {
        let key: i64 = r.get(0);
        let contact: Contact = decode(r.get(1))?;
        let score = stored_from_row(r, &contact)?;
        let memo_row = next_of(&mut memos, key);
        let late_at: Option<i64> = next_of(&mut late, key).map(|l| l.get(1));
        let mut memo = None;
        if let Some(m) = memo_row {
            let upto: i64 = m.get(1);
            if late_at.is_none_or(|at| at > upto) {
                memo = (read.memo)(key, from_micros(upto)?, m.get::<_, &[u8]>(2));
            }
            if memo.is_some() {
                after.push((key, upto));
            }
        }
        if memo.is_none() {
            whole.push(key);
        }
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
            wake: r.get::<_, Option<i64>>(7).map(from_micros).transpose()?,
            prospect: r.get(8),
        });
    }
    let inputs = &mut out[first..];
    if inputs.is_empty() {
        return Ok(());
    }
    let whole_bound = Bound::of(&whole);
    let whole_ends = whole_bound.ends();
    let whole_params = whole_bound.params(&whole_ends);
    // Whole histories: of a range of contacts (the bulk of a first pass)
    // as a binary COPY (see binary.rs), of a list as rows.
    let (whole_copy, listed) = match whole_bound {
        Bound::Range(..) => (
            Some(format!(
                "COPY (SELECT contact, event_id, type, at, channel, props FROM events
                       WHERE {} ORDER BY contact, at, seq) TO STDOUT (FORMAT binary)",
                whole_bound.literal("contact")
            )),
            0,
        ),
        Bound::List(keys) => (None, keys.len()),
    };
    // Events after the memos: over a range, one scan from the earliest
    // edge; for a list, sought contact by contact.
    let earliest = after.iter().map(|e| e.1).min().unwrap_or(0);
    let (after_key, after_upto): (Vec<i64>, Vec<i64>) = match bound {
        Bound::Range(..) => Default::default(),
        Bound::List(_) => after.iter().copied().unzip(),
    };
    let (after_sql, after_params): (String, Vec<Param<'_>>) = match bound {
        Bound::Range(..) => {
            let mut p = bound.params(&ends);
            p.push((&earliest, Type::INT8));
            (bound.sql(EVENTS_AFTER_EDGE), p)
        }
        Bound::List(_) => (
            EVENTS_AFTER_MEMO.to_string(),
            vec![
                (&after_key, Type::INT8_ARRAY),
                (&after_upto, Type::INT8_ARRAY),
            ],
        ),
    };
    let since = to_micros(read.changes_since);
    let mut changes_params = bound.params(&ends);
    changes_params.push((&since, Type::INT8));
    let changes_sql = bound.sql(&format!(
        "SELECT {CHANGE_COLUMNS} FROM score_changes s WHERE KEY(s.contact)
         AND s.at >= $N ORDER BY s.contact, s.at"
    ));
    let after_st = if after.is_empty() {
        None
    } else {
        Some(st.get(tx, &after_sql, &after_params).await?)
    };
    let listed_st = if listed == 0 {
        None
    } else {
        Some(st.get(tx, EVENTS_LISTED, &whole_params).await?)
    };
    let ledger_st = st.get(tx, &bound.sql(LEDGER), &params).await?;
    let changes_st = st.get(tx, &changes_sql, &changes_params).await?;
    let rows_st = st.get(tx, &bound.sql(&ROWS), &params).await?;
    let recent_from = to_micros(read.recent_from);
    let ((), after_rows, whole_rows, ledger, changes, outbox) = {
        let files = &mut *inputs;
        tokio::join!(
            async {
                let Some(sql) = &whole_copy else {
                    return Ok(());
                };
                copy_rows::<6>(tx, sql, |f| {
                    let owner = int8(f[0])?;
                    let Ok(i) = files.binary_search_by_key(&owner, |i| i.key) else {
                        return Ok(());
                    };
                    let stored = StoredEvent {
                        id: text_opt(f[1])?,
                        kind: text(f[2])?,
                        at: int8(f[3])?,
                        channel: text_opt(f[4])?,
                        props: text(f[5])?,
                    };
                    stored.file(&mut files[i], read, recent_from)
                })
                .await
            },
            prepared(tx, after_st.as_ref(), &after_params),
            prepared(tx, listed_st.as_ref(), &whole_params),
            prepared(tx, Some(&ledger_st), &params),
            prepared(tx, Some(&changes_st), &changes_params),
            prepared(tx, Some(&rows_st), &params),
        )
        .in_order()?
    };
    let edges = after;
    for (rows, edged) in [(after_rows, true), (whole_rows, false)] {
        each_row(&rows, 0, inputs, |input, r| {
            // A range's scan also meets contacts read whole, and events
            // before a later edge than the earliest.
            if edged {
                let Ok(i) = edges.binary_search_by_key(&input.key, |e| e.0) else {
                    return Ok(());
                };
                if r.get::<_, i64>(3) <= edges[i].1 {
                    return Ok(());
                }
            }
            let stored = StoredEvent {
                id: r.get(1),
                kind: r.get(2),
                at: r.get(3),
                channel: r.get(4),
                props: r.get(5),
            };
            stored.file(input, read, recent_from)
        })?;
    }
    each_row(&ledger, 0, inputs, |input, r| {
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
    each_row(&changes, 1, inputs, |input, r| {
        input
            .changes
            .push(read_change(r, input.contact.id.clone())?);
        Ok(())
    })?;
    each_row(&outbox, 15, inputs, |input, r| {
        let mut row = read_row(r)?;
        row.contact.clone_from(&input.contact.id);
        input.rows.push(row);
        Ok(())
    })?;

    if read.companies.claim_fill() {
        let most = crate::ports::store::CompanyCache::most();
        read.companies.filled(load_all_companies(tx, most).await?);
    }
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

/// Writes `run` (writes of distinct contacts, in batch order) as
/// [`PlanStore::save_plan`] says, one statement per table, pipelined: the
/// new rows (in batch order, so they are numbered as one insert after the
/// other would number them; a key already present, in the store or earlier
/// in the batch, is left as it is), the drops, memos and wake instants;
/// then the decisions of the rows inserted, in the same order.
async fn write_plan(
    tx: &Transaction<'_>,
    run: &[PlanWrite],
    now_us: i64,
) -> Result<(), StoreError> {
    let mut rows = RowColumns::default();
    let (mut drop_seq, mut drop_reason) = (Vec::new(), Vec::new());
    let mut dropped = HashSet::new();
    let (mut memo_key, mut memo_upto, mut memo) = (Vec::new(), Vec::new(), Vec::new());
    let (mut wake_key, mut wake_at, mut asleep) = (Vec::new(), Vec::new(), Vec::new());
    for w in run {
        for row in &w.rows {
            rows.push(w.key, row)?;
        }
        // A row dropped twice: the first drop leaves the second nothing.
        for (seq, reason) in &w.drops {
            if dropped.insert(*seq) {
                drop_seq.push(*seq);
                drop_reason.push(reason.as_str());
            }
        }
        if let Some(m) = &w.memo {
            memo_key.push(w.key);
            memo_upto.push(to_micros(m.upto));
            memo.push(m.encode());
        }
        if w.wake != w.wake_was {
            match w.wake {
                Some(at) => {
                    wake_key.push(w.key);
                    wake_at.push(to_micros(at));
                }
                None => asleep.push(w.key),
            }
        }
    }
    let inserted_params: [Param<'_>; 12] = [
        (&now_us, Type::INT8),
        (&rows.key, Type::TEXT_ARRAY),
        (&rows.contact, Type::INT8_ARRAY),
        (&rows.followup, Type::TEXT_ARRAY),
        (&rows.kind, Type::TEXT_ARRAY),
        (&rows.priority, Type::INT8_ARRAY),
        (&rows.channel, Type::TEXT_ARRAY),
        (&rows.state, Type::TEXT_ARRAY),
        (&rows.due, Type::INT8_ARRAY),
        (&rows.first_due, Type::INT8_ARRAY),
        (&rows.payload, Type::TEXT_ARRAY),
        (&rows.error, Type::TEXT_ARRAY),
    ];
    // In batch order (the test on `contacts` may reorder the rows): of two
    // rows with one key, the first stands.
    let inserted = query(
        tx,
        rows.key.len(),
        "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel, state,
           due_at, first_due, payload, last_error, updated_at)
         SELECT idem_key, contact, followup, kind, priority, channel, state, due_at,
           first_due, payload, last_error, $1
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
                     $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[],
                     $12::text[]) WITH ORDINALITY
              AS r(idem_key, contact, followup, kind, priority, channel, state, due_at,
                   first_due, payload, last_error, n)
         WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.rowid = r.contact)
         ORDER BY n
         ON CONFLICT (idem_key) DO NOTHING
         RETURNING idem_key",
        &inserted_params,
    );
    let drops_params: [Param<'_>; 3] = [
        (&now_us, Type::INT8),
        (&drop_seq, Type::INT8_ARRAY),
        (&drop_reason, Type::TEXT_ARRAY),
    ];
    let drops = execute(
        tx,
        drop_seq.len(),
        "UPDATE outbox o SET state = 'dropped', last_error = d.reason, updated_at = $1
         FROM unnest($2::bigint[], $3::text[]) AS d(seq, reason)
         WHERE o.seq = d.seq AND o.state IN ('planned', 'deferred', 'retrying')",
        &drops_params,
    );
    let memos_params: [Param<'_>; 3] = [
        (&memo_key, Type::INT8_ARRAY),
        (&memo_upto, Type::INT8_ARRAY),
        (&memo, Type::BYTEA_ARRAY),
    ];
    let memos = execute(
        tx,
        memo_key.len(),
        "INSERT INTO plan_memo (contact, upto, memo)
         SELECT m.contact, m.upto, m.memo
         FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS m(contact, upto, memo)
         WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.rowid = m.contact)
         ON CONFLICT (contact) DO UPDATE SET upto = excluded.upto, memo = excluded.memo",
        &memos_params,
    );
    let woken_params: [Param<'_>; 2] =
        [(&wake_key, Type::INT8_ARRAY), (&wake_at, Type::INT8_ARRAY)];
    let woken = execute(
        tx,
        wake_key.len(),
        "INSERT INTO plan_wake (contact, at)
         SELECT w.contact, w.at FROM unnest($1::bigint[], $2::bigint[]) AS w(contact, at)
         WHERE EXISTS (SELECT 1 FROM contacts c WHERE c.rowid = w.contact)
         ON CONFLICT (contact) DO UPDATE SET at = excluded.at",
        &woken_params,
    );
    let unwoken_params: [Param<'_>; 1] = [(&asleep, Type::INT8_ARRAY)];
    let unwoken = execute(
        tx,
        asleep.len(),
        "DELETE FROM plan_wake WHERE contact = ANY($1)",
        &unwoken_params,
    );
    let (inserted, ..) = tokio::join!(inserted, drops, memos, woken, unwoken).in_order()?;
    if inserted.is_empty() {
        return Ok(());
    }
    // Each inserted key's decision, once: a repeat of a key in the batch
    // was left out by the insert.
    let mut fresh: HashSet<String> = inserted.iter().map(|r| r.get(0)).collect();
    let mut log = DecisionLog::default();
    for w in run {
        for row in &w.rows {
            if fresh.remove(&row.send.idem_key) {
                let s = &row.send;
                let until = (row.decision == Verdict::Defer).then(|| to_micros(s.due_at));
                let reasons = encode(&row.reasons)?;
                let decision = row.decision.as_str();
                log.push(w.key, &s.followup, &s.channel, decision, until, reasons);
            }
        }
    }
    log.write(tx, now_us).await?;
    Ok(())
}

/// New outbox rows, a column each.
#[derive(Default)]
struct RowColumns<'a> {
    key: Vec<&'a str>,
    contact: Vec<i64>,
    followup: Vec<&'a str>,
    kind: Vec<&'static str>,
    priority: Vec<i64>,
    channel: Vec<&'a str>,
    state: Vec<&'static str>,
    due: Vec<i64>,
    first_due: Vec<i64>,
    payload: Vec<String>,
    error: Vec<Option<String>>,
}

impl<'a> RowColumns<'a> {
    fn push(&mut self, contact: i64, row: &'a PlanRow) -> Result<(), StoreError> {
        let s = &row.send;
        self.key.push(&s.idem_key);
        self.contact.push(contact);
        self.followup.push(&s.followup);
        self.kind.push(s.kind.as_str());
        self.priority.push(i64::from(s.priority));
        self.channel.push(&s.channel);
        self.state.push(row.state.as_str());
        self.due.push(to_micros(s.due_at));
        self.first_due.push(to_micros(row.first_due));
        self.payload.push(encode(&s.payload)?);
        self.error.push(match row.decision {
            Verdict::Drop | Verdict::Block => Some(encode(&row.reasons)?),
            _ => None,
        });
        Ok(())
    }
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

    fn plan_chunk(&self) -> usize {
        PLAN_BATCH
    }

    /// As a binary COPY: a full pass lists every contact before its
    /// workers start, and a million rows read as query rows took 0.35 s
    /// of relance's time (the server waiting on it), against 0.06 s so.
    fn contact_keys(&self) -> Result<Vec<i64>, StoreError> {
        self.read(async |c| {
            let mut keys = Vec::new();
            copy_rows::<1>(
                c,
                "COPY (SELECT rowid FROM contacts ORDER BY rowid) TO STDOUT (FORMAT binary)",
                |f| {
                    keys.push(int8(f[0])?);
                    Ok(())
                },
            )
            .await?;
            Ok(keys)
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
        self.snapshot_with(async |tx, st| {
            super::scores::no_jit(tx).await?;
            let mut out = Vec::with_capacity(keys.len());
            for batch in keys.chunks(PLAN_BATCH) {
                read_batch(tx, st, batch, read, &mut out).await?;
            }
            Ok(out)
        })
    }

    /// A run of distinct contacts at a time (see [`write_plan`]), a few
    /// statements per run whatever its size. A contact erased since the
    /// pass read it gets nothing (see [`PgStore::tx_past_erasures`]).
    fn save_plan(&self, batch: &[PlanWrite], now: Timestamp) -> Result<(), StoreError> {
        let now_us = to_micros(now);
        self.tx_past_erasures(async |tx| {
            for run in runs(batch, |w| w.key) {
                write_plan(tx, run, now_us).await?;
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
