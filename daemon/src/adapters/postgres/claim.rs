//! Claims and settlements of the PostgreSQL outbox, a batch at a time.
//!
//! A claim is two short transactions whatever its size. The first takes
//! the due rows (`FOR UPDATE SKIP LOCKED`: claimers never wait for each
//! other's rows) under a lease, in one statement ([`take`]). The second
//! ([`decide`]) locks their contacts in ascending key order in one
//! statement (`FOR NO KEY UPDATE`, so two claimers never wait for each
//! other in a circle), reads, pipelined, what the guard weighs for all of
//! them (events and reservations, read once the locks are held: every
//! reservation and send committed before is seen), and writes the
//! decisions, the rows put back (deferred or blocked) and the reservations
//! in three array statements; an allowed row stays as the take left it.
//! Contact by contact, the guard decides in memory with the reservations
//! this claim already made for that contact added, exactly as if each had
//! been read back. A cap or the daily budget therefore cannot be exceeded
//! by two claimers deciding one contact at once. `NO KEY UPDATE` does not
//! block foreign-key checks, which only take `KEY SHARE`.
//!
//! A settlement batch is one statement (rows updated if their owner still
//! holds them, reservations released and returned, delivered sends counted
//! for their campaigns) and the append of the delivered sends' events; no
//! row is updated by every settlement (event numbers come from a sequence,
//! see records.rs).

use super::arrays::{DecisionLog, Param};
use super::outbox::read_row;
use super::pipelined::InOrder;
use super::records::insert_events;
use crate::adapters::sqlite::shared::{
    decode, decode_props, decode_recent, encode, from_micros, send_props, settled, to_micros,
};
use crate::core::model::{BusinessSignal, Company, Contact, Event, Timestamp};
use crate::domain::ingest::Incoming;
use crate::domain::outbox::{Row, Settlement, State};
use crate::domain::scoring::StoredScore;
use crate::ports::store::{Admission, AdmissionVerdict, Claimed, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio_postgres::Transaction;
use tokio_postgres::types::Type;

/// Rows still to send, claimed ones included (their lease may expire).
const PENDING: &str = "('planned', 'deferred', 'retrying', 'claimed')";

/// What a claim read of a contact under its lock.
struct Locked {
    contact: Contact,
    weighs: Vec<Event>,
}

/// The first transaction of a claim: takes up to `limit` due rows nobody
/// else holds for `owner` until `lease_until` (state `claimed`, due at the
/// lease's end, the attempt counted), and returns them as they were, in
/// due order, with their contacts' keys. One statement, committed at once: the rows a
/// `SKIP LOCKED` scan locks without taking them (rows another claimer
/// took after the scan began are locked, re-checked and skipped) stay
/// locked only that long, so settlements of those rows do not wait for a
/// whole claim. Rows left so by a process that died before deciding them
/// come back when the lease expires, like any claimed row, with the
/// attempt counted as if it had been made.
pub(super) async fn take(
    tx: &Transaction<'_>,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
    owner: &str,
) -> Result<Vec<(Row, i64)>, StoreError> {
    let now_us = to_micros(now);
    let lease_us = to_micros(lease_until);
    let limit = i64::from(limit);
    // Due rows are read in claim order from `outbox_ready` and the scan
    // stops at the limit. Right after a large enqueue the statistics still
    // count few due rows, and the planner would rather sort every due row
    // on each take; no sort is the one plan that holds at any size.
    let sql = format!(
        "WITH d AS (
           SELECT seq, state, due_at, attempts, lease_until, updated_at FROM outbox
           WHERE state IN {PENDING} AND due_at <= $1
           ORDER BY due_at, priority DESC, seq LIMIT $2
           FOR UPDATE SKIP LOCKED)
         UPDATE outbox o SET state = 'claimed', lease_owner = $3, lease_until = $4,
           due_at = $4, attempts = d.attempts + 1, updated_at = $1
         FROM d, contacts c WHERE o.seq = d.seq AND c.rowid = o.contact
         RETURNING o.seq, o.idem_key, c.id, o.followup, o.kind, o.priority, o.channel,
           d.state, d.due_at, o.first_due, d.attempts, d.lease_until, o.payload,
           o.last_error, d.updated_at, o.contact"
    );
    let params: [Param<'_>; 4] = [
        (&now_us, Type::INT8),
        (&limit, Type::INT8),
        (&owner, Type::TEXT),
        (&lease_us, Type::INT8),
    ];
    let ordered = tx.batch_execute("SET LOCAL enable_sort = off");
    let taken = tx.query_typed(&sql, &params);
    let (_, taken) = tokio::join!(ordered, taken).in_order()?;
    let mut due: Vec<(Row, i64)> = taken
        .iter()
        .map(|r| Ok((read_row(r)?, r.get::<_, i64>(15))))
        .collect::<Result<_, StoreError>>()?;
    due.sort_by(|(a, _), (b, _)| {
        (a.due_at, std::cmp::Reverse(a.priority), a.seq).cmp(&(
            b.due_at,
            std::cmp::Reverse(b.priority),
            b.seq,
        ))
    });
    Ok(due)
}

/// The second transaction of a claim: decides the rows [`take`] took
/// (those `owner` still holds) under their contacts' locks (see the
/// module's comment). Returns the claimed rows in due order, with their
/// contacts as the guard saw them and, when `context` is set, their
/// companies and stored scores.
pub(super) async fn decide(
    tx: &Transaction<'_>,
    taken: &[(Row, i64)],
    now: Timestamp,
    lease_until: Timestamp,
    owner: &str,
    context: bool,
    admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
) -> Result<Vec<Claimed>, StoreError> {
    let now_us = to_micros(now);
    let taken_seqs: Vec<i64> = taken.iter().map(|(r, _)| r.seq).collect();
    let taken_keys: Vec<i64> = {
        let mut k: Vec<i64> = taken.iter().map(|(_, k)| *k).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    // 1. The rows taken, then their contacts, locked in ascending key
    // order; pipelined. Whether `owner` still holds a row (a lease may
    // have run out meanwhile) is read from its locked version rather than
    // filtered on, so that the rows are found by key alone (see `settle`).
    let mine: [Param<'_>; 2] = [(&taken_seqs, Type::INT8_ARRAY), (&owner, Type::TEXT)];
    let contacts: [Param<'_>; 1] = [(&taken_keys, Type::INT8_ARRAY)];
    let (held, contact_rows) = tokio::join!(
        tx.query_typed(
            "SELECT seq, state = 'claimed' AND lease_owner IS NOT DISTINCT FROM $2
             FROM outbox WHERE seq = ANY($1) ORDER BY seq FOR UPDATE",
            &mine,
        ),
        tx.query_typed(
            "SELECT rowid, record FROM contacts WHERE rowid = ANY($1) ORDER BY rowid
             FOR NO KEY UPDATE",
            &contacts,
        ),
    )
    .in_order()?;
    let held: HashSet<i64> = held.iter().filter(|r| r.get(1)).map(|r| r.get(0)).collect();
    let due: Vec<&(Row, i64)> = taken
        .iter()
        .filter(|(r, _)| held.contains(&r.seq))
        .collect();
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<i64> = due.iter().map(|(_, k)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    let seqs: Vec<i64> = due.iter().map(|(r, _)| r.seq).collect();
    let mut locked: BTreeMap<i64, Locked> = BTreeMap::new();
    for r in &contact_rows {
        locked.insert(
            r.get(0),
            Locked {
                contact: decode(r.get(1))?,
                weighs: Vec::new(),
            },
        );
    }
    // 3. What weighs on them, read under the locks; a reservation left by
    // a claim of these rows whose lease expired is stale.
    let (by_seq, by_key): ([Param<'_>; 1], [Param<'_>; 1]) =
        ([(&seqs, Type::INT8_ARRAY)], [(&keys, Type::INT8_ARRAY)]);
    let both: [Param<'_>; 2] = [(&keys, Type::INT8_ARRAY), (&seqs, Type::INT8_ARRAY)];
    let stale = tx.query_typed("DELETE FROM fatigue_ledger WHERE outbox = ANY($1)", &by_seq);
    let events = tx.query_typed(
        "SELECT contact, event_id, type, at, channel, props FROM events
         WHERE contact = ANY($1) ORDER BY contact, at, seq",
        &by_key,
    );
    // Each reservation's row is found by key (a subquery with a limit is
    // not flattened into a join): with statistics that lag a fast-growing
    // outbox, the planner once hashed the whole outbox in parallel workers
    // for a ledger it thought large.
    let reserved = tx.query_typed(
        "SELECT l.contact, l.at, l.event_type, l.channel, o.idem_key, o.payload
         FROM fatigue_ledger l
         CROSS JOIN LATERAL (SELECT idem_key, payload FROM outbox
                             WHERE seq = l.outbox LIMIT 1) o
         WHERE l.contact = ANY($1) AND l.outbox <> ALL($2) ORDER BY l.contact, l.outbox",
        &both,
    );
    let (_, events, reserved) = tokio::join!(stale, events, reserved).in_order()?;
    for r in &events {
        let key: i64 = r.get(0);
        if let Some(l) = locked.get_mut(&key) {
            l.weighs.push(Event {
                id: r.get(1),
                contact: l.contact.id.clone(),
                kind: r.get(2),
                at: from_micros(r.get(3))?,
                channel: r.get(4),
                props: decode_props(r.get(5))?,
            });
        }
    }
    for r in &reserved {
        let key: i64 = r.get(0);
        if let Some(l) = locked.get_mut(&key) {
            l.weighs.push(Event {
                id: r.get(4),
                contact: l.contact.id.clone(),
                kind: r.get(2),
                at: from_micros(r.get(1))?,
                channel: r.get(3),
                props: send_props(None, r.get(5)),
            });
        }
    }
    for l in locked.values_mut() {
        // Stable: events keep their order among equal instants.
        l.weighs.sort_by_key(|e| e.at);
    }
    // 4. Decided contact by contact (ascending key), each contact's rows in
    // due order; an allowed row's reservation weighs on the next.
    let mut order: Vec<usize> = (0..due.len()).collect();
    order.sort_by_key(|&i| due[i].1);
    let mut log = Decisions::default();
    let mut claimed: Vec<(usize, Row)> = Vec::new();
    for i in order {
        let (row, key) = &due[i];
        let Some(l) = locked.get_mut(key) else {
            continue;
        };
        let admission = admit(row, &l.contact, &l.weighs);
        log.push(*key, row, &admission)?;
        match &admission.verdict {
            AdmissionVerdict::Allow { event_type } => {
                // Left as [`take`] wrote it.
                log.reserve(row.seq, *key, event_type, &row.channel);
                let mut out = row.clone();
                out.state = State::Claimed;
                out.due_at = lease_until;
                out.lease_until = Some(lease_until);
                out.attempts += 1;
                out.updated_at = now;
                claimed.push((i, out));
                let reservation = Event {
                    id: Some(row.idem_key.clone()),
                    contact: l.contact.id.clone(),
                    kind: event_type.clone(),
                    at: now,
                    channel: Some(row.channel.clone()),
                    props: reservation_props(row),
                };
                // After every weighing event at or before `now`.
                let at = l.weighs.partition_point(|e| e.at <= now);
                l.weighs.insert(at, reservation);
            }
            AdmissionVerdict::Defer { until } => {
                log.put_back(row.seq, "deferred", to_micros(*until));
            }
            AdmissionVerdict::Block => {
                // Due as it was before it was taken.
                log.put_back(row.seq, "blocked", to_micros(row.due_at));
            }
        }
    }
    // 5. Written back, pipelined; and what requests are built from.
    let updates: [Param<'_>; 4] = [
        (&now_us, Type::INT8),
        (&log.seq, Type::INT8_ARRAY),
        (&log.state, Type::TEXT_ARRAY),
        (&log.due, Type::INT8_ARRAY),
    ];
    let reservations: [Param<'_>; 5] = [
        (&now_us, Type::INT8),
        (&log.reserved, Type::INT8_ARRAY),
        (&log.reserved_contact, Type::INT8_ARRAY),
        (&log.event_type, Type::TEXT_ARRAY),
        (&log.reserved_channel, Type::TEXT_ARRAY),
    ];
    let decided = log.logged.write(tx, now_us);
    // Found by key whatever the statistics say (see `settle`); the rows
    // are locked since step 1.
    let updated = async {
        if !log.seq.is_empty() {
            tx.query_typed(
                "UPDATE outbox o SET state = u.state, due_at = u.due, lease_owner = NULL,
                   lease_until = NULL, attempts = o.attempts - 1, updated_at = $1
                 FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS u(seq, state, due)
                 WHERE o.seq = ANY($2) AND o.seq = u.seq",
                &updates,
            )
            .await?;
        }
        Ok::<_, StoreError>(())
    };
    let reserve = tx.query_typed(
        "INSERT INTO fatigue_ledger (outbox, contact, at, event_type, channel)
         SELECT outbox, contact, $1, event_type, channel
         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[])
              AS l(outbox, contact, event_type, channel)",
        &reservations,
    );
    let reserve = async { reserve.await.map_err(StoreError::from) };
    claimed.sort_by_key(|(i, _)| *i);
    let allowed: HashSet<i64> = claimed.iter().map(|(i, _)| due[*i].1).collect();
    let mut allowed: Vec<i64> = allowed.into_iter().collect();
    allowed.sort_unstable();
    let (mut companies, mut scores) = (HashMap::new(), HashMap::new());
    if context && !allowed.is_empty() {
        let (_, _, _, c, s) = tokio::join!(
            decided,
            updated,
            reserve,
            companies_of(tx, &allowed),
            scores_of(tx, &allowed)
        )
        .in_order()?;
        (companies, scores) = (c, s);
    } else {
        tokio::join!(decided, updated, reserve).in_order()?;
    }
    Ok(claimed
        .into_iter()
        .map(|(i, row)| {
            let key = due[i].1;
            let contact = locked
                .get(&key)
                .map(|l| l.contact.clone())
                .unwrap_or_default();
            let company = contact
                .company
                .as_ref()
                .and_then(|id| companies.get(id).cloned());
            let score = scores.get(&key).cloned().map(|mut s: StoredScore| {
                s.contact.clone_from(&row.contact);
                s
            });
            Claimed {
                row,
                contact,
                company,
                score,
            }
        })
        .collect())
}

/// The props of a reservation as [`send_props`] reads them back: whether
/// the send is exempt.
fn reservation_props(row: &Row) -> serde_json::Map<String, serde_json::Value> {
    let mut props = serde_json::Map::new();
    if row.payload.exempt {
        props.insert(crate::domain::fatigue::EXEMPT_PROP.into(), true.into());
    }
    props
}

/// The decisions of one claim, as the columns they are written in.
#[derive(Default)]
struct Decisions {
    logged: DecisionLog,
    /// Rows put back (deferred or blocked), with their state and due
    /// instant; an allowed row stays as [`take`] wrote it.
    seq: Vec<i64>,
    state: Vec<&'static str>,
    due: Vec<i64>,
    reserved: Vec<i64>,
    reserved_contact: Vec<i64>,
    event_type: Vec<String>,
    reserved_channel: Vec<String>,
}

impl Decisions {
    fn push(&mut self, key: i64, row: &Row, admission: &Admission) -> Result<(), StoreError> {
        self.logged.push(
            key,
            &row.followup,
            &row.channel,
            admission.verdict.verdict().as_str(),
            admission.verdict.until().map(to_micros),
            encode(&admission.reasons)?,
        );
        Ok(())
    }

    /// A row put back: its attempt not counted, its lease released.
    fn put_back(&mut self, seq: i64, state: &'static str, due: i64) {
        self.seq.push(seq);
        self.state.push(state);
        self.due.push(due);
    }

    fn reserve(&mut self, seq: i64, key: i64, event_type: &str, channel: &str) {
        self.reserved.push(seq);
        self.reserved_contact.push(key);
        self.event_type.push(event_type.to_string());
        self.reserved_channel.push(channel.to_string());
    }
}

/// The companies of the contacts `keys`, by id, with their signals.
async fn companies_of(
    tx: &Transaction<'_>,
    keys: &[i64],
) -> Result<HashMap<String, Company>, StoreError> {
    let keys = keys.to_vec();
    let params: [Param<'_>; 1] = [(&keys, Type::INT8_ARRAY)];
    let heads = tx.query_typed(
        "SELECT rowid, id, name, attributes FROM companies
         WHERE id IN (SELECT company FROM contacts WHERE rowid = ANY($1))",
        &params,
    );
    let signals = tx.query_typed(
        "SELECT s.company, s.kind, s.at, s.props FROM company_signals s
         WHERE s.company IN (SELECT co.rowid FROM companies co JOIN contacts c ON c.company = co.id
                             WHERE c.rowid = ANY($1))
         ORDER BY s.company, s.at, s.seq",
        &params,
    );
    let (heads, signals) = tokio::join!(heads, signals).in_order()?;
    let mut of: HashMap<i64, Vec<BusinessSignal>> = HashMap::new();
    for r in &signals {
        of.entry(r.get(0)).or_default().push(BusinessSignal {
            kind: r.get(1),
            at: from_micros(r.get(2))?,
            props: decode_props(r.get(3))?,
        });
    }
    heads
        .iter()
        .map(|r| {
            let id: String = r.get(1);
            let company = Company {
                id: id.clone(),
                name: r.get(2),
                attributes: decode(r.get(3))?,
                signals: of.remove(&r.get::<_, i64>(0)).unwrap_or_default(),
            };
            Ok((id, company))
        })
        .collect()
}

/// The stored scores of the contacts `keys`, by key (`contact` left for
/// the caller to fill).
async fn scores_of(
    tx: &Transaction<'_>,
    keys: &[i64],
) -> Result<HashMap<i64, StoredScore>, StoreError> {
    let keys = keys.to_vec();
    tx.query_typed(
        "SELECT contact, score, band, next_change_at, scored_at, recent FROM scores
         WHERE contact = ANY($1)",
        &[(&keys, Type::INT8_ARRAY)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.get(0),
            StoredScore {
                contact: String::new(),
                score: r.get(1),
                band: r.get(2),
                next_change_at: r.get::<_, Option<i64>>(3).map(from_micros).transpose()?,
                scored_at: from_micros(r.get(4))?,
                recent: decode_recent(Some(r.get(5)))?,
                desk_mark: None,
            },
        ))
    })
    .collect()
}

/// Records how attempts ended (row, how, instant), for the rows `owner`
/// still holds; a delivered send's reservation becomes an event keyed by
/// its idempotency key, every settled row's reservation is released.
/// Returns, per item, whether it was applied (a row repeated in the batch
/// is settled by its first occurrence).
pub(super) async fn settle(
    tx: &Transaction<'_>,
    owner: &str,
    batch: &[(i64, Settlement, Timestamp)],
) -> Result<Vec<bool>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    // In ascending row order (every writer locks outbox rows in one order),
    // each row once.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| (batch[i].0, i));
    order.dedup_by_key(|i| batch[*i].0);
    let n = order.len();
    let (mut seq, mut state, mut due, mut error, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for &i in &order {
        let (s, how, when) = &batch[i];
        let (st, d, e) = settled(how);
        seq.push(*s);
        state.push(st.as_str());
        due.push(d);
        error.push(e);
        at.push(to_micros(*when));
    }
    // The batch's rows are found by key (`seq = ANY`), and whether this
    // owner still holds them is tested against the batch's own columns (a
    // materialized CTE, which the planner cannot see into): no estimate of
    // how many rows are claimed, stale by nature, can turn the statement
    // into a scan of every claimed row per settled row. The released
    // reservations come back as rows of their own rather than joined to
    // the settled ones for the same reason.
    let rows = tx
        .query_typed(
            "WITH s AS MATERIALIZED (
               SELECT s.*, 'claimed'::text AS held, $6::text AS owner
               FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
                    AS s(seq, state, due, error, at)),
             u AS (
               UPDATE outbox o SET state = s.state, due_at = coalesce(s.due, o.due_at),
                 last_error = s.error, lease_owner = NULL, lease_until = NULL, updated_at = s.at
               FROM s
               WHERE o.seq = ANY($1) AND o.seq = s.seq AND o.state = s.held
                 AND o.lease_owner = s.owner
               RETURNING o.seq, o.state, o.idem_key, o.followup, o.payload, o.contact),
             d AS (
               DELETE FROM fatigue_ledger l USING u WHERE l.outbox = u.seq
               RETURNING l.outbox, l.event_type, l.channel),
             k AS (
               INSERT INTO campaign_contacts (contact, campaign, sends)
               SELECT contact, followup, count(*) FROM u WHERE state = 'sent'
               GROUP BY contact, followup ORDER BY contact, followup
               ON CONFLICT (contact, campaign)
               DO UPDATE SET sends = campaign_contacts.sends + EXCLUDED.sends)
             SELECT u.seq, u.state, NULL, NULL, u.idem_key, u.followup, u.payload, u.contact,
                    c.id
             FROM u JOIN contacts c ON c.rowid = u.contact
             UNION ALL
             SELECT d.outbox, NULL, d.event_type, d.channel, NULL, NULL, NULL, NULL, NULL FROM d",
            &[
                (&seq, Type::INT8_ARRAY),
                (&state, Type::TEXT_ARRAY),
                (&due, Type::INT8_ARRAY),
                (&error, Type::TEXT_ARRAY),
                (&at, Type::INT8_ARRAY),
                (&owner, Type::TEXT),
            ],
        )
        .await?;
    let when: HashMap<i64, Timestamp> = batch.iter().map(|(s, _, t)| (*s, *t)).rev().collect();
    let mut released: HashMap<i64, (String, String)> = HashMap::new();
    for r in &rows {
        if let (Some(kind), Some(channel)) = (r.get(2), r.get(3)) {
            released.insert(r.get(0), (kind, channel));
        }
    }
    let mut applied: HashSet<i64> = HashSet::with_capacity(rows.len());
    let mut events: Vec<(i64, i64, Event, [u8; 16])> = Vec::new();
    for r in &rows {
        let Some(state) = r.get::<_, Option<&str>>(1) else {
            continue;
        };
        let s: i64 = r.get(0);
        applied.insert(s);
        if state != State::Sent.as_str() {
            continue;
        }
        let (Some((kind, channel)), Some(at)) = (released.get(&s), when.get(&s)) else {
            continue;
        };
        let event = Event {
            id: Some(r.get(4)),
            contact: r.get(8),
            kind: kind.clone(),
            at: *at,
            channel: Some(channel.clone()),
            props: send_props(Some(r.get(5)), r.get(6)),
        };
        let dedup = Incoming::Contact(event.clone()).dedup_key();
        events.push((s, r.get(7), event, dedup));
    }
    // In the batch's order, as one settlement after the other would number them.
    let position: HashMap<i64, usize> = order.iter().map(|&i| (batch[i].0, i)).collect();
    events.sort_by_key(|(s, ..)| position.get(s).copied());
    let appended: Vec<(i64, &Event, [u8; 16])> =
        events.iter().map(|(_, k, e, d)| (*k, e, *d)).collect();
    insert_events(tx, &appended).await?;
    let mut first = HashSet::with_capacity(batch.len());
    Ok(batch
        .iter()
        .map(|(s, ..)| applied.contains(s) && first.insert(*s))
        .collect())
}
