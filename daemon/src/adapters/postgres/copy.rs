//! `relance store copy`: a SQLite store moved into a PostgreSQL one, table
//! by table, in one PostgreSQL transaction. Both schemas use the same
//! table and column names and values (see `migrations.rs`), so each table
//! is copied column for column, with its internal keys: rows keep their
//! references. Rows already there are brought up to date (a second run
//! copies what changed since and duplicates nothing); identity sequences
//! and the event sequence and score change counter then continue above every copied number.

use super::PgStore;
use crate::adapters::sqlite::{EventExport, SqliteStore};
use crate::domain::ingest::Incoming;
use crate::ports::store::StoreError;
use rusqlite::types::{Value, ValueRef};
use serde::Serialize;
use std::path::Path;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

/// Tables in an order that satisfies every foreign key.
const TABLES: &[&str] = &[
    "companies",
    "company_signals",
    "contacts",
    "deals",
    "events",
    "scores",
    "score_snapshots",
    "score_changes",
    "rescore_queue",
    "meta",
    "outbox",
    "fatigue_ledger",
    "decision_log",
    "schedule_state",
    "job_runs",
    "plan_wake",
    "broadcasts",
    "plan_memo",
    "contact_desk",
    "desk_events",
    // After the outbox, whose delivered rows count their sends: the
    // copied rows bring the reactions SQLite folded.
    "campaign_contacts",
];

/// Rows sent per statement.
const BATCH: usize = 5_000;

/// One table's rows in the SQLite store and, after the copy, in PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Copied {
    pub table: String,
    pub sqlite: u64,
    pub postgres: u64,
}

/// A column's values of one batch, typed as PostgreSQL stores them.
enum Column {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(pg_type: &str) -> Result<Self, StoreError> {
        Ok(match pg_type {
            "bigint" => Column::Int(Vec::new()),
            "text" => Column::Text(Vec::new()),
            "bytea" => Column::Bytes(Vec::new()),
            other => {
                return Err(StoreError::Backend(format!(
                    "store copy: column type {other} not handled"
                )));
            }
        })
    }

    fn cast(&self) -> &'static str {
        match self {
            Column::Int(_) => "bigint[]",
            Column::Text(_) => "text[]",
            Column::Bytes(_) => "bytea[]",
        }
    }

    /// Takes a SQLite value, converted to this column's type (SQLite keeps
    /// what it was given: a number in a text column stays a number).
    fn push(&mut self, v: ValueRef<'_>, at: &str) -> Result<(), StoreError> {
        let bad = || StoreError::Corrupt(format!("store copy: {at}: unexpected value {v:?}"));
        match self {
            Column::Int(out) => out.push(match v {
                ValueRef::Null => None,
                ValueRef::Integer(i) => Some(i),
                ValueRef::Text(t) => Some(
                    std::str::from_utf8(t)
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            }),
            Column::Text(out) => out.push(match v {
                ValueRef::Null => None,
                ValueRef::Integer(i) => Some(i.to_string()),
                ValueRef::Real(r) => Some(r.to_string()),
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    Some(String::from_utf8(t.to_vec()).map_err(|_| bad())?)
                }
            }),
            Column::Bytes(out) => out.push(match v {
                ValueRef::Null => None,
                ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
                _ => return Err(bad()),
            }),
        }
        Ok(())
    }

    fn clear(&mut self) {
        match self {
            Column::Int(v) => v.clear(),
            Column::Text(v) => v.clear(),
            Column::Bytes(v) => v.clear(),
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Int(v) => v,
            Column::Text(v) => v,
            Column::Bytes(v) => v,
        }
    }
}

/// Columns (name, type) and primary-key columns of a PostgreSQL table.
async fn shape(
    tx: &Transaction<'_>,
    table: &str,
) -> Result<(Vec<(String, String)>, Vec<String>), StoreError> {
    let columns = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let key = tx
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((columns, key))
}

/// Sends one batch: inserted, or updated where the primary key exists.
async fn flush(tx: &Transaction<'_>, sql: &str, columns: &mut [Column]) -> Result<(), StoreError> {
    let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Column::param).collect();
    tx.execute(sql, &params).await?;
    columns.iter_mut().for_each(Column::clear);
    Ok(())
}

async fn copy_table(
    tx: &Transaction<'_>,
    sqlite: &rusqlite::Connection,
    table: &str,
) -> Result<Copied, StoreError> {
    let (shape, key) = shape(tx, table).await?;
    let names: Vec<&str> = shape.iter().map(|(n, _)| n.as_str()).collect();
    let mut columns: Vec<Column> = shape
        .iter()
        .map(|(_, t)| Column::new(t))
        .collect::<Result<_, _>>()?;
    let unnest: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.cast()))
        .collect();
    let update: Vec<String> = names
        .iter()
        .filter(|n| !key.iter().any(|k| k == *n))
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let on_conflict = if update.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", update.join(", "))
    };
    let sql = format!(
        "INSERT INTO {table} ({cols}) SELECT * FROM unnest({unnest})
         ON CONFLICT ({key}) {on_conflict}",
        cols = names.join(", "),
        unnest = unnest.join(", "),
        key = key.join(", "),
    );
    // Events are read back through the SQLite store: its compact rows name
    // their type, channel and props by id.
    let events = (table == "events").then(EventExport::default);
    let mut stmt = sqlite.prepare(&match events {
        Some(_) => EventExport::SQL.to_string(),
        None => format!("SELECT {} FROM {table}", names.join(", ")),
    })?;
    let mut rows = stmt.query([])?;
    let (mut pending, mut total) = (0, 0u64);
    while let Some(r) = rows.next()? {
        let row: Vec<Value> = match &events {
            Some(x) => event_values(x.read(sqlite, r)?, &names)?,
            None => (0..names.len())
                .map(|i| r.get_ref(i).map(Value::from))
                .collect::<Result<_, _>>()?,
        };
        for (i, c) in columns.iter_mut().enumerate() {
            c.push(ValueRef::from(&row[i]), &format!("{table}.{}", names[i]))?;
        }
        pending += 1;
        total += 1;
        if pending == BATCH {
            flush(tx, &sql, &mut columns).await?;
            pending = 0;
        }
    }
    if pending > 0 {
        flush(tx, &sql, &mut columns).await?;
    }
    let postgres: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    Ok(Copied {
        table: table.to_string(),
        sqlite: total,
        postgres: postgres as u64,
    })
}

/// An event's values for PostgreSQL's columns `names`, its
/// de-duplication key computed again (the SQLite store keeps none).
fn event_values(
    (contact, seq, event): (i64, i64, crate::core::model::Event),
    names: &[&str],
) -> Result<Vec<Value>, StoreError> {
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    names
        .iter()
        .map(|n| {
            Ok(match *n {
                "contact" => Value::Integer(contact),
                "at" => Value::Integer(event.at.timestamp_micros()),
                "seq" => Value::Integer(seq),
                "dedup" => Value::Blob(Incoming::Contact(event.clone()).dedup_key().to_vec()),
                "event_id" => text(&event.id),
                "type" => Value::Text(event.kind.clone()),
                "channel" => text(&event.channel),
                "props" => Value::Text(
                    serde_json::to_string(&event.props)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ),
                other => {
                    return Err(StoreError::Backend(format!(
                        "store copy: events.{other} not known to the SQLite store"
                    )));
                }
            })
        })
        .collect()
}

/// Numbers handed out after the copy continue above the copied ones.
async fn renumber(tx: &Transaction<'_>, last_event: i64) -> Result<(), StoreError> {
    let identities = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .await?;
    for r in &identities {
        let (table, column): (String, String) = (r.get(0), r.get(1));
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               greatest((SELECT max({column}) FROM {table}), 1))"
            ),
            &[],
        )
        .await?;
    }
    tx.execute(
        "SELECT setval('events_seq', v) FROM (SELECT greatest($1,
           (SELECT coalesce(max(seq), 0) FROM events),
           (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq)) AS v) x
         WHERE v > 0",
        &[&last_event],
    )
    .await?;
    tx.execute(
        "UPDATE counters SET value = greatest(value, (SELECT coalesce(max(seq), 0) FROM score_changes))
         WHERE name = 'changes'",
        &[],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Copies the SQLite store at `from` (migrated first, then read in one
    /// snapshot, so a daemon may keep running on it) into this store, in
    /// one transaction; per table, its rows in SQLite and in PostgreSQL
    /// after. Fails, writing nothing, if PostgreSQL ends with fewer rows.
    /// The copied tables are analyzed once the copy is committed.
    pub fn copy_from_sqlite(&self, from: &Path) -> Result<Vec<Copied>, StoreError> {
        if !from.exists() {
            return Err(StoreError::Open {
                path: from.display().to_string(),
                reason: "no such file".into(),
            });
        }
        drop(SqliteStore::open(
            from,
            std::time::Duration::from_secs(30),
            16,
        )?);
        let mut sqlite =
            rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| StoreError::Open {
                    path: from.display().to_string(),
                    reason: e.to_string(),
                })?;
        sqlite.busy_timeout(std::time::Duration::from_secs(30))?;
        let snapshot = sqlite.transaction()?;
        let last_event: i64 = snapshot
            .query_row(
                "SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'events.last_seq'",
                [],
                |r| r.get(0),
            )?;
        let copied = self.tx(async |tx| {
            // An appender: the copied events' numbers are below the
            // sequence, so no pass may read past them until this commits.
            tx.execute(
                "SELECT pg_advisory_xact_lock_shared($1)",
                &[&super::records::APPENDERS],
            )
            .await?;
            let mut out = Vec::with_capacity(TABLES.len());
            for table in TABLES {
                out.push(copy_table(tx, &snapshot, table).await?);
            }
            renumber(tx, last_event).await?;
            if let Some(short) = out.iter().find(|c| c.postgres < c.sqlite) {
                return Err(StoreError::Backend(format!(
                    "store copy: {} has {} rows in SQLite but {} in PostgreSQL",
                    short.table, short.sqlite, short.postgres
                )));
            }
            Ok(out)
        })?;
        // Statistics for the copied rows, so that the first passes on the
        // new store are not planned as over empty tables, and visibility
        // maps, so that a pass listing every contact reads the key index
        // alone (0.06 s at a million contacts, against 0.3 s through the
        // table): what autovacuum would leave, but it may be off or not
        // come round for minutes.
        self.read(async |c| {
            for table in TABLES {
                c.batch_execute(&format!("VACUUM (ANALYZE) {table}"))
                    .await?;
            }
            Ok(())
        })?;
        Ok(copied)
    }
}
