//! The outbox of the PostgreSQL store, claimed by several processes; the
//! claims and settlements themselves, a batch per transaction in a handful
//! of statements, are in `claim.rs`.

use super::PgStore;
use super::records::events_by_key;
use crate::adapters::sqlite::shared::{
    decode, decode_payload, encode, from_micros, send_props, to_micros,
};
use crate::core::model::{Contact, Event, Timestamp};
use crate::domain::outbox::{NewSend, Row, Settlement, State};
use crate::ports::store::{Admission, Claimed, LoggedDecision, OutboxStore, Props, StoreError};
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;

pub(super) const ROW_COLUMNS: &str = "o.seq, o.idem_key, c.id, o.followup, o.kind, o.priority, \
     o.channel, o.state, o.due_at, o.first_due, o.attempts, o.lease_until, o.payload, \
     o.last_error, o.updated_at";

/// Rows still to send, claimed ones included (their lease may expire).
const PENDING: &str = "('planned', 'deferred', 'retrying', 'claimed')";

pub(super) fn read_row(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let kind: &str = r.get(4);
    let state: &str = r.get(7);
    Ok(Row {
        seq: r.get(0),
        idem_key: r.get(1),
        contact: r.get(2),
        followup: r.get(3),
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        priority: i32::try_from(r.get::<_, i64>(5))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        channel: r.get(6),
        state: state.parse().map_err(StoreError::Corrupt)?,
        due_at: from_micros(r.get(8))?,
        first_due: from_micros(r.get(9))?,
        attempts: u32::try_from(r.get::<_, i64>(10))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        lease_until: r.get::<_, Option<i64>>(11).map(from_micros).transpose()?,
        payload: decode_payload(r.get(12)),
        last_error: r.get(13),
        updated_at: from_micros(r.get(14))?,
    })
}

async fn rows(
    c: &impl GenericClient,
    filter: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    c.query(
        &format!(
            "SELECT {ROW_COLUMNS} FROM outbox o JOIN contacts c ON c.rowid = o.contact {filter}"
        ),
        args,
    )
    .await?
    .iter()
    .map(read_row)
    .collect()
}

/// A contact's events and in-flight reservations, oldest first.
pub(super) async fn weighs(
    c: &impl GenericClient,
    rowid: i64,
    id: &str,
) -> Result<Vec<Event>, StoreError> {
    let mut events = events_by_key(c, rowid, id).await?;
    let reserved = c
        .query(
            "SELECT l.at, l.event_type, l.channel, o.idem_key, o.payload FROM fatigue_ledger l
             JOIN outbox o ON o.seq = l.outbox WHERE l.contact = $1",
            &[&rowid],
        )
        .await?;
    for r in &reserved {
        events.push(Event {
            id: r.get(3),
            contact: id.to_string(),
            kind: r.get(1),
            at: from_micros(r.get(0))?,
            channel: r.get(2),
            props: send_props(None, r.get(4)),
        });
    }
    if !reserved.is_empty() {
        // Stable: events keep their order among equal instants.
        events.sort_by_key(|e| e.at);
    }
    Ok(events)
}

async fn guard_input(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<(Contact, Vec<Event>)>, StoreError> {
    let Some(r) = c
        .query_opt("SELECT rowid, record FROM contacts WHERE id = $1", &[&id])
        .await?
    else {
        return Ok(None);
    };
    let contact: Contact = decode(r.get(1))?;
    let events = weighs(c, r.get(0), &contact.id).await?;
    Ok(Some((contact, events)))
}

impl PgStore {
    /// A claim in two transactions: the due rows taken (see
    /// [`super::claim::take`]), then decided under their contacts' locks.
    fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        context: bool,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Claimed>, StoreError> {
        let taken =
            self.tx(async |tx| super::claim::take(tx, now, lease_until, limit, owner).await)?;
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        self.tx(async |tx| {
            super::claim::decide(tx, &taken, now, lease_until, owner, context, admit).await
        })
    }
}

impl OutboxStore for PgStore {
    fn enqueue(&self, batch: &[NewSend], now: Timestamp) -> Result<Vec<bool>, StoreError> {
        self.tx(async |tx| {
            let mut out = Vec::with_capacity(batch.len());
            for s in batch {
                let n = tx
                    .execute(
                        "INSERT INTO outbox (idem_key, contact, followup, kind, priority, channel,
                                             state, due_at, first_due, payload, updated_at)
                         SELECT $1, rowid, $3, $4, $5, $6, 'planned', $7, $7, $8, $9
                         FROM contacts WHERE id = $2
                         ON CONFLICT (idem_key) DO NOTHING",
                        &[
                            &s.idem_key,
                            &s.contact,
                            &s.followup,
                            &s.kind.as_str(),
                            &i64::from(s.priority),
                            &s.channel,
                            &to_micros(s.due_at),
                            &encode(&s.payload)?,
                            &to_micros(now),
                        ],
                    )
                    .await?;
                out.push(n == 1);
            }
            Ok(out)
        })
    }

    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Row>, StoreError> {
        let claimed = self.claim(now, lease_until, limit, owner, false, admit)?;
        Ok(claimed.into_iter().map(|c| c.row).collect())
    }

    /// The claim of [`Self::claim_due`]; the contacts as the guard saw
    /// them, their companies and scores read in the claim's transaction.
    fn claim_batch(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.claim(now, lease_until, limit, owner, true, admit)
    }

    fn guard_input(&self, contact: &str) -> Result<Option<(Contact, Vec<Event>)>, StoreError> {
        self.snapshot(async |tx| guard_input(tx, contact).await)
    }

    fn decisions(
        &self,
        contact: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedDecision>, StoreError> {
        self.read(async |c| {
            c.query(
                "SELECT c.id, d.at, d.followup, d.channel, d.decision, d.until, d.reasons
                 FROM decision_log d JOIN contacts c ON c.rowid = d.contact
                 WHERE $1::text IS NULL OR c.id = $1 ORDER BY d.seq DESC LIMIT $2",
                &[&contact, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(LoggedDecision {
                    contact: r.get(0),
                    at: from_micros(r.get(1))?,
                    followup: r.get(2),
                    channel: r.get(3),
                    decision: r.get::<_, &str>(4).parse().map_err(StoreError::Corrupt)?,
                    until: r.get::<_, Option<i64>>(5).map(from_micros).transpose()?,
                    reasons: decode(r.get(6))?,
                })
            })
            .collect()
        })
    }

    fn settle(
        &self,
        seq: i64,
        owner: &str,
        how: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self
            .settle_many(owner, &[(seq, how.clone(), now)])?
            .first()
            .copied()
            .unwrap_or(false))
    }

    fn settle_many(
        &self,
        owner: &str,
        batch: &[(i64, Settlement, Timestamp)],
    ) -> Result<Vec<bool>, StoreError> {
        let out = self.tx(async |tx| super::claim::settle(tx, owner, batch).await)?;
        self.appended_now();
        Ok(out)
    }

    fn outbox_rows(&self, state: Option<State>, limit: u32) -> Result<Vec<Row>, StoreError> {
        let state = state.map(State::as_str);
        self.read(async |c| {
            rows(
                c,
                "WHERE ($1::text IS NULL OR o.state = $1) ORDER BY o.due_at, o.seq LIMIT $2",
                &[&state, &i64::from(limit)],
            )
            .await
        })
    }

    fn pending_of(&self, contact: &str) -> Result<Vec<Row>, StoreError> {
        self.read(async |c| {
            rows(
                c,
                "WHERE c.id = $1 AND o.state IN ('planned', 'deferred', 'retrying')
                 ORDER BY o.due_at, o.seq",
                &[&contact],
            )
            .await
        })
    }

    fn outbox_depth(&self) -> Result<BTreeMap<State, u64>, StoreError> {
        self.read(async |c| {
            let mut out: BTreeMap<State, u64> = State::ALL.into_iter().map(|s| (s, 0)).collect();
            for r in c
                .query("SELECT state, count(*) FROM outbox GROUP BY state", &[])
                .await?
            {
                out.insert(
                    r.get::<_, &str>(0).parse().map_err(StoreError::Corrupt)?,
                    r.get::<_, i64>(1) as u64,
                );
            }
            Ok(out)
        })
    }

    fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(async |c| {
            c.query_one(
                &format!("SELECT min(due_at) FROM outbox WHERE state IN {PENDING}"),
                &[],
            )
            .await?
            .get::<_, Option<i64>>(0)
            .map(from_micros)
            .transpose()
        })
    }

    fn release_claims(&self, owner: &str, now: Timestamp) -> Result<u64, StoreError> {
        self.tx(async |tx| {
            tx.execute(
                "DELETE FROM fatigue_ledger WHERE outbox IN
                   (SELECT seq FROM outbox WHERE state = 'claimed' AND lease_owner = $1)",
                &[&owner],
            )
            .await?;
            Ok(tx
                .execute(
                    "UPDATE outbox SET state = 'retrying', due_at = $2, lease_owner = NULL,
                       lease_until = NULL, last_error = 'released at shutdown', updated_at = $2
                     WHERE state = 'claimed' AND lease_owner = $1",
                    &[&owner, &to_micros(now)],
                )
                .await?)
        })
    }

    fn note_waiting(&self, channel: &str, reason: &str) -> Result<u64, StoreError> {
        self.tx(async |tx| {
            Ok(tx
                .execute(
                    "UPDATE outbox SET last_error = $2
                     WHERE channel = $1 AND state IN ('planned', 'deferred', 'retrying')
                       AND last_error IS DISTINCT FROM $2",
                    &[&channel, &reason],
                )
                .await?)
        })
    }

    fn outbox_row(&self, key: &str) -> Result<Option<Row>, StoreError> {
        self.read(async |c| Ok(rows(c, "WHERE o.idem_key = $1", &[&key]).await?.pop()))
    }

    fn delivered_on(&self, channels: &[String], limit: u32) -> Result<Vec<Row>, StoreError> {
        self.read(async |c| {
            rows(
                c,
                "WHERE o.channel = ANY($1) AND o.state = 'sent' ORDER BY o.first_due, o.seq LIMIT $2",
                &[&channels, &i64::from(limit)],
            )
            .await
        })
    }

    fn event_by_dedup(&self, dedup: &[u8]) -> Result<Option<(Props, Timestamp)>, StoreError> {
        self.read(async |c| {
            c.query_opt("SELECT props, at FROM events WHERE dedup = $1", &[&dedup])
                .await?
                .map(|r| {
                    Ok((
                        crate::adapters::sqlite::shared::decode_props(r.get(0))?,
                        from_micros(r.get(1))?,
                    ))
                })
                .transpose()
        })
    }
}
