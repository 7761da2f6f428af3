//! The outbox and schedule tables of the SQLite store.

use super::conn::{Conn, decode, encode, from_micros, to_micros};
use super::events::{EVENT_COLUMNS, EventReader, EventWriter};
use super::sums::Sums;
use crate::core::model::{Contact, Event, FollowUpKind, Timestamp};
use crate::domain::outbox::{NewSend, Payload, Row, Settlement, State};
use crate::ports::store::{Admission, Claimed, JobRun, LoggedDecision, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

pub(super) const ROW_COLUMNS: &str = "o.seq, o.idem_key, c.id, o.followup, o.kind, o.priority, o.channel, o.state, \
     o.due_at, o.first_due, o.attempts, o.lease_until, o.payload, o.last_error, o.updated_at";

/// Column `i` of `r` as text, borrowed; anything else is corrupt.
fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    r.get_ref(i)?
        .as_str()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn read_row(r: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    let text = |i: usize| text(r, i);
    let kind = text(4)?;
    let state = text(7)?;
    Ok(Row {
        seq: r.get(0)?,
        idem_key: r.get(1)?,
        contact: r.get(2)?,
        followup: r.get(3)?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        priority: r.get(5)?,
        channel: r.get(6)?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        due_at: from_micros(r.get(8)?)?,
        first_due: from_micros(r.get(9)?)?,
        attempts: r.get(10)?,
        lease_until: r.get::<_, Option<i64>>(11)?.map(from_micros).transpose()?,
        payload: decode_payload(text(12)?),
        last_error: r.get(13)?,
        updated_at: from_micros(r.get(14)?)?,
    })
}

/// The payload of a stored row. Rows written by older versions (or by hand)
/// read as far as they go: a payload that is not an object reads as empty
/// rather than making the outbox unreadable.
pub(crate) fn decode_payload(text: &str) -> Payload {
    Payload::from_json(text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable outbox payload read as empty");
        Payload::default()
    })
}

/// The props of the event recording a send: its follow-up, and whether it
/// was exempt (then it is no solicitation: caps and budget do not count it).
pub(crate) fn send_props(
    followup: Option<String>,
    payload: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut props = serde_json::Map::new();
    if let Some(followup) = followup {
        props.insert("followup".into(), followup.into());
    }
    if decode_payload(payload).exempt {
        props.insert(crate::domain::fatigue::EXEMPT_PROP.into(), true.into());
    }
    props
}

impl Conn {
    pub(super) fn enqueue(
        &mut self,
        batch: &[NewSend],
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(batch.len());
            let mut sums = Sums::default();
            for s in batch {
                let n = tx
                    .prepare_cached(
                        "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel, state,
                                             due_at, first_due, payload, updated_at)
                         SELECT ?1, rowid, ?3, ?4, ?5, ?6, 'planned', ?7, ?7, ?8, ?9 FROM contacts WHERE id = ?2
                         ON CONFLICT(idem_key) DO NOTHING",
                    )?
                    .execute(params![
                        s.idem_key,
                        s.contact,
                        s.followup,
                        s.kind.as_str(),
                        s.priority,
                        s.channel,
                        to_micros(s.due_at),
                        encode(&s.payload)?,
                        to_micros(now)
                    ])?;
                if n == 1 {
                    let due = to_micros(s.due_at);
                    sums.count(due, &s.followup, s.kind.as_str(), &s.channel, State::Planned, 1);
                }
                out.push(n == 1);
            }
            sums.finish(tx)?;
            Ok(out)
        })
    }

    pub(super) fn claim_due(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Row>, StoreError> {
        let claimed = self.claim(now, lease_until, limit, owner, admit, false)?;
        Ok(claimed.into_iter().map(|c| c.row).collect())
    }

    pub(super) fn claim_batch(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.claim(now, lease_until, limit, owner, admit, true)
    }

    /// One claim transaction (see `claim::claim`); `inputs` adds each row's
    /// company and score.
    fn claim(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
        inputs: bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let dict = self.dict.clone();
        self.write(|tx| {
            let events = EventReader::new(tx, &dict, false);
            super::claim::claim(&events, now, lease_until, limit, owner, admit, inputs)
        })
    }

    pub(super) fn guard_input(
        &self,
        contact: &str,
    ) -> Result<Option<(Contact, Vec<Event>)>, StoreError> {
        guard_input(&self.events(), contact)
    }

    pub(super) fn decisions(
        &self,
        contact: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedDecision>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, d.at, d.followup, d.channel, d.decision, d.until, d.reasons
             FROM decision_log d JOIN contacts c ON c.rowid = d.contact
             WHERE ?1 IS NULL OR c.id = ?1 ORDER BY d.seq DESC LIMIT ?2",
        )?;
        let mut q = stmt.query(params![contact, limit])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(LoggedDecision {
                contact: r.get(0)?,
                at: from_micros(r.get(1)?)?,
                followup: r.get(2)?,
                channel: r.get(3)?,
                decision: r
                    .get::<_, String>(4)?
                    .parse()
                    .map_err(StoreError::Corrupt)?,
                until: r.get::<_, Option<i64>>(5)?.map(from_micros).transpose()?,
                reasons: decode(&r.get::<_, String>(6)?)?,
            });
        }
        Ok(out)
    }

    pub(super) fn settle(
        &mut self,
        seq: i64,
        owner: &str,
        how: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let batch = [(seq, how.clone(), now)];
        Ok(self
            .settle_many(owner, &batch)?
            .first()
            .copied()
            .unwrap_or(false))
    }

    pub(super) fn settle_many(
        &mut self,
        owner: &str,
        batch: &[(i64, Settlement, Timestamp)],
    ) -> Result<Vec<bool>, StoreError> {
        self.write(|tx| settle_batch(tx, owner, batch))
    }

    pub(super) fn outbox_rows(
        &self,
        state: Option<State>,
        limit: u32,
    ) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM outbox o JOIN contacts c ON c.rowid = o.contact
             WHERE (?1 IS NULL OR o.state = ?1) ORDER BY o.due_at, o.seq LIMIT ?2"
        ))?;
        let mut q = stmt.query(params![state.map(State::as_str), limit])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(read_row(r)?);
        }
        Ok(out)
    }

    pub(super) fn pending_of(&self, contact: &str) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM outbox o JOIN contacts c ON c.rowid = o.contact
             WHERE c.id = ?1 AND o.state IN ('planned', 'deferred', 'retrying')
             ORDER BY o.due_at, o.seq"
        ))?;
        let mut q = stmt.query(params![contact])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(read_row(r)?);
        }
        Ok(out)
    }

    pub(super) fn release_claims(
        &mut self,
        owner: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        // Naming outbox_ready's predicate, the claimed rows are found
        // through that index.
        self.write(|tx| {
            tx.prepare_cached(concat!(
                "DELETE FROM fatigue_ledger WHERE outbox IN (SELECT seq FROM outbox WHERE ",
                ready!(),
                " AND state = 'claimed' AND lease_owner = ?1)"
            ))?
            .execute([owner])?;
            let mut sums = Sums::default();
            let mut n = 0;
            {
                let mut stmt = tx.prepare_cached(concat!(
                    "UPDATE outbox SET state = 'retrying', due_at = ?2, lease_owner = NULL,
                           lease_until = NULL, last_error = 'released at shutdown', updated_at = ?2
                         WHERE ",
                    ready!(),
                    " AND state = 'claimed' AND lease_owner = ?1
                     RETURNING first_due, followup, kind, channel"
                ))?;
                let mut q = stmt.query(params![owner, to_micros(now)])?;
                while let Some(r) = q.next()? {
                    let kind: FollowUpKind = text(r, 2)?.parse().map_err(StoreError::Corrupt)?;
                    sums.moved(
                        r.get(0)?,
                        text(r, 1)?,
                        kind.as_str(),
                        text(r, 3)?,
                        State::Claimed,
                        State::Retrying,
                    );
                    n += 1;
                }
            }
            sums.finish(tx)?;
            Ok(n)
        })
    }

    pub(super) fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let at: Option<i64> = self
            .conn
            .prepare_cached(concat!("SELECT min(due_at) FROM outbox WHERE ", ready!()))?
            .query_row([], |r| r.get(0))?;
        at.map(from_micros).transpose()
    }

    /// From the counts the triggers keep (migration 6), not a scan.
    pub(super) fn outbox_depth(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT state, sum(n) FROM ui_outbox_counts GROUP BY state HAVING sum(n) > 0",
        )?;
        let mut q = stmt.query([])?;
        let mut out: BTreeMap<State, u64> = State::ALL.into_iter().map(|s| (s, 0)).collect();
        while let Some(r) = q.next()? {
            let state: String = r.get(0)?;
            out.insert(
                state.parse().map_err(StoreError::Corrupt)?,
                r.get::<_, i64>(1)? as u64,
            );
        }
        Ok(out)
    }
}

/// The state, next due instant (micros) and error a settlement writes.
pub(crate) fn settled(how: &Settlement) -> (State, Option<i64>, Option<&str>) {
    match how {
        Settlement::Sent => (State::Sent, None, None),
        Settlement::Retry { at, error } => {
            (State::Retrying, Some(to_micros(*at)), Some(error.as_str()))
        }
        Settlement::Dead { error } => (State::Dead, None, Some(error.as_str())),
    }
}

/// Settles a batch as one settlement after the other would, with one
/// statement per table rather than three to four per row: the rows in one
/// UPDATE, their reservations released in one DELETE that hands back what
/// the delivered ones reserved, which become events numbered in the
/// batch's order. A row settled twice in a batch takes its first
/// settlement (the second finds it settled).
fn settle_batch(
    tx: &Connection,
    owner: &str,
    batch: &[(i64, Settlement, Timestamp)],
) -> Result<Vec<bool>, StoreError> {
    let mut first: HashMap<i64, usize> = HashMap::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    for (i, (seq, how, at)) in batch.iter().enumerate() {
        if let Entry::Vacant(v) = first.entry(*seq) {
            v.insert(i);
            let (state, due, error) = settled(how);
            rows.push(serde_json::json!([
                seq,
                state.as_str(),
                due,
                error,
                to_micros(*at)
            ]));
        }
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // Delivered rows: what their event needs from the row.
    let mut sent: HashMap<i64, (String, String, String)> = HashMap::new();
    let mut applied: HashSet<i64> = HashSet::with_capacity(rows.len());
    let mut sums = Sums::default();
    {
        // `+state`: each row found by its key, not every claimed row read
        // through the state index and matched against the list.
        let mut stmt = tx.prepare_cached(
            "UPDATE outbox SET state = s.value ->> 1, due_at = coalesce(s.value ->> 2, due_at),
               last_error = s.value ->> 3, lease_owner = NULL, lease_until = NULL,
               updated_at = s.value ->> 4
             FROM json_each(?1) s
             WHERE outbox.seq = s.value ->> 0 AND +outbox.state = 'claimed' AND outbox.lease_owner = ?2
             RETURNING seq, state, idem_key, followup, payload, contact, first_due, kind, channel",
        )?;
        let mut q = stmt.query(params![encode(&rows)?, owner])?;
        while let Some(r) = q.next()? {
            let seq: i64 = r.get(0)?;
            applied.insert(seq);
            let text = |i: usize| text(r, i);
            let state: State = text(1)?.parse().map_err(StoreError::Corrupt)?;
            let kind: FollowUpKind = text(7)?.parse().map_err(StoreError::Corrupt)?;
            let followup: String = r.get(3)?;
            sums.moved(
                r.get(6)?,
                &followup,
                kind.as_str(),
                text(8)?,
                State::Claimed,
                state,
            );
            if state == State::Sent {
                sums.delivered(r.get(5)?, &followup);
                sent.insert(seq, (r.get(2)?, followup, r.get(4)?));
            }
        }
    }
    sums.finish(tx)?;
    if applied.is_empty() {
        return Ok(vec![false; batch.len()]);
    }
    let mut events: Vec<(usize, i64, Event)> = Vec::with_capacity(sent.len());
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM fatigue_ledger WHERE outbox IN (SELECT value FROM json_each(?1))
             RETURNING outbox, contact, event_type, channel",
        )?;
        let mut q = stmt.query([encode(&applied)?])?;
        while let Some(r) = q.next()? {
            let seq: i64 = r.get(0)?;
            let (Some((key, followup, payload)), Some(&i)) = (sent.remove(&seq), first.get(&seq))
            else {
                continue;
            };
            events.push((
                i,
                r.get(1)?,
                Event {
                    id: Some(key),
                    // The writer keys the event by the contact's rowid.
                    contact: String::new(),
                    kind: r.get(2)?,
                    at: batch[i].2,
                    channel: Some(r.get(3)?),
                    props: send_props(Some(followup), &payload),
                },
            ));
        }
    }
    if !events.is_empty() {
        events.sort_by_key(|(i, ..)| *i);
        let mut writer = EventWriter::new(tx);
        let mut next = super::conn::next_event_seq(tx)?;
        let mut last = None;
        for (_, rowid, event) in &events {
            if writer.insert(*rowid, event, next)? {
                last = Some(next);
                next += 1;
            }
        }
        if let Some(last) = last {
            super::conn::set_event_seq(tx, last)?;
        }
    }
    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, (seq, ..))| first.get(seq) == Some(&i) && applied.contains(seq))
        .collect())
}

/// The contact, its events and its in-flight reservations, oldest first.
pub(super) fn guard_input(
    events: &EventReader<'_>,
    id: &str,
) -> Result<Option<(Contact, Vec<Event>)>, StoreError> {
    let Some((rowid, record)): Option<(i64, String)> = events
        .conn()
        .prepare_cached("SELECT rowid, record FROM contacts WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let contact: Contact = decode(&record)?;
    let weighs = weighs(events, rowid, &contact.id)?;
    Ok(Some((contact, weighs)))
}

/// A contact's events and in-flight reservations, oldest first, by its
/// internal key. Events come in key order (contact, at, seq); reservations
/// are few and merged in, so neither query sorts.
pub(super) fn weighs(
    reader: &EventReader<'_>,
    rowid: i64,
    id: &str,
) -> Result<Vec<Event>, StoreError> {
    let conn = reader.conn();
    let mut events = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE contact = ?1 ORDER BY at, seq"
    ))?;
    let mut q = stmt.query([rowid])?;
    while let Some(r) = q.next()? {
        let (_, mut event) = reader.event(r)?;
        event.contact = id.to_string();
        events.push(event);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT l.at, l.event_type, l.channel, o.idem_key, o.payload FROM fatigue_ledger l
           JOIN outbox o ON o.seq = l.outbox WHERE l.contact = ?1",
    )?;
    let mut q = stmt.query([rowid])?;
    let mut reserved = false;
    while let Some(r) = q.next()? {
        reserved = true;
        events.push(Event {
            id: r.get(3)?,
            contact: id.to_string(),
            kind: r.get(1)?,
            at: from_micros(r.get(0)?)?,
            channel: r.get(2)?,
            props: send_props(None, r.get_ref(4)?.as_str().unwrap_or_default()),
        });
    }
    if reserved {
        // Stable: events keep their order among equal instants.
        events.sort_by_key(|e| e.at);
    }
    Ok(events)
}

impl Conn {
    pub(super) fn last_tick(&self, schedule: &str) -> Result<Option<Timestamp>, StoreError> {
        self.conn
            .prepare_cached("SELECT last_tick FROM schedule_state WHERE name = ?1")?
            .query_row([schedule], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten()
            .map(from_micros)
            .transpose()
    }

    pub(super) fn claim_schedule(
        &mut self,
        schedule: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "INSERT INTO schedule_state (name, lease_owner, lease_until) VALUES (?1, ?2, ?4)
                     ON CONFLICT(name) DO UPDATE SET lease_owner = ?2, lease_until = ?4
                     WHERE schedule_state.lease_owner IS NULL OR schedule_state.lease_owner = ?2
                        OR schedule_state.lease_until <= ?3",
                )?
                .execute(params![schedule, owner, to_micros(now), to_micros(lease_until)])?;
            Ok(n == 1)
        })
    }

    pub(super) fn renew_schedule(
        &mut self,
        schedule: &str,
        owner: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE schedule_state SET lease_until = ?3 WHERE name = ?1 AND lease_owner = ?2",
                )?
                .execute(params![schedule, owner, to_micros(lease_until)])?;
            Ok(n == 1)
        })
    }

    pub(super) fn complete_schedule(
        &mut self,
        schedule: &str,
        owner: &str,
        last_tick: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE schedule_state SET last_tick = ?3, lease_owner = NULL, lease_until = NULL
                 WHERE name = ?1 AND lease_owner = ?2",
            )?
            .execute(params![schedule, owner, to_micros(last_tick)])?;
            Ok(())
        })
    }

    pub(super) fn close_abandoned_runs(
        &mut self,
        schedule: &str,
        owner: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE job_runs SET finished_at = ?3,
                       outcome = 'error: interrupted: its process stopped before the end'
                     WHERE schedule = ?1 AND owner <> ?2 AND finished_at IS NULL",
                )?
                .execute(params![schedule, owner, to_micros(now)])?)
        })
    }

    pub(super) fn start_job_run(&mut self, run: &JobRun) -> Result<i64, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO job_runs (schedule, job, tick, owner, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                run.schedule,
                run.job,
                to_micros(run.tick),
                run.owner,
                to_micros(run.started_at)
            ])?;
            Ok(tx.last_insert_rowid())
        })
    }

    pub(super) fn finish_job_run(
        &mut self,
        id: i64,
        finished_at: Timestamp,
        outcome: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("UPDATE job_runs SET finished_at = ?2, outcome = ?3 WHERE seq = ?1")?
                .execute(params![id, to_micros(finished_at), outcome])?;
            Ok(())
        })
    }

    pub(super) fn job_runs(
        &self,
        schedule: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRun>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT schedule, job, tick, owner, started_at, finished_at, outcome FROM job_runs
             WHERE ?1 IS NULL OR schedule = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let mut q = stmt.query(params![schedule, limit])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(JobRun {
                schedule: r.get(0)?,
                job: r.get(1)?,
                tick: from_micros(r.get(2)?)?,
                owner: r.get(3)?,
                started_at: from_micros(r.get(4)?)?,
                finished_at: r.get::<_, Option<i64>>(5)?.map(from_micros).transpose()?,
                outcome: r.get(6)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::sqlite::SqliteStore;
    use crate::core::model::FollowUpKind as Kind;
    use crate::domain::ingest::{Format, Kind as RecordKind, read_lines};
    use crate::domain::outbox::idempotency_key;
    use crate::ports::store::{AdmissionVerdict, OutboxStore, Records, ScheduleStore};
    use std::time::Duration;

    fn t(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&chrono::Utc)
    }

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let s =
            SqliteStore::open(&dir.path().join("o.db"), Duration::from_secs(5), 64).expect("open");
        let patches: Vec<_> =
            read_lines("id\nc1\nc2\n".as_bytes(), Format::Csv, RecordKind::Contact)
                .expect("csv")
                .map(|l| l.item.expect("valid"))
                .collect();
        s.upsert_contacts(&patches).expect("contacts");
        s
    }

    /// Lets every send through, charging it as an email.
    fn allow(_: &Row, _: &Contact, _: &[Event]) -> Admission {
        Admission {
            verdict: AdmissionVerdict::Allow {
                event_type: "email_sent".into(),
            },
            reasons: Vec::new(),
        }
    }

    /// Claims up to 10 rows due at `at` for `owner`, leased five minutes.
    fn claim_at(
        s: &SqliteStore,
        at: Timestamp,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Vec<Row> {
        s.claim_due(at, at + chrono::Duration::minutes(5), 10, owner, admit)
            .expect("claim")
    }

    fn send(contact: &str, step: &str, due: &str) -> NewSend {
        NewSend {
            idem_key: idempotency_key(contact, "nurture", step),
            contact: contact.into(),
            followup: "nurture".into(),
            kind: Kind::Systematic,
            priority: 10,
            channel: "email".into(),
            due_at: t(due),
            payload: Payload::template("nurture_welcome"),
        }
    }

    #[test]
    fn enqueue_is_idempotent_and_claims_only_due_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let now = t("2026-11-20T12:00:00Z");
        let batch = [
            send("c1", "1", "2026-11-20T11:00:00Z"),
            send("c2", "1", "2026-11-20T13:00:00Z"),
        ];
        assert_eq!(s.enqueue(&batch, now).expect("ok"), [true, true]);
        assert_eq!(s.enqueue(&batch, now).expect("ok"), [false, false]);
        let lease = now + chrono::Duration::minutes(5);
        let claimed = s.claim_due(now, lease, 10, "a", &mut allow).expect("ok");
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (
                claimed[0].contact.as_str(),
                claimed[0].attempts,
                claimed[0].state
            ),
            ("c1", 1, State::Claimed)
        );
        assert!(
            s.claim_due(now, lease, 10, "b", &mut allow)
                .expect("ok")
                .is_empty(),
            "leased rows are not claimed twice"
        );

        assert!(
            s.settle(claimed[0].seq, "a", &Settlement::Sent, now)
                .expect("ok")
        );
        assert!(
            !s.settle(claimed[0].seq, "a", &Settlement::Sent, now)
                .expect("ok"),
            "settled once"
        );
        let depth = s.outbox_depth().expect("ok");
        assert_eq!((depth[&State::Sent], depth[&State::Planned]), (1, 1));
    }

    /// Rows written before the payload was typed (every key present, nulls
    /// included, in the order `serde_json` sorted them), by a preview (the
    /// template only), or unreadable, still read.
    #[test]
    fn payloads_in_the_old_format_still_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let raw = rusqlite::Connection::open(dir.path().join("o.db")).expect("raw");
        let now = t("2026-11-20T12:00:00Z");
        let rows = [
            send("c1", "1", "2026-11-20T11:00:00Z"),
            send("c1", "2", "2026-11-20T11:00:00Z"),
            send("c1", "3", "2026-11-20T11:00:00Z"),
            send("c1", "4", "2026-11-20T11:00:00Z"),
        ];
        s.enqueue(&rows, now).expect("enqueue");
        let old = [
            r#"{"deadline":"2026-11-21T11:00:00Z","occurrence":{"at":"2026-11-20T10:00:00Z","signal":"event:e1","type":"signal"},"owner":"claire","template":"call_hot"}"#,
            r#"{"deadline":null,"occurrence":{"enrolled_at":"2026-11-01T09:00:00Z","index":2,"type":"step"},"owner":null,"template":"nurture_welcome"}"#,
            r#"{"template":"news","exempt":"yes","occurrence":{"type":"unknown"}}"#,
            "null",
        ];
        for (row, text) in rows.iter().zip(old) {
            raw.execute(
                "UPDATE outbox SET payload = ?2 WHERE idem_key = ?1",
                params![row.idem_key, text],
            )
            .expect("old payload");
        }
        let read: Vec<Payload> = s
            .pending_of("c1")
            .expect("rows")
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(read.len(), 4);
        assert_eq!(
            read[0],
            Payload {
                deadline: Some(t("2026-11-21T11:00:00Z")),
                exempt: false,
                occurrence: Some(crate::domain::outbox::Occurrence::Signal {
                    signal: "event:e1".into(),
                    at: t("2026-11-20T10:00:00Z"),
                }),
                owner: Some("claire".into()),
                template: Some("call_hot".into()),
            }
        );
        assert_eq!(
            read[1].occurrence,
            Some(crate::domain::outbox::Occurrence::Step {
                index: 2,
                enrolled_at: t("2026-11-01T09:00:00Z"),
            })
        );
        assert_eq!((read[1].owner.as_deref(), read[1].deadline), (None, None));
        assert_eq!(
            read[2],
            Payload::template("news"),
            "bad fields read as missing"
        );
        assert_eq!(read[3], Payload::default());
        // What is written now reads back the same, and omits `exempt` unless set.
        let mut exempt = Payload::template("receipt");
        exempt.exempt = true;
        for p in [read[0].clone(), exempt] {
            let text = encode(&p).expect("encode");
            assert_eq!(text.contains("exempt"), p.exempt, "{text}");
            assert_eq!(decode_payload(&text), p);
        }
    }

    #[test]
    fn an_expired_lease_is_claimed_again_with_the_same_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let now = t("2026-11-20T12:00:00Z");
        s.enqueue(&[send("c1", "1", "2026-11-20T11:00:00Z")], now)
            .expect("ok");
        let first = claim_at(&s, now, "dead-process", &mut allow);
        let later = now + chrono::Duration::minutes(6);
        let again = claim_at(&s, later, "b", &mut allow);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].idem_key, first[0].idem_key);
        assert_eq!(again[0].attempts, 2);
        assert_eq!(again[0].first_due, t("2026-11-20T11:00:00Z"));
        assert!(
            !s.settle(first[0].seq, "dead-process", &Settlement::Sent, later)
                .expect("ok"),
            "stale owner loses"
        );
        let retry = Settlement::Retry {
            at: later + chrono::Duration::minutes(1),
            error: "503".into(),
        };
        assert!(s.settle(again[0].seq, "b", &retry, later).expect("ok"));
        let rows = s.outbox_rows(Some(State::Retrying), 10).expect("ok");
        assert_eq!(rows[0].last_error.as_deref(), Some("503"));
        assert!(
            s.claim_due(later, later, 10, "b", &mut allow)
                .expect("ok")
                .is_empty(),
            "not before its retry instant"
        );
    }

    /// The rows of a query of six columns.
    fn six<A, B, C, D, E, F>(raw: &rusqlite::Connection, sql: &str) -> Vec<(A, B, C, D, E, F)>
    where
        A: rusqlite::types::FromSql,
        B: rusqlite::types::FromSql,
        C: rusqlite::types::FromSql,
        D: rusqlite::types::FromSql,
        E: rusqlite::types::FromSql,
        F: rusqlite::types::FromSql,
    {
        raw.prepare(sql)
            .expect("prepare")
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// One batch mixing delivered, retried and dead rows, a row settled
    /// twice and a row another owner holds: each row ends as if settled
    /// alone, the delivered ones become events numbered in the batch's
    /// order, and the dashboard's counts match the rows.
    #[test]
    fn a_mixed_batch_settles_each_row_as_if_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let raw = rusqlite::Connection::open(dir.path().join("o.db")).expect("raw");
        let now = t("2026-11-20T12:00:00Z");
        let due = "2026-11-20T11:00:00Z";
        let sends = [
            send("c1", "1", due),
            send("c2", "1", due),
            send("c1", "2", due),
            send("c2", "2", due),
            send("c1", "3", due),
        ];
        s.enqueue(&sends, now).expect("enqueue");
        let lease = now + chrono::Duration::minutes(5);
        let mine = s.claim_due(now, lease, 4, "a", &mut allow).expect("ok");
        let other = s.claim_due(now, lease, 10, "b", &mut allow).expect("ok");
        assert_eq!((mine.len(), other.len()), (4, 1));
        let (later, last) = (
            now + chrono::Duration::minutes(1),
            now + chrono::Duration::minutes(2),
        );
        let retry_at = now + chrono::Duration::hours(1);
        let dead = |e: &str| Settlement::Dead { error: e.into() };
        let batch = [
            (mine[2].seq, Settlement::Sent, last),
            (mine[0].seq, Settlement::Sent, later),
            (
                mine[1].seq,
                Settlement::Retry {
                    at: retry_at,
                    error: "503".into(),
                },
                later,
            ),
            (mine[3].seq, dead("410"), later),
            (mine[0].seq, dead("again"), later),
            (other[0].seq, Settlement::Sent, later),
        ];
        assert_eq!(
            s.settle_many("a", &batch).expect("ok"),
            [true, true, true, true, false, false]
        );

        let rows: HashMap<String, (State, Option<String>, Timestamp, Timestamp)> = s
            .outbox_rows(None, 10)
            .expect("rows")
            .into_iter()
            .map(|r| (r.idem_key, (r.state, r.last_error, r.due_at, r.updated_at)))
            .collect();
        let row = |r: &Row| rows[&r.idem_key].clone();
        assert_eq!(row(&mine[0]), (State::Sent, None, lease, later));
        assert_eq!(
            row(&mine[1]),
            (State::Retrying, Some("503".into()), retry_at, later)
        );
        assert_eq!(row(&mine[2]), (State::Sent, None, lease, last));
        assert_eq!(
            row(&mine[3]),
            (State::Dead, Some("410".into()), lease, later)
        );
        assert_eq!(row(&other[0]), (State::Claimed, None, lease, now));

        type Recorded = (String, i64, String, String, String, String);
        let events = |raw: &rusqlite::Connection| -> Vec<Recorded> {
            six(
                raw,
                "SELECT c.id, e.at, e.event_id, e.type, e.channel, e.props FROM events_text e
                 JOIN contacts c ON c.rowid = e.contact ORDER BY e.seq",
            )
        };
        let sent = |r: &Row, at: Timestamp| {
            (
                r.contact.clone(),
                to_micros(at),
                r.idem_key.clone(),
                "email_sent".to_string(),
                "email".to_string(),
                r#"{"followup":"nurture"}"#.to_string(),
            )
        };
        assert_eq!(
            events(&raw),
            [sent(&mine[2], last), sent(&mine[0], later)],
            "in the batch's order"
        );
        let ledger: Vec<i64> = raw
            .prepare("SELECT outbox FROM fatigue_ledger")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("ledger")
            .collect::<Result<_, _>>()
            .expect("ledger");
        assert_eq!(
            ledger,
            [other[0].seq],
            "released but for the row still held"
        );

        let depth = s.outbox_depth().expect("depth");
        assert_eq!(
            (
                depth[&State::Sent],
                depth[&State::Retrying],
                depth[&State::Dead],
                depth[&State::Claimed]
            ),
            (2, 1, 1, 1)
        );
        type Counted = (i64, String, String, String, String, i64);
        let table = |sql: &str| -> Vec<Counted> { six(&raw, sql) };
        assert_eq!(
            table("SELECT * FROM ui_outbox_counts WHERE n <> 0 ORDER BY 1, 2, 3, 4, 5"),
            table(
                "SELECT first_due / 86400000000, followup, kind, channel, state, count(*)
                 FROM outbox GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
            )
        );
        let campaign: (i64, i64) = raw
            .query_row(
                "SELECT sent, contacts FROM campaign_stats WHERE campaign = 'nurture'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("campaign");
        assert_eq!(campaign, (2, 1));

        // The other owner settles its row after: its event comes next.
        assert!(
            s.settle(other[0].seq, "b", &Settlement::Sent, last)
                .expect("ok")
        );
        assert_eq!(
            events(&raw),
            [
                sent(&mine[2], last),
                sent(&mine[0], later),
                sent(&other[0], last)
            ]
        );
    }

    /// Every writer of outbox rows and decisions (enqueues, claims,
    /// settlements, releases, planning passes) adds the dashboard's counts
    /// and the campaign sends as sums over its transaction: the counts are
    /// those recounted from the rows after each.
    #[test]
    fn counts_summed_over_a_batch_match_a_recount() {
        use crate::domain::fatigue::Verdict;
        use crate::domain::fatigue::admit::{ClaimStop, Why};
        use crate::ports::store::{PlanRow, PlanStore, PlanWrite};
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let raw = rusqlite::Connection::open(dir.path().join("o.db")).expect("raw");
        let now = t("2026-11-20T12:00:00Z");
        let due = "2026-11-19T23:00:00Z";
        let sends: Vec<_> = ["c1", "c2"]
            .iter()
            .flat_map(|c| ["1", "2", "3"].map(|step| send(c, step, due)))
            .collect();
        s.enqueue(&sends, now).expect("enqueue");
        // Step 1 allowed, 2 deferred, 3 blocked, each with its own rule.
        let mut decide = |row: &Row, _: &Contact, _: &[Event]| -> Admission {
            let stop = |channel: &str| ClaimStop::UnknownChannel {
                channel: channel.into(),
            };
            match row.idem_key.as_str() {
                k if k == idempotency_key(&row.contact, "nurture", "2") => Admission {
                    verdict: AdmissionVerdict::Defer {
                        until: now + chrono::Duration::hours(1),
                    },
                    reasons: vec![Why::Claim(ClaimStop::ChannelNotConfigured {
                        channel: "email".into(),
                        detail: "no host".into(),
                    })],
                },
                k if k == idempotency_key(&row.contact, "nurture", "3") => Admission {
                    verdict: AdmissionVerdict::Block,
                    reasons: vec![Why::Claim(stop("fax"))],
                },
                _ => allow(row, &Contact::default(), &[]),
            }
        };
        let first = claim_at(&s, now, "gone", &mut decide);
        assert_eq!(first.len(), 2);
        // The lease runs out: the same two rows are claimed again (a move
        // from claimed to claimed changes no count), the deferred ones are
        // deferred again.
        let later = now + chrono::Duration::hours(2);
        let again = claim_at(&s, later, "b", &mut decide);
        assert_eq!(again.len(), 2);
        let batch = [
            (again[0].seq, Settlement::Sent, later),
            (again[0].seq, Settlement::Sent, later),
        ];
        assert_eq!(s.settle_many("b", &batch).expect("ok"), [true, false]);
        // A release at shutdown adds its own.
        assert_eq!(s.release_claims("b", later).expect("ok"), 1);

        let recounted = || {
            let table =
                |sql: &str| -> Vec<(i64, String, String, String, String, i64)> { six(&raw, sql) };
            assert_eq!(
                table("SELECT * FROM ui_outbox_counts WHERE n <> 0 ORDER BY 1, 2, 3, 4, 5"),
                table(
                    "SELECT first_due / 86400000000, followup, kind, channel, state, count(*)
                     FROM outbox GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
                )
            );
            let decisions =
                |sql: &str| -> Vec<(i64, String, String, i64, i64, i64)> { six(&raw, sql) };
            let logged = decisions(
                "SELECT day, decision, rule, n, 0, 0 FROM ui_decisions WHERE n <> 0 ORDER BY 1, 2, 3",
            );
            assert_eq!(
                logged,
                decisions(
                    "SELECT at / 86400000000, decision,
                            coalesce(json_extract(reasons, '$[0].rule'),
                                     json_extract(reasons, '$.reasons[0].rule'),
                                     json_extract(reasons, '$[0]'), ''),
                            count(*), 0, 0
                     FROM decision_log GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
                )
            );
            let sends = |sql: &str| -> Vec<(i64, String, i64, i64, i64, i64)> { six(&raw, sql) };
            assert_eq!(
                sends(
                    "SELECT contact, campaign, sends, 0, 0, 0 FROM campaign_contacts ORDER BY 1, 2"
                ),
                sends(
                    "SELECT contact, followup, count(*), 0, 0, 0 FROM outbox WHERE state = 'sent'
                     GROUP BY 1, 2 ORDER BY 1, 2"
                )
            );
            let flags: i64 = raw
                .query_row("SELECT count(*) FROM counts_summed", [], |r| r.get(0))
                .expect("flags");
            assert_eq!(flags, 0, "the triggers are on outside a batch");
            logged
        };
        let campaign = || -> (i64, i64) {
            raw.query_row(
                "SELECT sent, contacts FROM campaign_stats WHERE campaign = 'nurture'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("campaign")
        };

        let logged = recounted();
        let day = to_micros(now) / 86_400_000_000;
        assert_eq!(
            logged,
            [
                (day, "allow".into(), String::new(), 4, 0, 0),
                (day, "block".into(), "unknown_channel".into(), 2, 0, 0),
                (
                    day,
                    "defer".into(),
                    "channel_not_configured".into(),
                    4,
                    0,
                    0
                ),
            ],
            "two claims of two contacts, the second without the blocked rows"
        );
        let states: Vec<(String, i64)> = raw
            .prepare("SELECT state, sum(n) FROM ui_outbox_counts GROUP BY 1 HAVING sum(n) > 0")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            states,
            [
                ("blocked".to_string(), 2),
                ("deferred".to_string(), 2),
                ("retrying".to_string(), 1),
                ("sent".to_string(), 1)
            ]
        );
        assert_eq!(campaign(), (1, 1));

        // Everything due is sent: the contact sent to before is counted
        // once more in its sends, not as a new contact.
        let last = later + chrono::Duration::hours(2);
        let rest = claim_at(&s, last, "c", &mut allow);
        assert_eq!(rest.len(), 3, "the released row and the two deferred ones");
        let batch: Vec<_> = rest
            .iter()
            .map(|r| (r.seq, Settlement::Sent, last))
            .collect();
        assert_eq!(s.settle_many("c", &batch).expect("ok"), [true; 3]);
        recounted();
        assert_eq!(campaign(), (4, 2));

        // A planning pass writes a planned row and a blocked one, then
        // drops the planned one and names a sent row, which it leaves.
        let key = |id: &str| -> i64 {
            raw.query_row("SELECT rowid FROM contacts WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("key")
        };
        let planned = |contact: &str, state: State, decision: Verdict| PlanRow {
            send: send(contact, "4", due),
            state,
            first_due: last,
            decision,
            reasons: match decision {
                Verdict::Block => vec![Why::Claim(ClaimStop::UnknownChannel {
                    channel: "fax".into(),
                })],
                _ => Vec::new(),
            },
        };
        let write = |key: i64, rows: Vec<PlanRow>, drops: Vec<(i64, String)>| PlanWrite {
            key,
            rows,
            drops,
            wake: None,
            wake_was: None,
            memo: None,
        };
        s.save_plan(
            &[
                write(
                    key("c1"),
                    vec![planned("c1", State::Planned, Verdict::Allow)],
                    Vec::new(),
                ),
                write(
                    key("c2"),
                    vec![planned("c2", State::Blocked, Verdict::Block)],
                    Vec::new(),
                ),
            ],
            last,
        )
        .expect("plan");
        recounted();
        let seq = |idem: &str| -> i64 {
            raw.query_row("SELECT seq FROM outbox WHERE idem_key = ?1", [idem], |r| {
                r.get(0)
            })
            .expect("seq")
        };
        let drops = vec![
            (seq(&idempotency_key("c1", "nurture", "4")), "left".into()),
            (seq(&idempotency_key("c1", "nurture", "1")), "left".into()),
        ];
        s.save_plan(&[write(key("c1"), Vec::new(), drops)], last)
            .expect("drop");
        let logged = recounted();
        let last_day = to_micros(last) / 86_400_000_000;
        assert!(logged.contains(&(last_day, "block".into(), "unknown_channel".into(), 3, 0, 0)));
        let states: Vec<(String, i64)> = raw
            .prepare("SELECT state, n FROM ui_outbox_counts WHERE n > 0 AND day = ?1 ORDER BY 1")
            .expect("prepare")
            .query_map([last_day], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            states,
            [("blocked".to_string(), 1), ("dropped".to_string(), 1)],
            "the new rows by their first due day; the sent row left as it was"
        );
    }

    #[test]
    fn schedules_are_claimed_by_one_owner_at_a_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = store(&dir);
        let now = t("2026-11-20T12:00:00Z");
        let lease = now + chrono::Duration::minutes(1);
        assert_eq!(s.last_tick("rescore").expect("ok"), None);
        assert!(s.claim_schedule("rescore", "a", now, lease).expect("ok"));
        assert!(!s.claim_schedule("rescore", "b", now, lease).expect("ok"));
        s.complete_schedule("rescore", "a", now).expect("ok");
        assert_eq!(s.last_tick("rescore").expect("ok"), Some(now));
        assert!(s.claim_schedule("rescore", "b", now, lease).expect("ok"));
        let later = lease + chrono::Duration::seconds(1);
        assert!(
            s.claim_schedule("rescore", "c", later, later).expect("ok"),
            "an expired lease is taken over"
        );
    }
}
