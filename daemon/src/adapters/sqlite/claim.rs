//! Claiming due outbox rows, a batch per transaction.
//!
//! The due rows come with their contacts in one query; each contact is
//! decoded and its events and reservations are read once per batch, and
//! the reservations the batch makes are added to what the guard weighs
//! for the contact's next row, so a row is still decided after the rows
//! of its contact before it, as if each were claimed alone. A claimed row
//! is updated in memory rather than read again.

use super::conn::{decode, encode, load_company, to_micros};
use super::events::EventReader;
use super::outbox::{ROW_COLUMNS, read_row, weighs};
use super::scores::stored_score_of;
use super::sums::Sums;
use crate::core::model::{Contact, Event, Timestamp};
use crate::domain::fatigue::EXEMPT_PROP;
use crate::domain::fatigue::admit::Why;
use crate::domain::outbox::{Row, State};
use crate::ports::store::{Admission, AdmissionVerdict, Claimed, StoreError};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::LazyLock;

/// Takes an allowed row: claimed, leased to its owner, counted as an attempt.
pub(super) const TAKE: &str =
    "UPDATE outbox SET state = 'claimed', lease_owner = ?2, lease_until = ?3, due_at = ?3,
       attempts = attempts + 1, updated_at = ?4 WHERE seq = ?1";

/// What the guard weighs for one contact during a batch.
struct Weighed {
    contact: Contact,
    /// Events and reservations, oldest first (as [`weighs`] reads them).
    weighs: Vec<Event>,
}

/// Claims up to `limit` due rows (see `OutboxStore::claim_due`); with
/// `inputs`, each claimed row also carries its contact's company and
/// stored score.
pub(super) fn claim(
    events: &EventReader<'_>,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
    owner: &str,
    admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    inputs: bool,
) -> Result<Vec<Claimed>, StoreError> {
    let tx = events.conn();
    let now_us = to_micros(now);
    let lease_us = to_micros(lease_until);
    let due = due_rows(tx, now_us, limit)?;
    let mut sums = Sums::default();
    // Prepared once per batch: a look-up in the statement cache hashes
    // the whole text, three times a row.
    let mut log = tx.prepare_cached(
        "INSERT INTO decision_log (contact, at, followup, channel, decision, until, reasons)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut take = tx.prepare_cached(TAKE)?;
    let mut reserve_row = tx.prepare_cached(
        "INSERT INTO fatigue_ledger (outbox, contact, at, event_type, channel)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut seen: HashMap<i64, Weighed> = HashMap::new();
    let mut claimed: Vec<(Row, i64)> = Vec::with_capacity(due.len());
    for (mut row, key, record) in due {
        if row.state == State::Claimed {
            // A reservation left by a claim whose lease expired is stale.
            tx.prepare_cached("DELETE FROM fatigue_ledger WHERE outbox = ?1")?
                .execute([row.seq])?;
            if let Some(w) = seen.get_mut(&key)
                && let Some(i) = w
                    .weighs
                    .iter()
                    .rposition(|e| e.id.as_deref() == Some(&row.idem_key))
            {
                w.weighs.remove(i);
            }
        }
        let w = match seen.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let contact: Contact = decode(&record)?;
                let weighs = weighs(events, key, &contact.id)?;
                v.insert(Weighed { contact, weighs })
            }
        };
        let admission = admit(&row, &w.contact, &w.weighs);
        let until = admission.verdict.until().map(to_micros);
        let verdict = admission.verdict.verdict().as_str();
        log.execute(params![
            key,
            now_us,
            row.followup,
            row.channel,
            verdict,
            until,
            encode(&admission.reasons)?
        ])?;
        sums.decided(
            now_us,
            verdict,
            admission.reasons.first().map_or("", Why::rule),
        );
        let to = match &admission.verdict {
            AdmissionVerdict::Allow { .. } => State::Claimed,
            AdmissionVerdict::Defer { .. } => State::Deferred,
            AdmissionVerdict::Block => State::Blocked,
        };
        sums.moved(
            to_micros(row.first_due),
            &row.followup,
            row.kind.as_str(),
            &row.channel,
            row.state,
            to,
        );
        match &admission.verdict {
            AdmissionVerdict::Allow { event_type } => {
                take.execute(params![row.seq, owner, lease_us, now_us])?;
                reserve_row.execute(params![row.seq, key, now_us, event_type, row.channel])?;
                reserve(w, &row, event_type, now);
                row.state = State::Claimed;
                row.lease_until = Some(lease_until);
                row.due_at = lease_until;
                row.attempts += 1;
                row.updated_at = now;
                claimed.push((row, key));
            }
            AdmissionVerdict::Defer { until } => {
                tx.prepare_cached(
                    "UPDATE outbox SET state = 'deferred', due_at = ?2, lease_owner = NULL,
                       lease_until = NULL, updated_at = ?3 WHERE seq = ?1",
                )?
                .execute(params![row.seq, to_micros(*until), now_us])?;
            }
            AdmissionVerdict::Block => {
                tx.prepare_cached(
                    "UPDATE outbox SET state = 'blocked', lease_owner = NULL, lease_until = NULL,
                       updated_at = ?2 WHERE seq = ?1",
                )?
                .execute(params![row.seq, now_us])?;
            }
        }
    }
    sums.finish(tx)?;
    let mut read: HashMap<i64, (Option<_>, Option<_>)> = HashMap::new();
    let mut out = Vec::with_capacity(claimed.len());
    for (row, key) in claimed {
        let Some(w) = seen.get(&key) else { continue };
        let (company, score) = if inputs {
            match read.entry(key) {
                Entry::Occupied(e) => e.get().clone(),
                Entry::Vacant(v) => {
                    let company = match &w.contact.company {
                        Some(id) => load_company(tx, id)?,
                        None => None,
                    };
                    let score = stored_score_of(tx, key, &w.contact.id)?;
                    v.insert((company, score)).clone()
                }
            }
        } else {
            (None, None)
        };
        out.push(Claimed {
            row,
            contact: w.contact.clone(),
            company,
            score,
        });
    }
    Ok(out)
}

/// The rows due at `now_us` with their contact's key and record, oldest
/// due first, then highest priority, then oldest row. `outbox_ready` holds
/// that order (due, priority, seq), so a claim reads as many of its
/// entries as it takes, however many rows a broadcast made due at the same
/// instant; ordered by due instant alone, it read and sorted every row
/// due at the first instant for each batch.
pub(super) static DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        concat!(
            "SELECT {columns}, o.contact, c.record FROM
               (SELECT seq FROM outbox WHERE ",
            ready!(),
            " AND due_at <= ?1 ORDER BY due_at, priority DESC, seq LIMIT ?2) d
             JOIN outbox o ON o.seq = d.seq JOIN contacts c ON c.rowid = o.contact
             ORDER BY o.due_at, o.priority DESC, o.seq"
        ),
        columns = ROW_COLUMNS
    )
});

/// The rows due at `now_us` (see [`DUE`]).
fn due_rows(
    tx: &Connection,
    now_us: i64,
    limit: u32,
) -> Result<Vec<(Row, i64, String)>, StoreError> {
    let mut stmt = tx.prepare_cached(&DUE)?;
    let mut q = stmt.query(params![now_us, limit])?;
    let mut out = Vec::new();
    while let Some(r) = q.next()? {
        out.push((read_row(r)?, r.get(15)?, r.get(16)?));
    }
    Ok(out)
}

/// The reservation an allowed row makes, as [`weighs`] would read it back
/// from the ledger, placed after everything up to `now`.
fn reserve(w: &mut Weighed, row: &Row, event_type: &str, now: Timestamp) {
    let mut props = serde_json::Map::new();
    if row.payload.exempt {
        props.insert(EXEMPT_PROP.into(), true.into());
    }
    let at = w.weighs.partition_point(|e| e.at <= now);
    w.weighs.insert(
        at,
        Event {
            id: Some(row.idem_key.clone()),
            contact: w.contact.id.clone(),
            kind: event_type.to_owned(),
            at: now,
            channel: Some(row.channel.clone()),
            props,
        },
    );
}
