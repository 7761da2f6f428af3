//! Contacts, companies, deals and events in PostgreSQL.
//!
//! Event numbers come from the sequence `events_seq`, which does not hand
//! them out in commit order: a transaction holding number 9 may commit
//! after one holding 10, and a pass that remembered 10 would never see 9.
//! So the last number a pass remembers is read by [`last_seq`] between
//! appends: every appending transaction holds a shared advisory lock until
//! it ends, and the reader takes it exclusively for an instant. Appenders
//! never wait for each other (no counter row updated by each of them, the
//! hot row that serialised every settlement and ingest batch), unless they
//! append to the same contact (see [`insert_events`]).

use super::PgStore;
use super::pipelined::InOrder;
use crate::adapters::sqlite::shared::{
    contact_keys, decode, decode_props, encode, from_micros, merge, to_micros,
};
use crate::core::model::{BusinessSignal, Company, Contact, Deal, Event};
use crate::domain::ingest::{Incoming, Patch};
use crate::ports::store::desk::DuplicateGroup;
use crate::ports::store::{Append, ContactsWritten, Counts, Records, StoreError, Upsert};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_postgres::GenericClient;
use tokio_postgres::Transaction;

/// Sets the planning-needed mark inside the caller's transaction (see
/// [`PlanStore::request_plan`](crate::ports::store::PlanStore::request_plan)).
/// Its row is taken last in every transaction, so the lock is held briefly.
pub(super) async fn request_plan(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('plan.requested', '1')
         ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text",
        &[],
    )
    .await?;
    Ok(())
}

/// The positions of a batch's records in id order (repeats of one id in
/// their batch order): every writer takes the rows of its batch in the
/// same order, so two batches never wait for each other in a circle.
fn by_id(batch: &[Patch]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| batch[a].id.cmp(&batch[b].id));
    order
}

/// Sets the planning-needed mark if a record of the batch was written.
async fn request_plan_if_changed(tx: &Transaction<'_>, out: &[Upsert]) -> Result<(), StoreError> {
    if out
        .iter()
        .any(|u| matches!(u, Upsert::Inserted | Upsert::Updated))
    {
        request_plan(tx).await?;
    }
    Ok(())
}

/// Writes small named values (`meta`) in the caller's transaction.
pub(super) async fn set_meta(
    tx: &Transaction<'_>,
    values: &[(&str, String)],
) -> Result<(), StoreError> {
    for (key, value) in values {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[key, value],
        )
        .await?;
    }
    Ok(())
}

/// Takes the numbering of `counter` ('events', 'changes') until commit and
/// returns the last number handed out.
pub(super) async fn take_counter(tx: &Transaction<'_>, counter: &str) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "SELECT value FROM counters WHERE name = $1 FOR UPDATE",
            &[&counter],
        )
        .await?
        .get(0))
}

pub(super) async fn set_counter(
    tx: &Transaction<'_>,
    counter: &str,
    last: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE counters SET value = $2 WHERE name = $1",
        &[&counter, &last],
    )
    .await?;
    Ok(())
}

/// The contact keys a `UNION ALL` of selects returns, each once, ascending.
pub(super) async fn distinct_keys(
    c: &impl GenericClient,
    union: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<i64>, StoreError> {
    Ok(c.query(
        &format!("SELECT DISTINCT contact FROM ({union}) k ORDER BY contact"),
        args,
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// The contact's internal key.
pub(super) async fn contact_rowid(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        c.query_opt("SELECT rowid FROM contacts WHERE id = $1", &[&id])
            .await?
            .map(|r| r.get(0)),
    )
}

/// The country keys are computed with (FR until configured).
pub(super) async fn default_country(c: &impl GenericClient) -> Result<String, StoreError> {
    Ok(c.query_opt(
        "SELECT value FROM meta WHERE key = 'desk.default_country'",
        &[],
    )
    .await?
    .map_or_else(|| "FR".to_string(), |r| r.get(0)))
}

/// A contact's events, oldest first.
pub(super) async fn events_by_key(
    c: &impl GenericClient,
    rowid: i64,
    id: &str,
) -> Result<Vec<Event>, StoreError> {
    let rows = c
        .query(
            "SELECT event_id, type, at, channel, props FROM events
             WHERE contact = $1 ORDER BY at, seq",
            &[&rowid],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Event {
                id: r.get(0),
                contact: id.to_string(),
                kind: r.get(1),
                at: from_micros(r.get(2))?,
                channel: r.get(3),
                props: decode_props(r.get(4))?,
            })
        })
        .collect()
}

pub(super) async fn load_company(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<Company>, StoreError> {
    let Some(row) = c
        .query_opt(
            "SELECT rowid, name, attributes FROM companies WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let rowid: i64 = row.get(0);
    let signals = c
        .query(
            "SELECT kind, at, props FROM company_signals WHERE company = $1 ORDER BY at, seq",
            &[&rowid],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(BusinessSignal {
                kind: r.get(0),
                at: from_micros(r.get(1))?,
                props: decode_props(r.get(2))?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Some(Company {
        id: id.to_string(),
        name: row.get(1),
        attributes: decode(row.get(2))?,
        signals,
    }))
}

/// Queues a company's contacts for rescoring; a contact a pass holds is
/// given back, since that pass may have read it before the change.
async fn queue_company_contacts(tx: &Transaction<'_>, company: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO rescore_queue (contact) SELECT rowid FROM contacts WHERE company = $1
         ON CONFLICT (contact) DO UPDATE SET owner = NULL, lease_until = NULL",
        &[&company],
    )
    .await?;
    Ok(())
}

async fn insert_signal(
    tx: &Transaction<'_>,
    company: i64,
    company_id: &str,
    signal: &BusinessSignal,
) -> Result<bool, StoreError> {
    let key = Incoming::Company {
        company: company_id.to_string(),
        signal: signal.clone(),
    }
    .dedup_key();
    let n = tx
        .execute(
            "INSERT INTO company_signals (company, dedup, kind, at, props)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedup) DO NOTHING",
            &[
                &company,
                &&key[..],
                &signal.kind,
                &to_micros(signal.at),
                &encode(&signal.props)?,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// New events from which an append goes through `COPY` rather than one
/// multi-row insert.
const COPY_FROM: usize = 500;

/// Held in shared mode by every transaction appending events, from before
/// it takes its first number until it ends; taken in exclusive mode for an
/// instant by [`last_seq`], so that the number it reads is one below which
/// no transaction still appends.
pub(super) const APPENDERS: i64 = 0x7265_6c61_6e63_6502;

/// What became of one event given to [`insert_events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    New,
    /// Stored before, or earlier in the same batch.
    Known,
    /// Its contact was erased meanwhile: not stored.
    NoContact,
}

/// Inserts events (contact key, event, dedup key) not stored yet, numbered
/// in order from the sequence `events_seq` (the caller wakes the listeners
/// once committed: `PgStore::appended_now`). Returns what became of each
/// (a dedup key repeated in the batch counts at its first occurrence).
///
/// Appenders of different contacts do not wait for each other (no counter
/// row updated by each of them). Two appends of one event name the same
/// contact: the contacts' rows are locked (`FOR NO KEY UPDATE`, ascending
/// keys, as claims take them) before the stored events are looked up, so
/// what is stored then stays so until commit, and a number is only taken
/// for an event that is inserted: numbers have no gaps but those of
/// transactions that rolled back. Events have no foreign key to contacts
/// (its check cost a query per event): a contact the lock no longer finds
/// was erased, and its events are not stored; an erasure deletes the
/// contact's row, waiting for these locks, before its events.
pub(super) async fn insert_events(
    tx: &Transaction<'_>,
    rows: &[(i64, &Event, [u8; 16])],
) -> Result<Vec<Stored>, StoreError> {
    use tokio_postgres::types::{ToSql, Type};
    type Param<'a> = (&'a (dyn ToSql + Sync), Type);
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<i64> = rows.iter().map(|(k, ..)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    let dedups: Vec<&[u8]> = rows.iter().map(|(_, _, d)| &d[..]).collect();
    let appenders: [Param<'_>; 1] = [(&APPENDERS, Type::INT8)];
    let contacts: [Param<'_>; 1] = [(&keys, Type::INT8_ARRAY)];
    let known: [Param<'_>; 1] = [(&dedups, Type::BYTEA_ARRAY)];
    let (_, locked, stored) = tokio::join!(
        tx.query_typed("SELECT pg_advisory_xact_lock_shared($1)", &appenders),
        tx.query_typed(
            "SELECT rowid FROM contacts WHERE rowid = ANY($1) ORDER BY rowid FOR NO KEY UPDATE",
            &contacts
        ),
        // One probe of the unique index per key, whatever the statistics
        // say: `dedup = ANY($1)` was planned as a scan of the whole table
        // while its statistics lagged its growth.
        tx.query_typed(
            "SELECT e.dedup FROM unnest($1::bytea[]) k(dedup)
             CROSS JOIN LATERAL (SELECT dedup FROM events WHERE dedup = k.dedup LIMIT 1) e",
            &known
        ),
    )
    .in_order()?;
    let present: HashSet<i64> = locked.iter().map(|r| r.get(0)).collect();
    let mut seen: HashSet<Vec<u8>> = stored.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
    let fresh: Vec<Stored> = rows
        .iter()
        .map(|(k, _, d)| {
            if !present.contains(k) {
                Stored::NoContact
            } else if seen.insert(d.to_vec()) {
                Stored::New
            } else {
                Stored::Known
            }
        })
        .collect();
    let n = fresh.iter().filter(|f| **f == Stored::New).count();
    if n == 0 {
        return Ok(fresh);
    }
    let numbers: Vec<i64> = tx
        .query_typed(
            "SELECT nextval('events_seq') FROM generate_series(1, $1::bigint)",
            &[(&(n as i64), Type::INT8)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (mut contact, mut at, mut seq, mut dedup) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut event_id, mut kind, mut channel, mut props) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((key, e, d), number) in rows
        .iter()
        .zip(&fresh)
        .filter(|(_, f)| **f == Stored::New)
        .map(|(r, _)| r)
        .zip(&numbers)
    {
        contact.push(*key);
        at.push(to_micros(e.at));
        seq.push(*number);
        dedup.push(&d[..]);
        event_id.push(e.id.as_deref());
        kind.push(e.kind.as_str());
        channel.push(e.channel.as_deref());
        props.push(encode(&e.props)?);
    }
    if seq.len() != n {
        return Err(StoreError::Backend(format!(
            "events_seq gave {} numbers for {n} events",
            seq.len()
        )));
    }
    if n >= COPY_FROM {
        // Large batches (imports, the API's group commits): binary COPY.
        let sink = tx
            .copy_in(
                "COPY events (contact, at, seq, dedup, event_id, type, channel, props)
                 FROM STDIN BINARY",
            )
            .await?;
        let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::BYTEA,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
            ],
        );
        let mut writer = std::pin::pin!(writer);
        for i in 0..n {
            writer
                .as_mut()
                .write(&[
                    &contact[i],
                    &at[i],
                    &seq[i],
                    &dedup[i],
                    &event_id[i],
                    &kind[i],
                    &channel[i],
                    &props[i],
                ])
                .await?;
        }
        writer.as_mut().finish().await?;
    } else {
        let columns: [Param<'_>; 8] = [
            (&contact, Type::INT8_ARRAY),
            (&at, Type::INT8_ARRAY),
            (&seq, Type::INT8_ARRAY),
            (&dedup, Type::BYTEA_ARRAY),
            (&event_id, Type::TEXT_ARRAY),
            (&kind, Type::TEXT_ARRAY),
            (&channel, Type::TEXT_ARRAY),
            (&props, Type::TEXT_ARRAY),
        ];
        tx.query_typed(
            "INSERT INTO events (contact, at, seq, dedup, event_id, type, channel, props)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[],
                                  $5::text[], $6::text[], $7::text[], $8::text[])",
            &columns,
        )
        .await?;
    }
    Ok(fresh)
}

/// The number below which every event is visible: no transaction still
/// appending holds a lower one. Taken between appends (see [`APPENDERS`]),
/// so it waits for the appends under way, and makes new ones wait, for
/// that long. With `after`, the last number handed out is read first: when
/// it is not above `after` (nothing new), it is the answer, without waiting.
pub(super) async fn last_seq(tx: &Transaction<'_>, after: Option<i64>) -> Result<i64, StoreError> {
    const HANDED_OUT: &str =
        "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM events_seq";
    if let Some(after) = after {
        let handed: i64 = tx.query_one(HANDED_OUT, &[]).await?.get(0);
        if handed <= after {
            return Ok(handed);
        }
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPENDERS])
        .await?;
    Ok(tx.query_one(HANDED_OUT, &[]).await?.get(0))
}

/// Writes the contacts `ids` (ascending) from `records`, and queues them
/// for rescoring, in two statements whatever their number: one round trip
/// per batch instead of two per contact.
async fn write_contacts(
    tx: &Transaction<'_>,
    ids: &[String],
    records: &HashMap<String, Contact>,
    country: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let n = ids.len();
    let (mut json, mut company, mut email, mut email_key, mut phone_key) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for id in ids {
        let c = records
            .get(id)
            .ok_or_else(|| StoreError::Backend(format!("contact {id} merged but not kept")))?;
        let (ek, pk) = contact_keys(c, country);
        json.push(encode(c)?);
        company.push(c.company.clone());
        email.push(c.email.clone());
        email_key.push(ek);
        phone_key.push(pk);
    }
    tx.execute(
        "WITH up AS (
           INSERT INTO contacts (id, record, company, email, email_key, phone_key)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[])
           ON CONFLICT (id) DO UPDATE SET record = excluded.record,
             company = excluded.company, email = excluded.email,
             email_key = excluded.email_key, phone_key = excluded.phone_key
           RETURNING rowid)
         INSERT INTO rescore_queue (contact) SELECT rowid FROM up ORDER BY rowid
         ON CONFLICT (contact) DO UPDATE SET owner = NULL, lease_until = NULL",
        &[&ids, &json, &company, &email, &email_key, &phone_key],
    )
    .await?;
    Ok(())
}

fn unknown_contact(id: &str) -> Append {
    Append::Rejected(format!("contact: unknown contact `{id}`"))
}

impl PgStore {
    /// One transaction for a group of batches: contacts looked up once,
    /// repeats within the group caught before SQL, new events inserted in
    /// one statement (`COPY` for large groups).
    fn append_group(&self, batch: &[Incoming]) -> Result<Vec<Append>, StoreError> {
        self.tx(async |tx| {
            let mut out = vec![Append::Duplicate; batch.len()];
            let mut ids: Vec<&str> = batch
                .iter()
                .filter_map(|i| match i {
                    Incoming::Contact(e) => Some(e.contact.as_str()),
                    Incoming::Company { .. } => None,
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let rowids: HashMap<String, i64> = tx
                .query("SELECT id, rowid FROM contacts WHERE id = ANY($1)", &[&ids])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut seen: HashSet<[u8; 16]> = HashSet::with_capacity(batch.len());
            let mut rows: Vec<(i64, &Event, [u8; 16])> = Vec::with_capacity(batch.len());
            let mut positions = Vec::with_capacity(batch.len());
            for (i, incoming) in batch.iter().enumerate() {
                let key = incoming.dedup_key();
                match incoming {
                    Incoming::Contact(e) => match rowids.get(&e.contact) {
                        None => out[i] = unknown_contact(&e.contact),
                        // A repeat within the batch: the first one counts.
                        Some(_) if !seen.insert(key) => {}
                        Some(&rowid) => {
                            rows.push((rowid, e, key));
                            positions.push(i);
                        }
                    },
                    Incoming::Company { company, signal } => {
                        let rowid: Option<i64> = tx
                            .query_opt("SELECT rowid FROM companies WHERE id = $1", &[company])
                            .await?
                            .map(|r| r.get(0));
                        out[i] = match rowid {
                            None => {
                                Append::Rejected(format!("company: unknown company `{company}`"))
                            }
                            Some(rowid) => {
                                queue_company_contacts(tx, company).await?;
                                if insert_signal(tx, rowid, company, signal).await? {
                                    Append::Inserted
                                } else {
                                    Append::Duplicate
                                }
                            }
                        };
                    }
                }
            }
            // In (contact, instant) order: neighbouring index pages.
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by_key(|&j| (rows[j].0, rows[j].1.at, positions[j]));
            let sorted: Vec<(i64, &Event, [u8; 16])> = order.iter().map(|&j| rows[j]).collect();
            let stored = insert_events(tx, &sorted).await?;
            for (&j, what) in order.iter().zip(stored) {
                let i = positions[j];
                match what {
                    Stored::New => out[i] = Append::Inserted,
                    Stored::Known => {}
                    Stored::NoContact => out[i] = unknown_contact(&rows[j].1.contact),
                }
            }
            if out.iter().any(|a| matches!(a, Append::Inserted)) {
                request_plan(tx).await?;
            }
            Ok(out)
        })
    }
}

impl Records for PgStore {
    /// The upsert's transaction, then the batch's duplicates read at once
    /// after it: another daemon's upsert in between may add a twin to a
    /// group, never hide one.
    fn upsert_contacts_checked(&self, batch: &[Patch]) -> Result<ContactsWritten, StoreError> {
        let written = self.upsert_contacts(batch)?;
        let ids: Vec<String> = batch.iter().map(|p| p.id.clone()).collect();
        let groups = crate::ports::store::DeskStore::duplicates_of(self, &ids)?;
        Ok((written, groups))
    }

    /// PostgreSQL keeps its indexes through a load.
    fn begin_contact_load(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn end_contact_load(&self) -> Result<Vec<DuplicateGroup>, StoreError> {
        crate::ports::store::DeskStore::duplicate_groups(self)
    }

    fn upsert_contacts(&self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError> {
        self.tx(async |tx| {
            let country = default_country(tx).await?;
            let ids: Vec<&str> = batch.iter().map(|p| p.id.as_str()).collect();
            // Locked as read, so that two writers of one contact merge in turn.
            let mut existing: HashMap<String, Contact> = HashMap::new();
            for r in tx
                .query(
                    "SELECT id, record FROM contacts WHERE id = ANY($1) ORDER BY rowid
                     FOR NO KEY UPDATE",
                    &[&ids],
                )
                .await?
            {
                existing.insert(r.get(0), decode(r.get(1))?);
            }
            let mut out = vec![Upsert::Unchanged; batch.len()];
            // Merged in memory in id order (a repeated id merges onto its
            // previous line); the last record of each id is written.
            let mut written: Vec<String> = Vec::new();
            for i in by_id(batch) {
                let patch = &batch[i];
                let (outcome, record) = merge(existing.get(&patch.id), patch)?;
                if let Some(c) = record {
                    if written.last() != Some(&c.id) {
                        written.push(c.id.clone());
                    }
                    existing.insert(c.id.clone(), c);
                }
                out[i] = outcome;
            }
            write_contacts(tx, &written, &existing, &country).await?;
            request_plan_if_changed(tx, &out).await?;
            Ok(out)
        })
    }

    fn upsert_companies(&self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError> {
        self.tx(async |tx| {
            let mut out = vec![Upsert::Unchanged; batch.len()];
            for i in by_id(batch) {
                let patch = &batch[i];
                tx.execute(
                    "SELECT 1 FROM companies WHERE id = $1 FOR NO KEY UPDATE",
                    &[&patch.id],
                )
                .await?;
                let existing = load_company(tx, &patch.id).await?;
                let (outcome, record) = merge(existing.as_ref(), patch)?;
                if let Some(c) = record {
                    let rowid: i64 = tx
                        .query_one(
                            "INSERT INTO companies (id, name, attributes) VALUES ($1, $2, $3)
                             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                               attributes = excluded.attributes
                             RETURNING rowid",
                            &[&c.id, &c.name, &encode(&c.attributes)?],
                        )
                        .await?
                        .get(0);
                    for signal in &c.signals {
                        insert_signal(tx, rowid, &c.id, signal).await?;
                    }
                    queue_company_contacts(tx, &c.id).await?;
                }
                out[i] = outcome;
            }
            request_plan_if_changed(tx, &out).await?;
            Ok(out)
        })
    }

    fn upsert_deals(&self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError> {
        self.tx(async |tx| {
            let mut out = vec![Upsert::Unchanged; batch.len()];
            for i in by_id(batch) {
                let patch = &batch[i];
                let existing: Option<Deal> = tx
                    .query_opt(
                        "SELECT record FROM deals WHERE id = $1 FOR NO KEY UPDATE",
                        &[&patch.id],
                    )
                    .await?
                    .map(|r| decode(r.get(0)))
                    .transpose()?;
                let (outcome, record) = merge(existing.as_ref(), patch)?;
                if let Some(d) = record {
                    let contact = match &d.contact {
                        Some(c) => match contact_rowid(tx, c).await? {
                            Some(rowid) => Some(rowid),
                            None => {
                                out[i] =
                                    Upsert::Rejected(format!("contact: unknown contact `{c}`"));
                                continue;
                            }
                        },
                        None => None,
                    };
                    tx.execute(
                        "INSERT INTO deals (id, contact, record) VALUES ($1, $2, $3)
                         ON CONFLICT (id) DO UPDATE SET contact = excluded.contact,
                           record = excluded.record",
                        &[&d.id, &contact, &encode(&d)?],
                    )
                    .await?;
                }
                out[i] = outcome;
            }
            request_plan_if_changed(tx, &out).await?;
            Ok(out)
        })
    }

    /// Batches appended while another is being written share the next
    /// transaction (group commit, one at a time per handle): under load one
    /// transaction carries many requests' events.
    fn append_events(&self, batch: &[Incoming]) -> Result<Vec<Append>, StoreError> {
        self.appends.append(
            batch,
            self.appender.try_lock().ok(),
            || super::pool::blocking(|| super::pool::lock(&self.appender)),
            |_, all| {
                let out = self.append_group(all)?;
                self.appended_now();
                Ok(out)
            },
        )
    }

    fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        self.read(async |c| {
            c.query_opt("SELECT record FROM contacts WHERE id = $1", &[&id])
                .await?
                .map(|r| decode(r.get(0)))
                .transpose()
        })
    }

    fn for_each_contact(&self, f: &mut dyn FnMut(Contact)) -> Result<(), StoreError> {
        let mut after = String::new();
        let mut first = true;
        loop {
            let rows = self.read(async |c| {
                Ok(c.query(
                    "SELECT id, record FROM contacts WHERE $1 OR id > $2 ORDER BY id LIMIT 1000",
                    &[&first, &after],
                )
                .await?)
            })?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.get(0);
            first = false;
            for r in &rows {
                f(decode(r.get(1))?);
            }
        }
    }

    fn company(&self, id: &str) -> Result<Option<Company>, StoreError> {
        self.read(async |c| load_company(c, id).await)
    }

    fn deals(&self) -> Result<Vec<Deal>, StoreError> {
        self.read(async |c| {
            c.query("SELECT record FROM deals ORDER BY id", &[])
                .await?
                .iter()
                .map(|r| decode(r.get(0)))
                .collect()
        })
    }

    fn events_of(&self, contact: &str) -> Result<Vec<Event>, StoreError> {
        self.snapshot(async |tx| match contact_rowid(tx, contact).await? {
            Some(rowid) => events_by_key(tx, rowid, contact).await,
            None => Ok(Vec::new()),
        })
    }

    fn scan_histories(&self, f: &mut dyn FnMut(Contact, Vec<Event>)) -> Result<(), StoreError> {
        super::scores::scan_range(self, (i64::MIN, i64::MAX), &mut |_, contact, events, _| {
            f(contact, events.to_vec());
            Ok(())
        })
    }

    fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.tx(async |tx| last_seq(tx, None).await)
    }

    fn contacts_with_events_after(&self, seq: i64) -> Result<Vec<String>, StoreError> {
        self.read(async |c| {
            Ok(c.query(
                "SELECT id FROM contacts WHERE rowid IN
                   (SELECT DISTINCT contact FROM events WHERE seq > $1) ORDER BY id",
                &[&seq],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn erase_contact(&self, id: &str) -> Result<bool, StoreError> {
        // Cascades remove scores, outbox, deals, the planner's memo and
        // wake instant, the desk's rows. Events, the fatigue ledger and the
        // decision log have no foreign key: deleted once the contact's row
        // is, which waited for the appends, claims and plan saves holding
        // it (later ones no longer find it).
        self.tx(async |tx| {
            let Some(row) = tx
                .query_opt("DELETE FROM contacts WHERE id = $1 RETURNING rowid", &[&id])
                .await?
            else {
                return Ok(false);
            };
            let rowid: i64 = row.get(0);
            for table in ["events", "fatigue_ledger", "decision_log"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE contact = $1"),
                    &[&rowid],
                )
                .await?;
            }
            Ok(true)
        })
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.snapshot(async |tx| {
            let row = tx
                .query_one(
                    "SELECT (SELECT count(*) FROM contacts), (SELECT count(*) FROM companies),
                            (SELECT count(*) FROM deals), (SELECT count(*) FROM events)",
                    &[],
                )
                .await?;
            let n = |i: usize| row.get::<_, i64>(i) as u64;
            Ok(Counts {
                contacts: n(0),
                companies: n(1),
                deals: n(2),
                events: n(3),
            })
        })
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(async |c| super::migrations::version(c).await)
    }

    fn wait_for_events(&self, after: i64, timeout: Duration) -> Result<i64, StoreError> {
        let deadline = Instant::now() + timeout;
        let (count, woken) = &*self.appended;
        loop {
            let seen = *super::pool::lock(count);
            let last = self.tx(async |tx| last_seq(tx, Some(after)).await)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if last > after || left.is_zero() {
                return Ok(last);
            }
            // Until a notification (or an append here), or the next poll.
            let guard = super::pool::lock(count);
            drop(super::pool::blocking(|| {
                woken
                    .wait_timeout_while(guard, left.min(super::pool::EVENT_POLL), |c| *c == seen)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }));
        }
    }
}
