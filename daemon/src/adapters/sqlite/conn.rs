//! The embedded SQLite store: WAL, IMMEDIATE write transactions (a writer
//! waits for the lock instead of failing with SQLITE_BUSY mid-transaction),
//! foreign keys with cascades for erasure, migrations at open.

use super::events::{Dictionary, EVENT_COLUMNS, EventReader, EventWriter, blank_event, forget_ids};
use super::migrations::MIGRATIONS;
use super::plan::request_plan;
use crate::core::model::{Company, Contact, Deal, Event, Timestamp};
use crate::domain::ingest::Record;
use crate::domain::ingest::{Incoming, Patch};
use crate::ports::store::desk::KeyKind;
use crate::ports::store::{Append, ContactsWritten, Counts, StoreError, Upsert};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Prepared statements kept per connection (see [`Conn::open`]).
const STATEMENT_CACHE: usize = 128;

/// Called by a merge scan with the contact row, the contact and its events.
/// A visitor that keeps the events takes them out of the vector; those it
/// leaves are read over by the next contact's.
pub(super) type ScanVisitor<'a> =
    dyn FnMut(&rusqlite::Row<'_>, Contact, &mut Vec<Event>) -> Result<(), StoreError> + 'a;

/// One SQLite connection; the handle ([`super::SqliteStore`]) keeps one
/// for writing and a few for reading.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) conn: Connection,
    /// Event names and props, shared by the handle's connections.
    pub(super) dict: Arc<Dictionary>,
    /// The writer: what it reads may be inside a write transaction.
    writer: bool,
}

/// SQLite's result codes sorted into what retrying may fix and what it
/// cannot: the rest of relance sees only [`StoreError`]'s kinds.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let message = e.to_string();
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure => {
                    StoreError::Transient(message)
                }
                C::ConstraintViolation => StoreError::Constraint(message),
                C::DatabaseCorrupt | C::NotADatabase => StoreError::Corrupt(message),
                _ => StoreError::Backend(message),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(message),
            _ => StoreError::Backend(message),
        }
    }
}

/// Instants are stored as microseconds since the Unix epoch.
pub(crate) fn to_micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// A stored instant beyond what chrono represents (about ±262,000 years:
/// only a row written by hand) reads as the nearest one it can, so that a
/// read never fails on it; fatigue then leaves such an event out.
pub(crate) fn from_micros(us: i64) -> Result<Timestamp, StoreError> {
    Ok(
        DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_else(|| {
            tracing::warn!(
                micros = us,
                "stored instant out of range, read as the nearest"
            );
            if us < 0 {
                DateTime::<Utc>::MIN_UTC
            } else {
                DateTime::<Utc>::MAX_UTC
            }
        }),
    )
}

impl Conn {
    /// A passive checkpoint: copies what the log holds back into the
    /// database as far as readers allow, without waiting for anyone.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Opens (creating if needed) one connection; the first connection of
    /// a handle also migrates. A page cache of `cache_mb` megabytes keeps
    /// the hot index pages in memory; past 16 MB it bought nothing
    /// measurable, even for imports into a store of 20 M events, and it
    /// adds to every pass's peak memory.
    pub(super) fn open(
        path: &Path,
        busy_timeout: Duration,
        cache_mb: u32,
        migrate: bool,
        dict: Arc<Dictionary>,
    ) -> Result<Self, StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.display().to_string(),
            reason: source.to_string(),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(busy_timeout).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "cache_size", -(i64::from(cache_mb) * 1024))
            .map_err(open_err)?;
        // Checkpoints (the only fsyncs in WAL with synchronous=NORMAL) every
        // ~40 MB of WAL rather than every 4 MB.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)
            .map_err(open_err)?;
        // rusqlite keeps 16 prepared statements by default; a writer's claim
        // and settlement alone use more, and each one evicted is compiled
        // again on its next use.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mut store = Self {
            conn,
            dict,
            writer: migrate,
        };
        if migrate {
            store.migrate(path)?;
        }
        Ok(store)
    }

    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tracing::info!(version = i + 1, "store migrated");
        }
        // A bulk load that died before its end left them out.
        tx.execute_batch(super::desk::KEY_INDEXES)?;
        tx.commit()?;
        Ok(())
    }

    /// Streams contacts with their events, merge-joining two sequential
    /// reads: `contacts_sql` selects `rowid, record, …` for rowids in
    /// `[?1, ?2)` ordered by rowid, the events come in (contact, at, seq)
    /// order. `f` sees the contact row for
    /// any extra columns.
    pub(super) fn merge_scan(
        &self,
        contacts_sql: &str,
        range: (i64, i64),
        f: &mut ScanVisitor<'_>,
    ) -> Result<(), StoreError> {
        let mut contacts = self.conn.prepare(contacts_sql)?;
        let mut events = self.conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE contact >= ?1 AND contact < ?2 ORDER BY contact, at, seq"
        ))?;
        merge_rows(
            contacts.query(params![range.0, range.1])?,
            events.query(params![range.0, range.1])?,
            &self.events(),
            f,
        )
    }

    /// Reads event rows on this connection.
    pub(super) fn events(&self) -> EventReader<'_> {
        EventReader::new(&self.conn, &self.dict, !self.writer)
    }

    /// The schema version in force.
    pub(super) fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(super) fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Applies a patch to the stored record and says what changed.
pub(crate) fn merge<T: Record>(
    existing: Option<&T>,
    patch: &Patch,
) -> Result<(Upsert, Option<T>), StoreError> {
    match patch.apply(existing) {
        Err(reason) => Ok((Upsert::Rejected(reason), None)),
        Ok(record) => match existing {
            None => Ok((Upsert::Inserted, Some(record))),
            Some(old) if *old == record => Ok((Upsert::Unchanged, None)),
            Some(_) => Ok((Upsert::Updated, Some(record))),
        },
    }
}

fn contact_rowid(tx: &Connection, id: &str) -> Result<Option<i64>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT rowid FROM contacts WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

impl Conn {
    pub(super) fn upsert_contacts(&mut self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError> {
        Ok(self.upsert_contacts_keyed(batch, false)?.0)
    }

    pub(super) fn upsert_contacts_checked(
        &mut self,
        batch: &[Patch],
    ) -> Result<ContactsWritten, StoreError> {
        self.upsert_contacts_keyed(batch, true)
    }

    /// With `check`, each written contact's insert also looks up its keys
    /// (in the same statement, on index pages it just touched); the rare
    /// keys found twice are then read as groups, after the whole batch, so
    /// that an earlier line of the batch is flagged too.
    fn upsert_contacts_keyed(
        &mut self,
        batch: &[Patch],
        check: bool,
    ) -> Result<ContactsWritten, StoreError> {
        self.write(|tx| {
            let country = super::desk::default_country(tx)?;
            let mut out = Vec::with_capacity(batch.len());
            let mut met: BTreeSet<(KeyKind, String)> = BTreeSet::new();
            let sql = if check {
                super::desk::UPSERT_CONTACT_CHECKED
            } else {
                super::desk::UPSERT_CONTACT
            };
            for patch in batch {
                let existing: Option<Contact> = tx
                    .prepare_cached("SELECT record FROM contacts WHERE id = ?1")?
                    .query_row([&patch.id], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|j| decode(&j))
                    .transpose()?;
                let (outcome, record) = merge(existing.as_ref(), patch)?;
                if let Some(c) = record {
                    let (email_key, phone_key) = super::desk::contact_keys(&c, &country);
                    let (rowid, email_met, phone_met): (i64, bool, bool) =
                        tx.prepare_cached(sql)?.query_row(
                            params![c.id, encode(&c)?, c.company, c.email, email_key, phone_key],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )?;
                    if let (true, Some(k)) = (email_met, email_key) {
                        met.insert((KeyKind::Email, k));
                    }
                    if let (true, Some(k)) = (phone_met, phone_key) {
                        met.insert((KeyKind::Phone, k));
                    }
                    tx.prepare_cached(
                        "INSERT INTO rescore_queue (contact) VALUES (?1)
                         ON CONFLICT(contact) DO UPDATE SET owner = NULL, lease_until = NULL",
                    )?
                    .execute([rowid])?;
                }
                out.push(outcome);
            }
            if out
                .iter()
                .any(|u| matches!(u, Upsert::Inserted | Upsert::Updated))
            {
                request_plan(tx)?;
            }
            let flagged = super::desk::flag_batch(tx, batch, &met)?;
            Ok((out, flagged))
        })
    }

    pub(super) fn upsert_companies(&mut self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(batch.len());
            for patch in batch {
                let existing = load_company(tx, &patch.id)?;
                let (outcome, record) = merge(existing.as_ref(), patch)?;
                if let Some(c) = record {
                    save_company(tx, &c)?;
                    queue_company_contacts(tx, &c.id)?;
                }
                out.push(outcome);
            }
            if out
                .iter()
                .any(|u| matches!(u, Upsert::Inserted | Upsert::Updated))
            {
                request_plan(tx)?;
            }
            Ok(out)
        })
    }

    pub(super) fn upsert_deals(&mut self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(batch.len());
            for patch in batch {
                let existing: Option<Deal> = tx
                    .prepare_cached("SELECT record FROM deals WHERE id = ?1")?
                    .query_row([&patch.id], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|j| decode(&j))
                    .transpose()?;
                let (outcome, record) = merge(existing.as_ref(), patch)?;
                if let Some(d) = record {
                    let contact = match &d.contact {
                        Some(c) => match contact_rowid(tx, c)? {
                            Some(rowid) => Some(rowid),
                            None => {
                                out.push(Upsert::Rejected(format!("contact: unknown contact `{c}`")));
                                continue;
                            }
                        },
                        None => None,
                    };
                    tx.prepare_cached(
                        "INSERT INTO deals (id, contact, record) VALUES (?1, ?2, ?3)
                         ON CONFLICT(id) DO UPDATE SET contact = excluded.contact, record = excluded.record",
                    )?
                    .execute(params![d.id, contact, encode(&d)?])?;
                }
                out.push(outcome);
            }
            if out.iter().any(|u| matches!(u, Upsert::Inserted | Upsert::Updated)) {
                request_plan(tx)?;
            }
            Ok(out)
        })
    }

    /// Contacts are looked up once per batch, repeats within the batch are
    /// caught before SQL, and events are inserted in (contact, instant)
    /// order: consecutive inserts then land on neighbouring pages of the
    /// table, which keeps large batches (the API's group commits) cheap.
    /// Per contact, one look at the stored events over the batch's span
    /// tells whether any event without a producer's id could repeat one
    /// by content (a fresh contact, or new instants, need no look per
    /// event), and the change feed moves once.
    pub(super) fn append_events(&mut self, batch: &[Incoming]) -> Result<Vec<Append>, StoreError> {
        self.write(|tx| {
            let first_seq = next_event_seq(tx)?;
            let mut next_seq = first_seq;
            let mut out = vec![Append::Duplicate; batch.len()];
            let mut rowids: HashMap<&str, Option<i64>> = HashMap::new();
            // Producers' ids seen in this batch: the first one counts.
            let mut ids: HashSet<&str> = HashSet::new();
            // (contact rowid, at, position in the batch)
            let mut rows: Vec<(i64, i64, usize)> = Vec::with_capacity(batch.len());
            let mut lookup = tx.prepare_cached("SELECT rowid FROM contacts WHERE id = ?1")?;
            for (i, incoming) in batch.iter().enumerate() {
                match incoming {
                    Incoming::Contact(e) => {
                        let rowid = match rowids.get(e.contact.as_str()) {
                            Some(r) => *r,
                            None => {
                                let r = lookup.query_row([&e.contact], |r| r.get(0)).optional()?;
                                rowids.insert(&e.contact, r);
                                r
                            }
                        };
                        match rowid {
                            None => {
                                out[i] = Append::Rejected(format!(
                                    "contact: unknown contact `{}`",
                                    e.contact
                                ));
                            }
                            // A repeat within the batch: the first one counts.
                            Some(_) if e.id.as_deref().is_some_and(|id| !ids.insert(id)) => {}
                            Some(rowid) => rows.push((rowid, to_micros(e.at), i)),
                        }
                    }
                    Incoming::Company { company, signal } => {
                        let key = incoming.dedup_key();
                        let rowid: Option<i64> = tx
                            .prepare_cached("SELECT rowid FROM companies WHERE id = ?1")?
                            .query_row([company], |r| r.get(0))
                            .optional()?;
                        out[i] = match rowid {
                            None => Append::Rejected(format!("company: unknown company `{company}`")),
                            Some(rowid) => {
                                queue_company_contacts(tx, company)?;
                                let n = tx
                                    .prepare_cached(
                                        "INSERT INTO company_signals (company, dedup, kind, at, props)
                                         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(dedup) DO NOTHING",
                                    )?
                                    .execute(params![rowid, &key[..], signal.kind, to_micros(signal.at), encode(&signal.props)?])?;
                                if n == 1 { Append::Inserted } else { Append::Duplicate }
                            }
                        };
                    }
                }
            }
            rows.sort_unstable();
            let event = |i: usize| match &batch[i] {
                Incoming::Contact(e) => Some(e),
                Incoming::Company { .. } => None,
            };
            let mut events = EventWriter::new(tx);
            for group in rows.chunk_by(|a, b| a.0 == b.0) {
                let rowid = group[0].0;
                let (from, to) = (group[0].1, group[group.len() - 1].1);
                let check = group
                    .iter()
                    .any(|&(_, _, i)| event(i).is_some_and(|e| e.id.is_none()))
                    && events.has_content_events(rowid, from, to)?;
                let mut newest = None;
                for (k, &(_, at, i)) in group.iter().enumerate() {
                    let Some(e) = event(i) else {
                        continue;
                    };
                    // The same content at the same instant earlier in the
                    // batch (same contact): the first one counts.
                    if e.id.is_none()
                        && group[..k].iter().rev().take_while(|r| r.1 == at).any(|r| {
                            matches!(out[r.2], Append::Inserted)
                                && event(r.2).is_some_and(|o| same_content(o, e))
                        })
                    {
                        continue;
                    }
                    if events.insert_row(rowid, e, next_seq, check)? {
                        newest = Some(next_seq);
                        next_seq += 1;
                        out[i] = Append::Inserted;
                    }
                }
                if let Some(seq) = newest {
                    events.feed(rowid, seq)?;
                }
            }
            if next_seq > first_seq {
                set_event_seq(tx, next_seq - 1)?;
            }
            if out.iter().any(|a| matches!(a, Append::Inserted)) {
                request_plan(tx)?;
            }
            Ok(out)
        })
    }

    pub(super) fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        self.conn
            .prepare_cached("SELECT record FROM contacts WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, String>(0))
            .optional()?
            .map(|j| decode(&j))
            .transpose()
    }

    pub(super) fn for_each_contact(&self, f: &mut dyn FnMut(Contact)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT record FROM contacts ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(decode(&row.get::<_, String>(0)?)?);
        }
        Ok(())
    }

    pub(super) fn company(&self, id: &str) -> Result<Option<Company>, StoreError> {
        load_company(&self.conn, id)
    }

    pub(super) fn deals(&self) -> Result<Vec<Deal>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT record FROM deals ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|j| decode(&j?)).collect()
    }

    pub(super) fn events_of(&self, contact: &str) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE contact = (SELECT rowid FROM contacts WHERE id = ?1) ORDER BY at, seq"
        ))?;
        let mut rows = stmt.query([contact])?;
        let reader = self.events();
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (_, mut event) = reader.event(r)?;
            event.contact = contact.to_string();
            out.push(event);
        }
        Ok(out)
    }

    pub(super) fn scan_histories(
        &self,
        f: &mut dyn FnMut(Contact, Vec<Event>),
    ) -> Result<(), StoreError> {
        self.merge_scan(
            "SELECT rowid, record FROM contacts WHERE rowid >= ?1 AND rowid < ?2 ORDER BY rowid",
            (i64::MIN, i64::MAX),
            &mut |_, contact, events| {
                f(contact, std::mem::take(events));
                Ok(())
            },
        )
    }

    pub(super) fn last_event_seq(&self) -> Result<i64, StoreError> {
        Ok(next_event_seq(&self.conn)? - 1)
    }

    pub(super) fn contacts_with_events_after(&self, seq: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM contacts WHERE rowid IN (SELECT contact FROM event_feed WHERE seq > ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([seq], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn erase_contact(&mut self, id: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            // Cascades remove events, snapshots, ledger, outbox, decisions, deals
            // and the planner's memo and wake instant.
            let rowid: Option<i64> = tx
                .prepare_cached("SELECT rowid FROM contacts WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            if let Some(rowid) = rowid {
                forget_ids(tx, rowid)?;
            }
            Ok(tx.execute("DELETE FROM contacts WHERE id = ?1", [id])? > 0)
        })
    }

    pub(super) fn counts(&self) -> Result<Counts, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })? as u64)
        };
        Ok(Counts {
            contacts: count("contacts")?,
            companies: count("companies")?,
            deals: count("deals")?,
            events: count("events")?,
        })
    }
}

/// Merge-joins contact rows (`rowid, record, …` ordered by rowid) with event
/// rows (`contact, event_id, type, at, channel, props` ordered by contact,
/// at, seq): one pass over each, however many contacts.
pub(super) fn merge_rows(
    mut contacts: rusqlite::Rows<'_>,
    mut events: rusqlite::Rows<'_>,
    reader: &EventReader<'_>,
    f: &mut ScanVisitor<'_>,
) -> Result<(), StoreError> {
    // Events already read are filled again rather than allocated anew:
    // `spare` holds those the last visitor left, `pending` the next row.
    let mut spare: Vec<Event> = Vec::new();
    let mut history: Vec<Event> = Vec::new();
    let mut next = |spare: &mut Vec<Event>| -> Result<Option<(i64, Event)>, StoreError> {
        let Some(r) = events.next()? else {
            return Ok(None);
        };
        let mut event = spare.pop().unwrap_or_else(blank_event);
        let owner = reader.event_into(r, &mut event)?;
        Ok(Some((owner, event)))
    };
    let mut pending = next(&mut spare)?;
    while let Some(row) = contacts.next()? {
        let rowid: i64 = row.get(0)?;
        let contact: Contact = decode(
            row.get_ref(1)?
                .as_str()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )?;
        while let Some((owner, _)) = &pending {
            if *owner > rowid {
                break;
            }
            if let Some((owner, mut event)) = pending.take() {
                if owner == rowid {
                    event.contact.clone_from(&contact.id);
                    history.push(event);
                } else {
                    spare.push(event);
                }
            }
            pending = next(&mut spare)?;
        }
        f(row, contact, &mut history)?;
        spare.append(&mut history);
    }
    Ok(())
}

/// Most events carry no properties: skip the JSON parser for them.
pub(crate) fn decode_props(
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    if text == "{}" {
        return Ok(serde_json::Map::new());
    }
    // Props written by hand or by an older version that cannot be read
    // count as none, rather than making the contact unreadable.
    Ok(decode(text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "stored event props unreadable, read as none");
        serde_json::Map::new()
    }))
}

/// The next event sequence number. Numbers are never reused, even after the
/// newest events were erased: an incremental pass remembers the last number
/// it saw and must find every later event. Writers are serialised
/// (IMMEDIATE), so the number is ours until the transaction ends.
pub(super) fn next_event_seq(tx: &Connection) -> Result<i64, StoreError> {
    let stored: Option<i64> = tx
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'events.last_seq'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let max: i64 = tx
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM event_feed")?
        .query_row([], |r| r.get(0))?;
    Ok(stored.unwrap_or(0).max(max) + 1)
}

/// Records the last sequence number handed out.
pub(super) fn set_event_seq(tx: &Connection, last: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('events.last_seq', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([last.to_string()])?;
    Ok(())
}

/// A company's attributes and signals count for all its contacts. A
/// contact queued again while a pass holds it is given back to the queue:
/// that pass may have read it before the change.
fn queue_company_contacts(tx: &Connection, company: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO rescore_queue (contact) SELECT rowid FROM contacts WHERE company = ?1
         ON CONFLICT(contact) DO UPDATE SET owner = NULL, lease_until = NULL",
    )?
    .execute([company])?;
    Ok(())
}

pub(super) fn load_company(conn: &Connection, id: &str) -> Result<Option<Company>, StoreError> {
    let row: Option<(i64, Option<String>, String)> = conn
        .prepare_cached("SELECT rowid, name, attributes FROM companies WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((rowid, name, attributes)) = row else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT kind, at, props FROM company_signals WHERE company = ?1 ORDER BY at, seq",
    )?;
    let mut rows = stmt.query([rowid])?;
    let mut signals = Vec::new();
    while let Some(r) = rows.next()? {
        signals.push(crate::core::model::BusinessSignal {
            kind: r.get(0)?,
            at: from_micros(r.get(1)?)?,
            props: decode_props(&r.get::<_, String>(2)?)?,
        });
    }
    Ok(Some(Company {
        id: id.to_string(),
        name,
        attributes: decode(&attributes)?,
        signals,
    }))
}

/// Companies by id, with their signals, two queries per
/// [`KEYS_PER_QUERY`] ids; unknown ids are left out.
pub(super) fn load_companies(conn: &Connection, ids: &[&str]) -> Result<Vec<Company>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for batch in ids.chunks(KEYS_PER_QUERY) {
        load_company_batch(conn, batch, &mut out)?;
    }
    Ok(out)
}

fn load_company_batch(
    conn: &Connection,
    ids: &[&str],
    found: &mut Vec<Company>,
) -> Result<(), StoreError> {
    let Some(&last) = ids.last() else {
        return Ok(());
    };
    let padded = ids.iter().copied().chain(std::iter::repeat(last));
    let ids = || padded.clone().take(KEYS_PER_QUERY);
    let mut companies = conn.prepare_cached(&in_list(
        "SELECT rowid, id, name, attributes FROM companies WHERE id IN (",
        ") ORDER BY rowid",
    ))?;
    let mut signals = conn.prepare_cached(&in_list(
        "SELECT s.company, s.kind, s.at, s.props FROM company_signals s
         JOIN companies c ON c.rowid = s.company WHERE c.id IN (",
        ") ORDER BY s.company, s.at, s.seq",
    ))?;
    found.extend(read_companies(
        companies.query(rusqlite::params_from_iter(ids()))?,
        signals.query(rusqlite::params_from_iter(ids()))?,
    )?);
    Ok(())
}

/// Every company with its signals, two scans in key order; `None` when
/// the store holds more than `most`.
pub(super) fn load_all_companies(
    conn: &Connection,
    most: usize,
) -> Result<Option<Vec<Company>>, StoreError> {
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM companies")?
        .query_row([], |r| r.get(0))?;
    if usize::try_from(count).map_or(true, |n| n > most) {
        return Ok(None);
    }
    let mut companies =
        conn.prepare_cached("SELECT rowid, id, name, attributes FROM companies ORDER BY rowid")?;
    let mut signals = conn.prepare_cached(
        "SELECT company, kind, at, props FROM company_signals ORDER BY company, at, seq",
    )?;
    Ok(Some(read_companies(
        companies.query([])?,
        signals.query([])?,
    )?))
}

/// Companies (`rowid, id, name, attributes`, by rowid) with their signals
/// (`company, kind, at, props`, by company).
fn read_companies(
    mut companies: rusqlite::Rows<'_>,
    mut signals: rusqlite::Rows<'_>,
) -> Result<Vec<Company>, StoreError> {
    let mut out: Vec<(i64, Company)> = Vec::new();
    while let Some(r) = companies.next()? {
        out.push((
            r.get(0)?,
            Company {
                id: r.get(1)?,
                name: r.get(2)?,
                attributes: decode(
                    r.get_ref(3)?
                        .as_str()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                )?,
                signals: Vec::new(),
            },
        ));
    }
    while let Some(r) = signals.next()? {
        let owner: i64 = r.get(0)?;
        if let Ok(i) = out.binary_search_by_key(&owner, |(rowid, _)| *rowid) {
            out[i].1.signals.push(crate::core::model::BusinessSignal {
                kind: r.get(1)?,
                at: from_micros(r.get(2)?)?,
                props: decode_props(&r.get::<_, String>(3)?)?,
            });
        }
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// Keys bound per `IN (…)` query: one statement per batch instead of one
/// per key, while the statement text stays small.
pub(super) const KEYS_PER_QUERY: usize = 128;

/// `head ?1, ?2, … tail` with [`KEYS_PER_QUERY`] parameters: callers pad
/// short batches by repeating a key, so one cached statement serves all.
pub(super) fn in_list(head: &str, tail: &str) -> String {
    let mut sql = String::from(head);
    for i in 1..=KEYS_PER_QUERY {
        if i > 1 {
            sql.push_str(", ");
        }
        sql.push('?');
        sql.push_str(&i.to_string());
    }
    sql.push_str(tail);
    sql
}

fn save_company(tx: &Connection, c: &Company) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO companies (id, name, attributes) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, attributes = excluded.attributes",
    )?
    .execute(params![c.id, c.name, encode(&c.attributes)?])?;
    let rowid: i64 = tx
        .prepare_cached("SELECT rowid FROM companies WHERE id = ?1")?
        .query_row([&c.id], |r| r.get(0))?;
    for signal in &c.signals {
        let key = Incoming::Company {
            company: c.id.clone(),
            signal: signal.clone(),
        }
        .dedup_key();
        tx.prepare_cached(
            "INSERT INTO company_signals (company, dedup, kind, at, props)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(dedup) DO NOTHING",
        )?
        .execute(params![
            rowid,
            &key[..],
            signal.kind,
            to_micros(signal.at),
            encode(&signal.props)?
        ])?;
    }
    Ok(())
}

/// Two events without a producer's id that the store counts as one: same
/// type, channel (none and empty alike) and props (their instants and
/// contacts compared by the caller).
fn same_content(a: &Event, b: &Event) -> bool {
    a.id.is_none()
        && b.id.is_none()
        && a.kind == b.kind
        && a.channel.as_deref().unwrap_or("") == b.channel.as_deref().unwrap_or("")
        && a.props == b.props
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sqlite::SqliteStore;
    use crate::domain::ingest::{Format, Kind, parse_event, read_lines};
    use crate::ports::store::Records;
    use serde_json::json;

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&dir.path().join("t.db"), Duration::from_secs(5), 64).expect("open")
    }

    fn patches(csv: &str, kind: Kind) -> Vec<Patch> {
        read_lines(csv.as_bytes(), Format::Csv, kind)
            .expect("header")
            .map(|l| l.item.expect("valid"))
            .collect()
    }

    /// After an idle moment's checkpoint the writer starts the log again
    /// from its beginning: the next writes overwrite it in place instead
    /// of growing it.
    #[test]
    fn a_checkpoint_lets_the_log_start_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open(&dir);
        let log = dir.path().join("t.db-wal");
        let size = || std::fs::metadata(&log).expect("log").len();
        let write = |from: usize| {
            let csv: String = (from..from + 200).fold("id,email\n".into(), |mut s, i| {
                s.push_str(&format!("c{i},c{i}@example.org\n"));
                s
            });
            store
                .upsert_contacts(&patches(&csv, Kind::Contact))
                .expect("ok");
        };
        write(0);
        let before = size();
        // Without a checkpoint each write appends to the log.
        write(200);
        let grown = size();
        assert!(grown > before, "{grown} after {before}");
        // Below the limit given, nothing is done.
        store.checkpoint_past(grown).expect("upkeep");
        write(400);
        assert!(size() > grown);
        let full = size();
        store.checkpoint_past(0).expect("upkeep");
        write(600);
        assert_eq!(size(), full, "the log was overwritten from its start");
        for i in [0, 250, 450, 799] {
            assert!(store.contact(&format!("c{i}")).expect("read").is_some());
        }
    }

    #[test]
    fn upserts_report_inserted_updated_unchanged() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open(&dir);
        let batch = patches(
            "id,email,headcount\nc1,a@b.fr,10\nc2,c@d.fr,20\n",
            Kind::Contact,
        );
        assert_eq!(
            store.upsert_contacts(&batch).expect("ok"),
            vec![Upsert::Inserted, Upsert::Inserted]
        );
        assert_eq!(
            store.upsert_contacts(&batch).expect("ok"),
            vec![Upsert::Unchanged, Upsert::Unchanged]
        );
        let change = patches("id,headcount\nc1,11\n", Kind::Contact);
        assert_eq!(
            store.upsert_contacts(&change).expect("ok"),
            vec![Upsert::Updated]
        );
        let c1 = store.contact("c1").expect("ok").expect("exists");
        assert_eq!(
            c1.email.as_deref(),
            Some("a@b.fr"),
            "a narrower file keeps other fields"
        );
        assert_eq!(c1.attributes["headcount"], json!(11));
        drop(store);
        let store = open(&dir);
        assert_eq!(
            store.counts().expect("ok").contacts,
            2,
            "data survives reopening"
        );
        assert_eq!(store.schema_version().expect("ok"), MIGRATIONS.len() as i64);
    }

    #[test]
    fn events_are_idempotent_and_need_a_known_contact() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open(&dir);
        store
            .upsert_contacts(&patches("id\nc1\n", Kind::Contact))
            .expect("ok");
        let ev = |v| parse_event(v).expect("valid");
        let batch = vec![
            ev(json!({"contact": "c1", "type": "call", "at": "2026-01-05T10:00:00Z"})),
            ev(
                json!({"id": "x", "contact": "c1", "type": "email_open", "at": "2026-01-04T10:00:00Z"}),
            ),
            ev(json!({"contact": "ghost", "type": "call", "at": "2026-01-05T10:00:00Z"})),
        ];
        let first = store.append_events(&batch).expect("ok");
        assert_eq!(first[..2], [Append::Inserted, Append::Inserted]);
        assert!(matches!(&first[2], Append::Rejected(r) if r.contains("ghost")));
        let again = store.append_events(&batch[..2]).expect("ok");
        assert_eq!(again, vec![Append::Duplicate, Append::Duplicate]);
        let events = store.events_of("c1").expect("ok");
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["email_open", "call"]
        );
        assert_eq!(events[0].id.as_deref(), Some("x"));
    }

    #[test]
    fn the_history_scan_pairs_each_contact_with_its_events_and_new_events_are_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open(&dir);
        store
            .upsert_contacts(&patches("id\nb\na\nc\n", Kind::Contact))
            .expect("ok");
        let ev = |c: &str, at: &str| {
            parse_event(json!({"contact": c, "type": "email_open", "at": at})).expect("valid")
        };
        store
            .append_events(&[
                ev("c", "2026-01-02T00:00:00Z"),
                ev("b", "2026-01-03T00:00:00Z"),
                ev("b", "2026-01-01T00:00:00Z"),
            ])
            .expect("ok");
        let mark = store.last_event_seq().expect("ok");
        assert_eq!(mark, 3);
        // Erasing the contact with the newest event must not let a later
        // event reuse its number: passes look for numbers above their mark.
        store
            .upsert_contacts(&patches("id\nd\n", Kind::Contact))
            .expect("ok");
        store
            .append_events(&[ev("d", "2026-01-05T00:00:00Z")])
            .expect("ok");
        let mark = store.last_event_seq().expect("ok");
        assert!(store.erase_contact("d").expect("ok"));
        let mut seen = Vec::new();
        store
            .scan_histories(&mut |c, events| {
                assert!(events.iter().all(|e| e.contact == c.id));
                assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
                seen.push((c.id, events.len()));
            })
            .expect("scan");
        assert_eq!(
            seen,
            [
                ("b".to_string(), 2),
                ("a".to_string(), 0),
                ("c".to_string(), 1)
            ]
        );
        store
            .append_events(&[ev("a", "2026-01-04T00:00:00Z")])
            .expect("ok");
        assert_eq!(store.contacts_with_events_after(mark).expect("ok"), ["a"]);
    }

    #[test]
    fn company_signals_from_imports_and_events_are_kept_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open(&dir);
        let jsonl = "{\"id\": \"acme\", \"name\": \"Acme\", \"signals\": [{\"kind\": \"new_sites\", \"at\": \"2026-01-02T00:00:00Z\"}]}\n";
        let batch: Vec<Patch> = read_lines(jsonl.as_bytes(), Format::Jsonl, Kind::Company)
            .expect("jsonl")
            .map(|l| l.item.expect("valid"))
            .collect();
        assert_eq!(
            store.upsert_companies(&batch).expect("ok"),
            vec![Upsert::Inserted]
        );
        assert_eq!(
            store.upsert_companies(&batch).expect("ok"),
            vec![Upsert::Unchanged]
        );
        let signal = parse_event(json!({"company": "acme", "type": "business_signal", "at": "2026-02-01T00:00:00Z", "props": {"kind": "international"}})).expect("valid");
        assert_eq!(
            store
                .append_events(std::slice::from_ref(&signal))
                .expect("ok"),
            vec![Append::Inserted]
        );
        assert_eq!(
            store.append_events(&[signal]).expect("ok"),
            vec![Append::Duplicate]
        );
        let acme = store.company("acme").expect("ok").expect("exists");
        let kinds: Vec<&str> = acme.signals.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["new_sites", "international"]);
    }

    #[test]
    fn erasing_a_contact_removes_everything_about_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open(&dir);
        store
            .upsert_contacts(&patches("id\nc1\nc2\n", Kind::Contact))
            .expect("ok");
        store
            .upsert_deals(&patches("id,contact,amount\nd1,c1,1000\n", Kind::Deal))
            .expect("ok");
        let e = parse_event(json!({"contact": "c1", "type": "call", "at": "2026-01-05T10:00:00Z"}))
            .expect("valid");
        let e2 =
            parse_event(json!({"contact": "c2", "type": "call", "at": "2026-01-05T10:00:00Z"}))
                .expect("valid");
        store.append_events(&[e, e2]).expect("ok");
        assert!(store.erase_contact("c1").expect("ok"));
        assert!(!store.erase_contact("c1").expect("ok"));
        assert_eq!(store.contact("c1").expect("ok"), None);
        let counts = store.counts().expect("ok");
        assert_eq!((counts.contacts, counts.events, counts.deals), (1, 1, 0));
    }

    /// Column `i` of every row of `sql`, its parameters left NULL.
    fn column(conn: &Connection, sql: &str, i: usize) -> Vec<String> {
        let mut stmt = conn.prepare(sql).expect("prepare");
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(i))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read")
    }

    /// Every write of an outbox row tests outbox_ready's predicate. Written
    /// as a list (`state IN (...)`), SQLite built two temporary B-trees of
    /// its constants for each row a claim took or a pass planned: a fifth
    /// of a claim's instructions. The queries naming the predicate still
    /// find the rows through the index, the claim's in the index's order.
    #[test]
    fn outbox_writes_build_no_temporary_tree_and_queries_use_the_ready_index() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(open(&dir));
        let conn = Connection::open(dir.path().join("t.db")).expect("open");
        for write in [super::super::claim::TAKE, super::super::plan::PLAN_ROW] {
            let ops = column(&conn, &format!("EXPLAIN {write}"), 1);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{write}: {ops:?}"
            );
        }
        for read in [
            concat!("SELECT min(due_at) FROM outbox WHERE ", ready!()),
            super::super::claim::DUE.as_str(),
        ] {
            let plan = column(&conn, &format!("EXPLAIN QUERY PLAN {read}"), 3).join("; ");
            assert!(plan.contains("outbox_ready"), "{read}: {plan}");
            // The claim's order is the index's: no sort of the rows due at
            // one instant before the limit (the batch taken, `d`, is
            // sorted again, alone).
            let taking = plan.split("SCAN d").next().unwrap_or_default();
            assert!(!taking.contains("TEMP B-TREE"), "{read}: {plan}");
        }
    }

    /// A claim or settlement of a batch writes many rows with foreign
    /// keys and triggers to honour, each statement with its undo journal:
    /// built with the default 64 KB limit, that journal went to a temporary file, nine
    /// `pwrite`s in ten of a dispatch (`.cargo/config.toml`).
    #[test]
    fn statement_journals_stay_in_memory_up_to_four_megabytes() {
        let conn = Connection::open_in_memory().expect("open");
        let options = column(&conn, "PRAGMA compile_options", 0);
        assert!(
            options.iter().any(|o| o == "STMTJRNL_SPILL=4194304"),
            "built without the setting of .cargo/config.toml: {options:?}"
        );
    }

    #[test]
    fn concurrent_writers_wait_instead_of_failing() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(open(&dir));
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let path = dir.path().join("t.db");
                std::thread::spawn(move || {
                    let store =
                        SqliteStore::open(&path, Duration::from_secs(30), 64).expect("open");
                    for i in 0..50 {
                        let csv = format!("id\nw{w}-{i}\n");
                        store
                            .upsert_contacts(&patches(&csv, Kind::Contact))
                            .expect("no SQLITE_BUSY");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer finished");
        }
        assert_eq!(open(&dir).counts().expect("ok").contacts, 200);
    }
}
