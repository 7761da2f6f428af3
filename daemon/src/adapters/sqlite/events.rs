//! How the SQLite store keeps events (migration 11): about a quarter of the
//! room they took as text.
//!
//! - An event's type and channel are small integers of `event_names`.
//! - Its props are NULL when empty, the id of an `event_props` entry when
//!   short and seen before (the first [`PROPS_INTERNED`] distinct short
//!   props are interned), compact JSON otherwise.
//! - Nothing is stored to de-duplicate an event without a producer's id:
//!   its identity (contact, instant, type, channel, props) is found in the
//!   primary key's range of that contact and instant. An event with an id is
//!   a duplicate of any event with that id, whatever its contact: the first
//!   8 bytes of the id's hash go to `event_ids` with the contact, and the
//!   contact's rows are searched for the id itself, so that a collision of
//!   hashes never hides an event.
//! - The change feed is `event_feed`: each contact's newest event number,
//!   one row per contact (indexed by number) instead of an index entry per
//!   event.
//!
//! Readers resolve names and interned props through a [`Dictionary`] shared
//! by the handle's connections. Entries never change once written, so a
//! cached one is always right; only what a read connection sees outside a
//! write transaction is cached (a rolled-back entry's id could be reused).
//! Rows written by hand with a text type or text props read as written.

use super::conn::{decode_props, encode, from_micros, to_micros};
use crate::core::model::Event;
use crate::domain::ingest::id_key;
use crate::ports::store::{Props, StoreError};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// The columns [`EventReader::event`] reads, in order, from `events`.
pub(super) const EVENT_COLUMNS: &str = "contact, event_id, type, at, channel, props";

/// Distinct props interned at most; later new ones are stored inline.
const PROPS_INTERNED: i64 = 65_536;
/// Longest props (compact JSON, bytes) that are interned.
const PROPS_INTERN_LEN: usize = 256;

/// An interned props object, as stored and as read.
#[derive(Debug)]
pub(super) struct Interned {
    pub(super) text: String,
    pub(super) props: Props,
}

/// The entries of `event_names` and `event_props` read so far.
#[derive(Debug, Default)]
pub(super) struct Dictionary {
    names: RwLock<HashMap<i64, Arc<str>>>,
    props: RwLock<HashMap<i64, Arc<Interned>>>,
}

/// Stored props, resolved without copying the map.
pub(super) enum StoredProps<'r> {
    Empty,
    Interned(Arc<Interned>),
    /// An interned entry a reader keeps (see sqlite::plan).
    Shared(&'r Interned),
    Inline(&'r str),
}

impl StoredProps<'_> {
    /// The compact JSON they were written as.
    pub(super) fn text(&self) -> &str {
        match self {
            StoredProps::Empty => "{}",
            StoredProps::Interned(i) => &i.text,
            StoredProps::Shared(i) => &i.text,
            StoredProps::Inline(t) => t,
        }
    }

    pub(super) fn to_map(&self) -> Result<Props, StoreError> {
        match self {
            StoredProps::Empty => Ok(Props::new()),
            StoredProps::Interned(i) => Ok(i.props.clone()),
            StoredProps::Shared(i) => Ok(i.props.clone()),
            StoredProps::Inline(t) => decode_props(t),
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Event rows read on one connection.
#[derive(Clone)]
pub(super) struct EventReader<'a> {
    conn: &'a Connection,
    dict: &'a Dictionary,
    /// False inside a write transaction: what it sees may be rolled back.
    cache: bool,
    /// The names this reader resolved, by id: its own copies, so that
    /// workers reading side by side take no shared lock and touch no
    /// shared reference count per event.
    seen: RefCell<Vec<Option<Box<str>>>>,
    /// The same for interned props, up to [`SEEN_PROPS`] of them.
    seen_props: RefCell<HashMap<i64, Props>>,
}

/// Interned props a reader keeps its own copy of (then it starts over).
const SEEN_PROPS: usize = 4096;

/// Name ids below this are kept in a reader's own table (ids are dense
/// from 1; a store has tens of event types and channels).
const SEEN_NAMES: usize = 1024;

impl<'a> EventReader<'a> {
    pub(super) fn new(conn: &'a Connection, dict: &'a Dictionary, cache: bool) -> Self {
        Self {
            conn,
            dict,
            cache,
            seen: RefCell::new(Vec::new()),
            seen_props: RefCell::new(HashMap::new()),
        }
    }

    /// The connection it reads on, for the reads around the events.
    pub(super) fn conn(&self) -> &'a Connection {
        self.conn
    }

    /// An event's type or channel.
    pub(super) fn name(&self, v: ValueRef<'_>) -> Result<Arc<str>, StoreError> {
        let id = match v {
            ValueRef::Integer(id) => id,
            ValueRef::Text(t) => return Ok(Arc::from(std::str::from_utf8(t).map_err(corrupt)?)),
            other => return Err(corrupt(format!("event name stored as {other:?}"))),
        };
        if let Some(n) = read(&self.dict.names).get(&id) {
            return Ok(n.clone());
        }
        let name: Arc<str> = self
            .conn
            .prepare_cached("SELECT name FROM event_names WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, String>(0))
            .optional()?
            .ok_or_else(|| corrupt(format!("event name {id} not in event_names")))?
            .into();
        if self.cache {
            write(&self.dict.names).insert(id, name.clone());
        }
        Ok(name)
    }

    /// An event's type or channel as text, from the reader's own table once
    /// resolved.
    fn name_text(&self, v: ValueRef<'_>) -> Result<String, StoreError> {
        let mut out = String::new();
        self.name_into(v, &mut out)?;
        Ok(out)
    }

    /// Writes an event's type or channel into `out`, reusing its buffer.
    fn name_into(&self, v: ValueRef<'_>, out: &mut String) -> Result<(), StoreError> {
        out.clear();
        let slot = match v {
            ValueRef::Integer(id) => usize::try_from(id).ok().filter(|&i| i < SEEN_NAMES),
            _ => None,
        };
        let Some(slot) = slot else {
            out.push_str(&self.name(v)?);
            return Ok(());
        };
        if let Some(Some(n)) = self.seen.borrow().get(slot) {
            out.push_str(n);
            return Ok(());
        }
        let name = self.name(v)?;
        let mut seen = self.seen.borrow_mut();
        if seen.len() <= slot {
            seen.resize(slot + 1, None);
        }
        seen[slot] = Some(Box::from(&*name));
        out.push_str(&name);
        Ok(())
    }

    pub(super) fn props<'r>(&self, v: ValueRef<'r>) -> Result<StoredProps<'r>, StoreError> {
        let id = match v {
            ValueRef::Null => return Ok(StoredProps::Empty),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                return Ok(StoredProps::Inline(
                    std::str::from_utf8(t).map_err(corrupt)?,
                ));
            }
            ValueRef::Integer(id) => id,
            ValueRef::Real(_) => return Err(corrupt("event props stored as a number")),
        };
        if let Some(i) = read(&self.dict.props).get(&id) {
            return Ok(StoredProps::Interned(i.clone()));
        }
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT props FROM event_props WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(text) = text else {
            // Like unreadable props: the event counts, its props as none.
            tracing::warn!(id, "event props not in event_props, read as none");
            return Ok(StoredProps::Empty);
        };
        let interned = Arc::new(Interned {
            props: decode_props(&text)?,
            text,
        });
        if self.cache {
            write(&self.dict.props).insert(id, interned.clone());
        }
        Ok(StoredProps::Interned(interned))
    }

    /// The owner's key and the event of a row starting with
    /// [`EVENT_COLUMNS`] (its `contact` left for the caller to fill in).
    pub(super) fn event(&self, r: &rusqlite::Row<'_>) -> Result<(i64, Event), StoreError> {
        let mut event = blank_event();
        let owner = self.event_into(r, &mut event)?;
        Ok((owner, event))
    }

    /// Like [`Self::event`], into an event read earlier: its texts keep
    /// their buffers, so that a scan over millions of events does not
    /// allocate a type name per event. `contact` is left as it was.
    pub(super) fn event_into(
        &self,
        r: &rusqlite::Row<'_>,
        e: &mut Event,
    ) -> Result<i64, StoreError> {
        e.id = r.get(1)?;
        self.name_into(r.get_ref(2)?, &mut e.kind)?;
        e.at = from_micros(r.get(3)?)?;
        match (r.get_ref(4)?, &mut e.channel) {
            (ValueRef::Null, channel) => *channel = None,
            (v, Some(channel)) => self.name_into(v, channel)?,
            (v, channel) => *channel = Some(self.name_text(v)?),
        }
        match r.get_ref(5)? {
            ValueRef::Null => e.props.clear(),
            ValueRef::Integer(id) => {
                if let Some(props) = self.seen_props.borrow().get(&id) {
                    e.props.clone_from(props);
                    return Ok(r.get(0)?);
                }
                e.props = self.props(ValueRef::Integer(id))?.to_map()?;
                let mut seen = self.seen_props.borrow_mut();
                if seen.len() >= SEEN_PROPS {
                    seen.clear();
                }
                seen.insert(id, e.props.clone());
            }
            v => e.props = self.props(v)?.to_map()?,
        }
        Ok(r.get(0)?)
    }
}

/// An event with nothing in it, for a reader to fill.
pub(super) fn blank_event() -> Event {
    Event {
        id: None,
        contact: String::new(),
        kind: String::new(),
        at: crate::core::model::Timestamp::UNIX_EPOCH,
        channel: None,
        props: Props::new(),
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Events written in one transaction: names and props interned (looked up
/// in SQL once per transaction: nothing uncommitted reaches the
/// [`Dictionary`]), duplicates left out.
pub(super) struct EventWriter<'t> {
    tx: &'t Connection,
    names: HashMap<String, i64>,
    props: HashMap<String, Option<i64>>,
    /// Whether new props may still be interned, once asked.
    room: Option<bool>,
}

impl<'t> EventWriter<'t> {
    pub(super) fn new(tx: &'t Connection) -> Self {
        Self {
            tx,
            names: HashMap::new(),
            props: HashMap::new(),
            room: None,
        }
    }

    fn name(&mut self, name: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.names.get(name) {
            return Ok(id);
        }
        let found: Option<i64> = self
            .tx
            .prepare_cached("SELECT id FROM event_names WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => self
                .tx
                .prepare_cached("INSERT INTO event_names (name) VALUES (?1) RETURNING id")?
                .query_row([name], |r| r.get(0))?,
        };
        self.names.insert(name.to_owned(), id);
        Ok(id)
    }

    /// The props' stored value and their compact JSON.
    fn props(&mut self, props: &Props) -> Result<(Value, String), StoreError> {
        if props.is_empty() {
            return Ok((Value::Null, "{}".into()));
        }
        let text = encode(props)?;
        if text.len() > PROPS_INTERN_LEN {
            return Ok((Value::Text(text.clone()), text));
        }
        let id = match self.props.get(&text) {
            Some(&id) => id,
            None => {
                let id = self.intern(&text)?;
                self.props.insert(text.clone(), id);
                id
            }
        };
        Ok((
            id.map_or_else(|| Value::Text(text.clone()), Value::Integer),
            text,
        ))
    }

    fn intern(&mut self, text: &str) -> Result<Option<i64>, StoreError> {
        let found: Option<i64> = self
            .tx
            .prepare_cached("SELECT id FROM event_props WHERE props = ?1")?
            .query_row([text], |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
        let room = match self.room {
            Some(room) => room,
            None => {
                let last: i64 = self
                    .tx
                    .prepare_cached("SELECT coalesce(max(id), 0) FROM event_props")?
                    .query_row([], |r| r.get(0))?;
                *self.room.insert(last < PROPS_INTERNED)
            }
        };
        if !room {
            return Ok(None);
        }
        let id: i64 = self
            .tx
            .prepare_cached("INSERT INTO event_props (props) VALUES (?1) RETURNING id")?
            .query_row([text], |r| r.get(0))?;
        if id >= PROPS_INTERNED {
            self.room = Some(false);
        }
        Ok(Some(id))
    }

    /// Stores `e` for the contact `rowid` under number `seq`, unless an
    /// event with its identity is stored already; true when stored.
    pub(super) fn insert(&mut self, rowid: i64, e: &Event, seq: i64) -> Result<bool, StoreError> {
        let stored = self.insert_row(rowid, e, seq, true)?;
        if stored {
            self.feed(rowid, seq)?;
        }
        Ok(stored)
    }

    /// Whether the contact `rowid` has an event without a producer's id
    /// between `from` and `to` (microseconds, inclusive): when it has none,
    /// no event of a batch in that span can repeat a stored one by content.
    pub(super) fn has_content_events(
        &self,
        rowid: i64,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT 1 FROM events WHERE contact = ?1 AND at >= ?2 AND at <= ?3
                 AND event_id IS NULL LIMIT 1",
            )?
            .exists(params![rowid, from, to])?)
    }

    /// Moves the contact's change-feed entry to `seq` (its newest event).
    pub(super) fn feed(&mut self, rowid: i64, seq: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO event_feed (contact, seq) VALUES (?1, ?2)
                 ON CONFLICT(contact) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![rowid, seq])?;
        Ok(())
    }

    /// [`EventWriter::insert`] without the change feed (the caller moves
    /// it once per contact) and, unless `check_content`, without looking
    /// for a stored event of the same content (the caller knows there is
    /// none: [`EventWriter::has_content_events`]).
    pub(super) fn insert_row(
        &mut self,
        rowid: i64,
        e: &Event,
        seq: i64,
        check_content: bool,
    ) -> Result<bool, StoreError> {
        let at = to_micros(e.at);
        let kind = self.name(&e.kind)?;
        let channel = e.channel.as_deref().map(|c| self.name(c)).transpose()?;
        let (props, text) = self.props(&e.props)?;
        let key = match &e.id {
            Some(id) => {
                let key = id_key(id);
                if self.id_stored(&key[..8], id)? {
                    return Ok(false);
                }
                Some(key)
            }
            None => {
                if check_content && self.content_stored(rowid, at, kind, channel, &props, &text)? {
                    return Ok(false);
                }
                None
            }
        };
        self.tx
            .prepare_cached(
                "INSERT INTO events (contact, at, seq, type, channel, event_id, props)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![rowid, at, seq, kind, channel, e.id, props])?;
        if let Some(key) = key {
            self.tx
                .prepare_cached("INSERT OR IGNORE INTO event_ids (key, contact) VALUES (?1, ?2)")?
                .execute(params![&key[..8], rowid])?;
        }
        Ok(true)
    }

    /// Whether an event with this producer's id is stored, for any contact.
    fn id_stored(&self, key: &[u8], id: &str) -> Result<bool, StoreError> {
        let mut owners = self
            .tx
            .prepare_cached("SELECT contact FROM event_ids WHERE key = ?1")?;
        let owners: Vec<i64> = owners
            .query_map([key], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut has = self
            .tx
            .prepare_cached("SELECT 1 FROM events WHERE contact = ?1 AND event_id = ?2 LIMIT 1")?;
        for owner in owners {
            if has.exists(params![owner, id])? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether an event without id with this content is stored.
    fn content_stored(
        &self,
        rowid: i64,
        at: i64,
        kind: i64,
        channel: Option<i64>,
        props: &Value,
        text: &str,
    ) -> Result<bool, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT type, channel, props FROM events
             WHERE contact = ?1 AND at = ?2 AND event_id IS NULL",
        )?;
        let mut rows = stmt.query(params![rowid, at])?;
        while let Some(r) = rows.next()? {
            if self.same_name(r.get_ref(0)?, Some(kind))?
                && self.same_name(r.get_ref(1)?, channel)?
                && self.same_props(r.get_ref(2)?, props, text)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn same_name(&self, stored: ValueRef<'_>, id: Option<i64>) -> Result<bool, StoreError> {
        Ok(match (stored, id) {
            (ValueRef::Null, None) => true,
            (ValueRef::Integer(s), Some(id)) => s == id,
            (ValueRef::Text(t), Some(id)) => {
                let name: Option<String> = self
                    .tx
                    .prepare_cached("SELECT name FROM event_names WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                name.is_some_and(|n| n.as_bytes() == t)
            }
            _ => false,
        })
    }

    fn same_props(
        &self,
        stored: ValueRef<'_>,
        mine: &Value,
        text: &str,
    ) -> Result<bool, StoreError> {
        Ok(match (stored, mine) {
            (ValueRef::Null, _) => text == "{}",
            (ValueRef::Integer(s), Value::Integer(m)) if s == *m => true,
            (ValueRef::Integer(s), _) => {
                let stored: Option<String> = self
                    .tx
                    .prepare_cached("SELECT props FROM event_props WHERE id = ?1")?
                    .query_row([s], |r| r.get(0))
                    .optional()?;
                stored.as_deref() == Some(text)
            }
            (ValueRef::Text(t), _) => t == text.as_bytes(),
            _ => false,
        })
    }
}

/// The props and instant of the event whose producer's id hashes to
/// `dedup` (the whole 16-byte key is compared), if any.
pub(super) fn event_by_id_key(
    reader: &EventReader<'_>,
    dedup: &[u8],
) -> Result<Option<(Props, crate::core::model::Timestamp)>, StoreError> {
    let Some(prefix) = dedup.get(..8) else {
        return Ok(None);
    };
    let conn = reader.conn;
    let owners: Vec<i64> = conn
        .prepare_cached("SELECT contact FROM event_ids WHERE key = ?1")?
        .query_map([prefix], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, props, at FROM events WHERE contact = ?1 AND event_id IS NOT NULL",
    )?;
    for owner in owners {
        let mut rows = stmt.query([owner])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            if id_key(&id)[..] == *dedup {
                let props = reader.props(r.get_ref(1)?)?.to_map()?;
                return Ok(Some((props, from_micros(r.get(2)?)?)));
            }
        }
    }
    Ok(None)
}

/// Removes the id keys of a contact's events (before the contact goes:
/// its events cascade, the keys have no foreign key to keep them cheap).
pub(super) fn forget_ids(tx: &Connection, rowid: i64) -> Result<(), StoreError> {
    let ids: Vec<String> = tx
        .prepare_cached("SELECT event_id FROM events WHERE contact = ?1 AND event_id IS NOT NULL")?
        .query_map([rowid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut delete = tx.prepare_cached("DELETE FROM event_ids WHERE key = ?1 AND contact = ?2")?;
    for id in ids {
        delete.execute(params![&id_key(&id)[..8], rowid])?;
    }
    Ok(())
}

/// Every event as it was written, with its owner's key and number and
/// the contact's id: for copying the store elsewhere.
#[derive(Debug, Default)]
pub struct EventExport {
    dict: Dictionary,
}

impl EventExport {
    /// The rows [`Self::read`] reads.
    pub const SQL: &str = "SELECT contact, event_id, type, at, channel, props, seq,
        (SELECT id FROM contacts c WHERE c.rowid = events.contact) FROM events ORDER BY contact, at, seq";

    pub fn read(
        &self,
        conn: &Connection,
        r: &rusqlite::Row<'_>,
    ) -> Result<(i64, i64, Event), StoreError> {
        let (owner, mut event) = EventReader::new(conn, &self.dict, true).event(r)?;
        event.contact = r.get::<_, Option<String>>(7)?.unwrap_or_default();
        Ok((owner, r.get(6)?, event))
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::core::model::Event;
    use crate::domain::ingest::{Incoming, id_key};
    use crate::ports::store::{Append, OutboxStore, PlanStore, Records, ScoreStore};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    /// A store written by the version before compact events (schema 8): the
    /// demo's data imported, scored, planned and partly delivered by
    /// `relance demo`, then 8 more events imported (without ids, sharing
    /// instants, with nested props, an unknown type, a channel of its own)
    /// after the rescoring pass's mark of 2,928.
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v8.db");

    /// (contact id, seq, event, dedup key) as the old schema stored them.
    type OldRow = (String, i64, Event, Vec<u8>);

    fn old_rows(path: &std::path::Path) -> Vec<OldRow> {
        let conn = rusqlite::Connection::open(path).expect("open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, 8, "the fixture is a store of schema 8");
        let mut stmt = conn
            .prepare(
                "SELECT c.id, e.seq, e.event_id, e.type, e.at, e.channel, e.props, e.dedup
                 FROM events e JOIN contacts c ON c.rowid = e.contact ORDER BY e.contact, e.at, e.seq",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| {
                let contact: String = r.get(0)?;
                let props: String = r.get(6)?;
                Ok((
                    contact.clone(),
                    r.get(1)?,
                    Event {
                        id: r.get(2)?,
                        contact,
                        kind: r.get(3)?,
                        at: chrono::DateTime::from_timestamp_micros(r.get(4)?).expect("instant"),
                        channel: r.get(5)?,
                        props: serde_json::from_str(&props).expect("props"),
                    },
                    r.get(7)?,
                ))
            })
            .expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    fn append<const N: usize>(store: &SqliteStore, events: [Event; N]) -> Vec<Append> {
        let batch: Vec<Incoming> = events.into_iter().map(Incoming::Contact).collect();
        store.append_events(&batch).expect("append")
    }

    fn migrated() -> (tempfile::TempDir, SqliteStore, Vec<OldRow>) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("store.db");
        std::fs::copy(FIXTURE, &path).expect("copy fixture");
        let old = old_rows(&path);
        let store = SqliteStore::open(&path, Duration::from_secs(30), 16).expect("migrate");
        (dir, store, old)
    }

    /// A reader keeps the names it resolved in a table of its own up to
    /// `SEEN_NAMES` ids; names past it (and channels) read back alike.
    #[test]
    fn names_beyond_a_readers_own_table_read_back_as_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let store =
            SqliteStore::open(&dir.path().join("s.db"), Duration::from_secs(5), 16).expect("store");
        let at: crate::core::model::Timestamp = "2026-03-02T12:00:00Z".parse().expect("instant");
        let contact = crate::domain::ingest::Patch {
            id: "c1".into(),
            ..Default::default()
        };
        store.upsert_contacts(&[contact]).expect("contact");
        let types = super::SEEN_NAMES + 40;
        let written: Vec<Event> = (0..types)
            .map(|i| Event {
                id: Some(format!("e{i}")),
                contact: "c1".into(),
                kind: format!("kind_{i}"),
                at: at + chrono::Duration::seconds(i as i64),
                channel: (i % 3 == 0).then(|| format!("channel_{}", i % 7)),
                props: serde_json::Map::new(),
            })
            .collect();
        let batch: Vec<Incoming> = written.iter().cloned().map(Incoming::Contact).collect();
        let stored = store.append_events(&batch).expect("append");
        let refused: Vec<_> = stored
            .iter()
            .filter(|a| !matches!(a, Append::Inserted))
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
        // Twice: the second read finds every name in the shared dictionary.
        for _ in 0..2 {
            let read = store.events_of("c1").expect("events");
            let kinds: Vec<(&str, Option<&str>)> = read
                .iter()
                .map(|e| (e.kind.as_str(), e.channel.as_deref()))
                .collect();
            let expected: Vec<(&str, Option<&str>)> = written
                .iter()
                .map(|e| (e.kind.as_str(), e.channel.as_deref()))
                .collect();
            assert_eq!(kinds, expected);
        }
    }

    #[test]
    fn every_event_reads_back_as_written_after_the_migration() {
        let (_dir, store, old) = migrated();
        assert_eq!(old.len(), 2_936);
        let mut by_contact: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for (contact, _, event, _) in &old {
            by_contact.entry(contact).or_default().push(event);
        }
        assert!(by_contact.len() > 300, "{}", by_contact.len());
        for (contact, expected) in &by_contact {
            let read = store.events_of(contact).expect("events");
            let read: Vec<&Event> = read.iter().collect();
            assert_eq!(&read, expected, "{contact}");
        }
        // Examples of what the fixture holds, as they read now.
        let rajati = store.events_of("rajati").expect("events");
        let signup = rajati
            .iter()
            .find(|e| e.kind == "webinar_signup" && e.id.is_none())
            .expect("the signup without id");
        assert_eq!(signup.at.to_rfc3339(), "2026-11-29T08:30:00.123456+00:00");
        assert_eq!(signup.props["nested"]["a"][2], "x");
        assert_eq!(signup.props["seats"], 2);
        let delivered = old
            .iter()
            .filter(|(_, _, e, _)| e.kind == "email_sent" && e.channel.as_deref() == Some("email"))
            .count();
        assert!(delivered > 90, "{delivered}");
    }

    #[test]
    fn what_was_stored_stays_a_duplicate_and_ids_stay_global() {
        let (_dir, store, old) = migrated();
        for (_, _, event, dedup) in old.iter().filter(|(_, _, e, _)| e.id.is_some()) {
            let id = event.id.as_deref().expect("id");
            assert_eq!(&id_key(id)[..], &dedup[..], "{id}");
        }
        let again: Vec<Incoming> = old
            .iter()
            .map(|(_, _, e, _)| Incoming::Contact(e.clone()))
            .collect();
        let out = store.append_events(&again).expect("append");
        assert!(out.iter().all(|a| *a == Append::Duplicate), "{out:?}");
        assert_eq!(store.last_event_seq().expect("seq"), 2_936);

        // A stored id is a duplicate for another contact at another instant.
        let (_, _, shared, _) = old
            .iter()
            .find(|(_, _, e, _)| e.id.as_deref() == Some("shared-id-1"))
            .expect("shared-id-1");
        let mut elsewhere = shared.clone();
        elsewhere.contact = "martino".into();
        elsewhere.at += chrono::Duration::days(1);
        assert_eq!(append(&store, [elsewhere]), [Append::Duplicate]);

        // Without an id, the content decides: the same is a duplicate,
        // other props or another channel at the same instant are not.
        let (_, _, visit, _) = old
            .iter()
            .find(|(c, _, e, _)| c == "martino" && e.id.is_none() && e.kind == "page_visit")
            .expect("visit without id");
        let mut other_url = visit.clone();
        other_url
            .props
            .insert("url".into(), "https://payroll.example/careers/dev".into());
        let mut other_channel = visit.clone();
        other_channel.channel = Some("web".into());
        assert_eq!(
            append(&store, [visit.clone(), other_url.clone(), other_channel]),
            [Append::Duplicate, Append::Inserted, Append::Inserted]
        );
        assert_eq!(append(&store, [other_url]), [Append::Duplicate]);

        // The task channel finds an event by its id's key.
        let (_, _, with_props, dedup) = old
            .iter()
            .find(|(_, _, e, _)| e.id.is_some() && !e.props.is_empty())
            .expect("an event with an id and props");
        let found = store.event_by_dedup(dedup).expect("lookup");
        assert_eq!(found, Some((with_props.props.clone(), with_props.at)));
        assert_eq!(store.event_by_dedup(&[7; 16]).expect("lookup"), None);

        // An erased contact's ids may come again.
        assert!(store.erase_contact("nathalie").expect("erase"));
        assert!(store.events_of("nathalie").expect("events").is_empty());
        let mut back = shared.clone();
        back.contact = "martino".into();
        assert_eq!(append(&store, [back.clone()]), [Append::Inserted]);
        assert!(store.events_of("martino").expect("events").contains(&back));
    }

    #[test]
    fn the_change_feed_carries_on_from_the_old_marks() {
        let (_dir, store, old) = migrated();
        let mark = 2_928;
        assert_eq!(store.last_event_seq().expect("seq"), 2_936);
        assert_eq!(
            store.contacts_with_events_after(mark).expect("feed"),
            ["beltrani", "martino", "nathalie", "rajati"]
        );
        assert!(
            store
                .contacts_with_events_after(2_936)
                .expect("feed")
                .is_empty()
        );
        // Rescoring takes every contact with events after the mark.
        let keyed: BTreeSet<i64> = old
            .iter()
            .filter(|(_, seq, _, _)| *seq > mark)
            .map(|(c, ..)| store.contact_key(c).expect("key").expect("known"))
            .collect();
        assert_eq!(keyed.len(), 4);
        let now = "2026-12-02T18:00:00Z".parse().expect("instant");
        let candidates = store.rescore_candidate_keys(now, mark).expect("candidates");
        assert!(
            keyed.iter().all(|k| candidates.contains(k)),
            "{candidates:?}"
        );

        // New events are numbered on from the old ones.
        let mut next = old[0].2.clone();
        next.id = Some("after-the-migration".into());
        next.contact = "beltrani".into();
        assert_eq!(append(&store, [next]), [Append::Inserted]);
        assert_eq!(store.last_event_seq().expect("seq"), 2_937);
        assert_eq!(
            store.contacts_with_events_after(2_936).expect("feed"),
            ["beltrani"]
        );
    }
}
