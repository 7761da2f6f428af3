//! Persistence. Everything the domain needs from storage goes through the
//! [`Store`] trait, so that PostgreSQL can come next to SQLite without
//! touching scoring, the guard or the planner.
//!
//! A store is opened once per process (`crate::adapters::sqlite::open`) and shared as a
//! [`StoreHandle`]: the passes, the dispatcher, the scheduler, the API and
//! the commands all call the same handle, which keeps its own connections.
//! Nothing outside the adapter opens a connection.
//!
//! The contract holds when several processes share one store, not only
//! threads of one process: each method says what it guarantees then, and
//! `daemon/tests/store_contract.rs` checks it against every backend.

pub mod desk;
pub mod retention;
mod types;
pub mod ui;

use crate::domain::followups::memo::HistoryMemo;
pub use desk::DeskStore;
pub use retention::RetentionStore;
pub use types::{BroadcastSpec, Props, RescoreInput};
pub use ui::UiReads;

use crate::core::model::{Company, Contact, Deal, Event, Timestamp};
use crate::domain::fatigue::Verdict;
pub use crate::domain::fatigue::admit::{Admission, AdmissionVerdict};
use crate::domain::ingest::{Incoming, Patch};
use crate::domain::outbox::{NewSend, Row, Settlement, State};
use crate::domain::scoring::StoredScore;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The store a process shares between its tasks.
pub type StoreHandle = Arc<dyn Store>;

/// What went wrong in a store, whatever the backend: each backend sorts
/// its own errors into these kinds, so that callers decide on retrying
/// from the kind alone ([`StoreError::is_transient`]).
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Trying again later may succeed: a lock held too long, an I/O
    /// failure, a full disk, a connection lost.
    #[error("database busy or unavailable: {0}")]
    Transient(String),
    /// A write broke a rule of the schema (a uniqueness or reference).
    #[error("database constraint: {0}")]
    Constraint(String),
    /// Any other failure of the backend that retrying cannot fix.
    #[error("database error: {0}")]
    Backend(String),
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "the store at {path} has schema version {found}, newer than this relance ({known}): upgrade relance"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    /// A stored value cannot be read back (a damaged file, a bad value).
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// A streaming read stopped because its consumer went away.
    #[error("read cancelled: its consumer stopped")]
    Cancelled,
}

impl StoreError {
    /// Whether trying again later may succeed (a lock held too long, a full
    /// disk), as opposed to a problem that retrying cannot fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// What an upsert did to one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum Upsert {
    Inserted,
    Updated,
    Unchanged,
    /// Nothing was written; the reason names the field.
    Rejected(String),
}

/// What [`Records::upsert_contacts_checked`] did: per item, and the
/// duplicates it found.
pub type ContactsWritten = (Vec<Upsert>, Vec<(String, desk::DuplicateGroup)>);

/// What appending one event did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum Append {
    Inserted,
    /// Already stored (same event id, or same content): nothing written.
    Duplicate,
    Rejected(String),
}

/// Row counts, for `relance check` and the logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub contacts: u64,
    pub companies: u64,
    pub deals: u64,
    pub events: u64,
}

/// Everything relance persists, by concept. Batches are written in one
/// transaction each; an item rejected inside a batch writes nothing and does
/// not stop the others.
///
/// Methods are synchronous and take `&self`: a handle is shared by threads
/// and called from blocking threads only (`spawn_blocking` on the async
/// side), never on the async runtime itself. A PostgreSQL adapter is to be
/// called the same way, from blocking threads, with its own pool inside.
///
/// Unless a method says more, each call is atomic (one transaction) and a
/// read sees one consistent snapshot, whatever other handles or processes
/// do meanwhile.
pub trait Store:
    Records
    + ScoreStore
    + OutboxStore
    + ScheduleStore
    + PlanStore
    + DeskStore
    + UiReads
    + RetentionStore
{
}

impl<T> Store for T where
    T: Records
        + ScoreStore
        + OutboxStore
        + ScheduleStore
        + PlanStore
        + DeskStore
        + UiReads
        + RetentionStore
{
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Contacts, companies, deals and events.
pub trait Records: Send + Sync {
    fn upsert_contacts(&self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError>;
    /// Upserts contacts as [`Self::upsert_contacts`] does and, in the same
    /// transaction, finds those of the batch sharing a normalised email or
    /// phone with another contact (see [`crate::domain::desk::keys`]): one
    /// (id, group) per key shared, emails first, each in batch order. A
    /// line earlier in the batch than its twin is found too.
    fn upsert_contacts_checked(&self, batch: &[Patch]) -> Result<ContactsWritten, StoreError>;
    /// Starts a bulk load of contacts (`relance import` of a file large
    /// next to the store): until [`Self::end_contact_load`] the store may
    /// leave its duplicate-key indexes aside, to build them once at the end
    /// by sorting rather than by a random insert per contact. Writes stay
    /// correct meanwhile; finding a duplicate is only slower.
    fn begin_contact_load(&self) -> Result<(), StoreError>;
    /// Ends a bulk load: the key indexes are whole again. Returns every
    /// group of contacts sharing a normalised key, as
    /// [`crate::ports::store::DeskStore::duplicate_groups`] does.
    fn end_contact_load(&self) -> Result<Vec<desk::DuplicateGroup>, StoreError>;
    fn upsert_companies(&self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError>;
    fn upsert_deals(&self, batch: &[Patch]) -> Result<Vec<Upsert>, StoreError>;
    /// Appends events, each once: an event already stored (same id or same
    /// content) is a duplicate, whichever handle or process wrote it first.
    /// Stored events get sequence numbers above every number handed out
    /// before, across processes and erasures, so that a pass remembering
    /// the last number it saw finds every later event. Concurrent calls may
    /// share one transaction (group commit).
    fn append_events(&self, batch: &[Incoming]) -> Result<Vec<Append>, StoreError>;

    fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError>;
    /// All contacts in id order, handed one at a time so memory stays flat.
    fn for_each_contact(&self, f: &mut dyn FnMut(Contact)) -> Result<(), StoreError>;
    fn company(&self, id: &str) -> Result<Option<Company>, StoreError>;
    fn deals(&self) -> Result<Vec<Deal>, StoreError>;
    /// A contact's events, oldest first.
    fn events_of(&self, contact: &str) -> Result<Vec<Event>, StoreError>;
    /// Every contact with its events (oldest first), in one sequential pass:
    /// what a full rebuild reads. Memory holds one contact at a time.
    fn scan_histories(&self, f: &mut dyn FnMut(Contact, Vec<Event>)) -> Result<(), StoreError>;
    /// The highest event sequence number stored (0 when none).
    fn last_event_seq(&self) -> Result<i64, StoreError>;
    /// Ids of the contacts that received events after `seq`.
    fn contacts_with_events_after(&self, seq: i64) -> Result<Vec<String>, StoreError>;
    /// Removes the contact and everything about it (events, scores, fatigue,
    /// outbox, decisions, deals). Returns whether it existed.
    fn erase_contact(&self, id: &str) -> Result<bool, StoreError>;
    fn counts(&self) -> Result<Counts, StoreError>;
    /// The schema version in force.
    fn schema_version(&self) -> Result<i64, StoreError>;
    /// Waits until an event numbered above `after` is stored, by any handle
    /// or process, or `timeout` passed; returns [`Self::last_event_seq`]
    /// then. What wakes the passes when another process ingests: a write
    /// through this handle returns it at once, one elsewhere within a short
    /// poll.
    fn wait_for_events(&self, after: i64, timeout: Duration) -> Result<i64, StoreError>;
    /// Upkeep for an idle moment (the daemon calls it when no event came
    /// for a while): work the store would otherwise do inside its next
    /// writes, whichever pass they belong to. Nothing by default.
    fn tidy(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A row claimed for delivery, with what its request is built from.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub row: Row,
    pub contact: Contact,
    pub company: Option<Company>,
    pub score: Option<StoredScore>,
}

/// The durable outbox (see [`crate::domain::outbox`]).
pub trait OutboxStore: Send + Sync {
    /// Plans sends; a key already present is left as it is, whichever
    /// process planned it. Returns, per item, whether it was new.
    fn enqueue(&self, batch: &[NewSend], now: Timestamp) -> Result<Vec<bool>, StoreError>;
    /// Claims up to `limit` rows due at `now` (including rows whose lease
    /// expired) for `owner` until `lease_until`, oldest due first. Each row is
    /// put to `admit` (the fatigue guard) with its contact and everything
    /// that weighs on it — events and in-flight reservations, oldest first —
    /// in the same transaction: an allowed row is claimed and its charge
    /// reserved before the next row is decided; a deferred row waits until
    /// the instant given; a blocked row stops. Every decision is logged.
    /// Returns the rows claimed.
    ///
    /// Across processes: claiming is atomic per contact. No row is claimed
    /// by two owners at once (a row comes back only once its lease has
    /// expired), and `admit` sees every reservation and send of the contact
    /// committed before, including those of other processes' claims: caps
    /// and the daily budget cannot be exceeded by two claimers racing.
    /// `admit` must not call the store.
    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Row>, StoreError>;
    /// [`Self::claim_due`] for the dispatcher: the same decisions, and with
    /// each claimed row the contact the guard saw, the contact's company
    /// and stored score, so that building its request reads nothing more.
    fn claim_batch(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        owner: &str,
        admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// The contact and everything the guard weighs, as `claim_due` sees it.
    fn guard_input(&self, contact: &str) -> Result<Option<(Contact, Vec<Event>)>, StoreError>;
    /// Logged decisions, newest first, optionally for one contact.
    fn decisions(
        &self,
        contact: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedDecision>, StoreError>;
    /// Records how an attempt ended. Returns false, and changes nothing, when
    /// the row is no longer claimed by `owner` (its lease expired and another
    /// process took it): of two owners, only the one holding the lease
    /// settles. A delivered send turns its reservation into an
    /// event of the channel's type, keyed by the idempotency key; a failed
    /// one releases its reservation.
    fn settle(
        &self,
        seq: i64,
        owner: &str,
        how: &Settlement,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Several settlements (row, how, instant) in one transaction.
    fn settle_many(
        &self,
        owner: &str,
        batch: &[(i64, Settlement, Timestamp)],
    ) -> Result<Vec<bool>, StoreError>;
    /// Rows, optionally in one state, oldest due first.
    fn outbox_rows(&self, state: Option<State>, limit: u32) -> Result<Vec<Row>, StoreError>;
    /// A contact's rows still to send (planned, deferred, retrying), soonest
    /// first: what a template preview shows.
    fn pending_of(&self, contact: &str) -> Result<Vec<Row>, StoreError>;
    fn outbox_depth(&self) -> Result<BTreeMap<State, u64>, StoreError>;
    /// The earliest instant a pending row may be claimed: the dispatcher
    /// sleeps until then.
    fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Gives back the rows `owner` claimed (shutdown after the grace): due
    /// again at `now`, reservations released. A send that may have left is
    /// sent again with the same idempotency key.
    fn release_claims(&self, owner: &str, now: Timestamp) -> Result<u64, StoreError>;
    /// Writes `reason` as the error of every pending send on `channel`.
    fn note_waiting(&self, channel: &str, reason: &str) -> Result<u64, StoreError>;
    /// One outbox row by its idempotency key.
    fn outbox_row(&self, key: &str) -> Result<Option<Row>, StoreError>;
    /// Delivered sends on `channels`, oldest first.
    fn delivered_on(&self, channels: &[String], limit: u32) -> Result<Vec<Row>, StoreError>;
    /// The props and instant of the event stored under `dedup`, if any.
    fn event_by_dedup(&self, dedup: &[u8]) -> Result<Option<(Props, Timestamp)>, StoreError>;
}

/// Stored schedule ticks and leases (see [`crate::pipeline::scheduler`]).
pub trait ScheduleStore: Send + Sync {
    fn last_tick(&self, schedule: &str) -> Result<Option<Timestamp>, StoreError>;
    /// Takes the schedule for `owner` until `lease_until` unless another
    /// owner holds an unexpired lease: a job never overlaps itself, in one
    /// process or across processes (of two owners racing, one wins).
    fn claim_schedule(
        &self,
        schedule: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Extends `owner`'s lease to `lease_until` (the heartbeat of a running
    /// job); false when `owner` no longer holds the schedule.
    fn renew_schedule(
        &self,
        schedule: &str,
        owner: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Stores the tick that ran and releases the lease.
    fn complete_schedule(
        &self,
        schedule: &str,
        owner: &str,
        last_tick: Timestamp,
    ) -> Result<(), StoreError>;
    /// Closes the runs of `schedule` left unfinished by other owners (a
    /// process killed mid-job), once `owner` holds the schedule; returns
    /// how many.
    fn close_abandoned_runs(
        &self,
        schedule: &str,
        owner: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError>;
    /// Records the start of a job run; returns its id for [`Self::finish_job_run`].
    fn start_job_run(&self, run: &JobRun) -> Result<i64, StoreError>;
    fn finish_job_run(
        &self,
        id: i64,
        finished_at: Timestamp,
        outcome: &str,
    ) -> Result<(), StoreError>;
    /// The latest runs, newest first, optionally of one schedule.
    fn job_runs(&self, schedule: Option<&str>, limit: u32) -> Result<Vec<JobRun>, StoreError>;
}

/// One run of a scheduled job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobRun {
    pub schedule: String,
    pub job: String,
    pub tick: Timestamp,
    pub owner: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub outcome: Option<String>,
}

/// One point of a contact's score history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub at: Timestamp,
    /// Hundredths of a point; serialised in points, like every score.
    #[serde(serialize_with = "crate::domain::scoring::points::hundredths_as_points")]
    pub score: i64,
    pub band: String,
}

/// A band crossing or a jump, published for the follow-up engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredChange {
    pub seq: i64,
    pub contact: String,
    pub at: Timestamp,
    pub kind: String,
    pub from_score: i64,
    pub to_score: i64,
    pub from_band: String,
    pub to_band: String,
    pub since: Timestamp,
}

/// What a rescoring pass writes for one contact.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreWrite {
    /// The contact's internal key.
    pub key: i64,
    pub contact: String,
    pub score: i64,
    pub band: String,
    pub next_change_at: Option<Timestamp>,
    /// Score or band differ from the stored ones: add a snapshot.
    pub snapshot: bool,
    /// The recent snapshots to keep with the score (see [`StoredScore::recent`]).
    pub recent: Vec<(Timestamp, i64)>,
    pub changes: Vec<StoredChange>,
    /// When the score this write replaces was written (`None`: none was):
    /// the write is compared and set against it.
    pub seen: Option<Timestamp>,
    /// The call desk's row (see [`crate::domain::desk::DeskRules::row`]); `None`
    /// removes a stored one.
    pub desk: Option<crate::domain::desk::DeskRow>,
    /// What the store needs to keep the contact's campaign figures.
    pub campaigns: crate::domain::desk::campaigns::CampaignFacts,
    /// The fingerprint of `desk` and `campaigns`, kept with the score (see
    /// [`crate::domain::scoring::StoredScore::desk_mark`]).
    pub desk_mark: i64,
    /// The contact is in a hot band and callable: `calls today` may list
    /// it (`None` takes it out of the call queue).
    pub hot_lead: Option<desk::HotLead>,
}

/// Scores, their history and the bookkeeping of incremental passes.
pub trait ScoreStore: Send + Sync {
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Compare-and-set of a pass's progress mark (a number in `meta`): sets
    /// `key` to `new` only if it still holds `expected` (`None`: absent),
    /// and says whether it did. Atomic across processes: of two passes that
    /// read the same mark, one advances it and the other learns it lost.
    fn advance_mark(&self, key: &str, expected: Option<i64>, new: i64) -> Result<bool, StoreError>;
    /// The internal keys, sorted, of the contacts a pass at `now` must
    /// rescore for their events after `after_seq` or their time-dependent
    /// terms due, without reading their ids. Contacts changed otherwise
    /// (profile, company, never scored) come from [`Self::take_changed`].
    fn rescore_candidate_keys(
        &self,
        now: Timestamp,
        after_seq: i64,
    ) -> Result<Vec<i64>, StoreError>;
    /// Takes, for `owner` until `lease_until`, the contacts queued because
    /// their profile or company changed (internal keys, sorted). The queue
    /// is shared by every process: a queued contact is taken by one pass
    /// at a time, and by another only once the lease expired (a pass that
    /// died). [`Self::save_scores`] removes a rescored contact from the
    /// queue; [`Self::release_changed`] gives back the others.
    fn take_changed(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<i64>, StoreError>;
    /// Gives back what `owner` took and did not rescore; returns how many.
    fn release_changed(&self, owner: &str) -> Result<u64, StoreError>;
    /// Extends the lease of what `owner` holds to `lease_until` (the
    /// heartbeat of a long pass); returns how many it holds.
    fn renew_changed(&self, owner: &str, lease_until: Timestamp) -> Result<u64, StoreError>;
    /// [`Self::rescore_input`] for many contacts (keys ascending), appended
    /// to `out` in key order; unknown keys are left out. Read in sorted
    /// batches, which cost far less than point reads.
    fn rescore_inputs(&self, keys: &[i64], out: &mut Vec<RescoreInput>) -> Result<(), StoreError>;
    /// Companies by id with their signals, a few queries for many ids;
    /// unknown ids are left out.
    fn companies(&self, ids: &[&str]) -> Result<Vec<Company>, StoreError>;
    /// The companies of the contacts whose internal keys lie in
    /// `[range.0, range.1)`, with their signals, for a rebuild to read
    /// before it scans that range; `None` where one company is read about
    /// as cheaply as many (the rebuild then reads each on first use, as a
    /// store over a network could not afford to: a round trip each).
    fn companies_in_range(&self, _range: (i64, i64)) -> Result<Option<Vec<Company>>, StoreError> {
        Ok(None)
    }
    /// Contacts a pass at `now` must rescore: events after `after_seq`,
    /// time-dependent terms due, profile or company changed, never scored.
    /// Each as (internal key, id).
    fn rescore_candidates(
        &self,
        now: Timestamp,
        after_seq: i64,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// What rescoring one contact needs, by internal key: the contact, its
    /// events (oldest first) and its stored score.
    #[allow(clippy::type_complexity)]
    fn rescore_input(
        &self,
        key: i64,
    ) -> Result<Option<(Contact, Vec<Event>, Option<StoredScore>)>, StoreError>;
    /// A contact with its company and events (oldest first).
    #[allow(clippy::type_complexity)]
    fn scoring_input(
        &self,
        id: &str,
    ) -> Result<Option<(Contact, Option<Company>, Vec<Event>)>, StoreError>;
    fn stored_score(&self, id: &str) -> Result<Option<StoredScore>, StoreError>;
    /// Snapshots of a contact, oldest first, optionally from `since` on.
    fn score_history(
        &self,
        id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Snapshot>, StoreError>;
    /// The same, by internal key.
    fn score_history_at(
        &self,
        key: i64,
        since: Option<Timestamp>,
    ) -> Result<Vec<Snapshot>, StoreError>;
    /// Writes a batch in one transaction, with the pass's bookkeeping
    /// (`meta` written as given: progress marks go through
    /// [`Self::advance_mark`]). Each score is compared and set: it is
    /// written, with its snapshot and changes, only if the stored score is
    /// still the one the pass read ([`ScoreWrite::seen`]); otherwise
    /// another pass (of any process) scored the contact meanwhile and its
    /// changes stand, published once. A contact erased meanwhile writes
    /// nothing.
    fn save_scores(
        &self,
        batch: &[ScoreWrite],
        now: Timestamp,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError>;
    /// Published changes after `after_seq`, oldest first.
    fn score_changes(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredChange>, StoreError>;
    /// Stored scores per band.
    fn band_counts(&self) -> Result<BTreeMap<String, u64>, StoreError>;
    /// The lowest and highest internal contact keys, to split a rebuild
    /// into ranges that workers scan side by side.
    fn contact_bounds(&self) -> Result<Option<(i64, i64)>, StoreError>;
    /// What a full rebuild reads: the contacts whose internal keys lie in
    /// `[range.0, range.1)`, each with its events (oldest first) and its
    /// stored score, in one sequential pass.
    fn scan_for_rescore(
        &self,
        range: (i64, i64),
        f: &mut RescoreVisitor<'_>,
    ) -> Result<(), StoreError>;
}

/// Called by a rescoring scan with each contact's key, record, events
/// (borrowed: the scan fills them again for the next contact) and stored
/// score.
pub type RescoreVisitor<'a> =
    dyn FnMut(i64, Contact, &[Event], Option<StoredScore>) -> Result<(), StoreError> + 'a;

/// One entry of the decision log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoggedDecision {
    pub contact: String,
    pub at: Timestamp,
    pub followup: String,
    pub channel: String,
    pub decision: Verdict,
    pub until: Option<Timestamp>,
    /// As stored: rows written by an older version keep the reasons it
    /// wrote, so they are read back as JSON and shown as they are.
    pub reasons: serde_json::Value,
}

/// What planning one contact needs.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// The contact's internal key.
    pub key: i64,
    pub contact: Contact,
    pub company: Option<Arc<Company>>,
    /// What earlier passes folded of the history (every event at or before
    /// its `upto`); `None`: `older` starts at the beginning.
    pub memo: Option<HistoryMemo>,
    /// Events after the memo, up to the recent window, oldest first: to be
    /// folded, so they carry no id, no contact and no props but those of
    /// [`PlanRead::props_of`].
    pub older: Vec<Event>,
    /// Older events left out (see [`PlanRead::folded`]): the memo still
    /// moves past them.
    pub left_out: usize,
    /// Events of the recent window, oldest first, props included.
    pub recent: Vec<Event>,
    /// Sends claimed and not settled yet: the guard counts them already.
    pub reserved: Vec<Event>,
    pub score: Option<StoredScore>,
    /// Score changes from the instant asked for on.
    pub changes: Vec<StoredChange>,
    /// Every outbox row of the contact: what earlier passes planned.
    pub rows: Vec<Row>,
    /// The wake instant the last pass stored.
    pub wake: Option<Timestamp>,
    /// The prospect status the scoring pass stored (see [`crate::domain::desk`]).
    pub prospect: Option<String>,
}

/// Given a contact's key and its stored memo (`upto`, stored form), the
/// memo if a planning pass can trust it.
pub type MemoFilter<'a> = dyn Fn(i64, Timestamp, &[u8]) -> Option<HistoryMemo> + Sync + 'a;

/// A pass's progress through a numbered stream (events, score changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassMark<'a> {
    pub key: &'a str,
    /// The value the pass started from.
    pub seen: Option<i64>,
    /// Everything up to here was looked at.
    pub reached: i64,
}

/// How a planning pass reads its contacts.
#[derive(Clone, Copy)]
pub struct PlanRead<'a> {
    /// Score changes from this instant on.
    pub changes_since: Timestamp,
    /// Events after this instant are recent: triggers look at them.
    pub recent_from: Timestamp,
    /// The one event type whose props older events keep (call outcomes);
    /// the rest of older history is folded by type, channel and instant.
    pub props_of: &'a str,
    /// The only event types folding reads: older events of other types
    /// would change nothing and are left out.
    pub folded: &'a BTreeSet<String>,
    /// The stored memo of a contact (key, `upto`, stored form) if the pass
    /// can trust it; `None` reads the contact's whole history.
    pub memo: &'a MemoFilter<'a>,
    /// Events numbered above this arrived since the memos were written. A
    /// memo whose edge is at or after one of them missed it (an event that
    /// arrived late): the store reads that contact's whole history without
    /// asking `memo`. Checked per batch, where the contact's events are read
    /// anyway. `None`: no such check (the memos are not trusted).
    pub new_after: Option<i64>,
    pub companies: &'a CompanyCache,
}

/// Companies a pass has read, shared by its workers: contacts of one
/// company are read and decoded once per pass, not once per batch. Lives
/// for one pass, so it never serves a company older than the pass.
#[derive(Debug, Default)]
pub struct CompanyCache {
    known: Mutex<Known>,
    /// The pass reads every contact: the store may load every company at
    /// once (see [`CompanyCache::fill`]) instead of a few per batch.
    every: bool,
}

#[derive(Debug, Default)]
struct Known {
    companies: HashMap<String, Option<Arc<Company>>>,
    /// Every company of the store is in `companies`: an id not there is
    /// unknown, with no need to ask.
    complete: bool,
    /// [`CompanyCache::fill`] ran (done or declined).
    filled: bool,
}

impl Known {
    /// Every company of the store, loaded at once.
    fn take_all(&mut self, all: Vec<Company>) {
        self.companies
            .extend(all.into_iter().map(|c| (c.id.clone(), Some(Arc::new(c)))));
        self.complete = true;
    }
}

impl CompanyCache {
    /// Entries kept at most; past it the cache starts afresh.
    const LIMIT: usize = 200_000;

    /// For a pass over every contact.
    pub fn for_every_contact() -> Self {
        Self {
            every: true,
            ..Self::default()
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Once per pass over every contact, every company from `load` (`None`
    /// when the store has too many to hold; see [`CompanyCache::most`]).
    /// The other workers wait for it rather than read their own.
    pub fn fill<E>(
        &self,
        load: impl FnOnce(usize) -> Result<Option<Vec<Company>>, E>,
    ) -> Result<(), E> {
        if !self.every {
            return Ok(());
        }
        let mut known = self.known();
        if known.filled {
            return Ok(());
        }
        known.filled = true;
        if let Some(all) = load(Self::most())? {
            known.take_all(all);
        }
        Ok(())
    }

    /// [`CompanyCache::fill`] for a store that reads asynchronously: true
    /// for the one caller of the pass that is to load every company and
    /// hand them to [`CompanyCache::filled`]. The others go on meanwhile,
    /// reading their batches' companies.
    pub fn claim_fill(&self) -> bool {
        self.every && !std::mem::replace(&mut self.known().filled, true)
    }

    /// What the caller of [`CompanyCache::claim_fill`] loaded.
    pub fn filled(&self, all: Option<Vec<Company>>) {
        if let Some(all) = all {
            self.known().take_all(all);
        }
    }

    /// Sets each input's company if every company is known; false if not.
    pub fn resolve_inputs(&self, inputs: &mut [PlanInput]) -> bool {
        let Some(companies) = self.resolve(inputs.iter().map(|i| i.contact.company.as_deref()))
        else {
            return false;
        };
        for (input, company) in inputs.iter_mut().zip(companies) {
            input.company = company;
        }
        true
    }

    /// The most companies [`CompanyCache::fill`] takes.
    pub fn most() -> usize {
        Self::LIMIT / 2
    }

    /// The company of each id when every company is known (`None` for an
    /// unknown id or none); `None` when they are not.
    pub fn resolve<'i>(
        &self,
        ids: impl Iterator<Item = Option<&'i str>>,
    ) -> Option<Vec<Option<Arc<Company>>>> {
        let known = self.known();
        known.complete.then(|| {
            ids.map(|id| id.and_then(|id| known.companies.get(id).cloned().flatten()))
                .collect()
        })
    }

    /// The cached company of each id (`None` for an unknown one) and the
    /// ids still to read.
    #[allow(clippy::type_complexity)]
    pub fn lookup<'i>(
        &self,
        ids: &[&'i str],
    ) -> (HashMap<&'i str, Option<Arc<Company>>>, Vec<&'i str>) {
        let known = self.known();
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match known.companies.get(id) {
                Some(c) => {
                    found.insert(id, c.clone());
                }
                None => missing.push(id),
            }
        }
        (found, missing)
    }

    pub fn remember(&self, entries: impl IntoIterator<Item = (String, Option<Arc<Company>>)>) {
        let mut known = self.known();
        if known.companies.len() > Self::LIMIT {
            known.companies.clear();
            known.complete = false;
        }
        known.companies.extend(entries);
    }
}

impl std::fmt::Debug for PlanRead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanRead")
            .field("changes_since", &self.changes_since)
            .field("recent_from", &self.recent_from)
            .field("props_of", &self.props_of)
            .field("folded", &self.folded)
            .field("companies", &self.companies)
            .finish_non_exhaustive()
    }
}

/// A new outbox row with the arbitration's verdict on it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    pub send: NewSend,
    /// `planned`, `deferred`, `dropped` or `blocked`.
    pub state: State,
    /// When the follow-up was first planned: maximum deferral counts from here.
    pub first_due: Timestamp,
    /// Logged with the reasons.
    pub decision: Verdict,
    pub reasons: Vec<crate::domain::fatigue::admit::Why>,
}

/// What a planning pass writes for one contact.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanWrite {
    pub key: i64,
    pub rows: Vec<PlanRow>,
    /// Pending rows to drop (their nurture was left), with the reason.
    pub drops: Vec<(i64, String)>,
    pub wake: Option<Timestamp>,
    /// Written only when it differs from this, the stored one.
    pub wake_was: Option<Timestamp>,
    /// A new memo of the contact's history, when something was folded.
    pub memo: Option<HistoryMemo>,
}

/// Reads the inputs of a pass's batches, one batch after the other (see
/// [`PlanStore::plan_reader`]).
pub trait PlanReader {
    /// As [`PlanStore::plan_inputs`]; batches read through one reader may
    /// share a snapshot taken at most a few seconds before.
    fn plan_inputs(
        &mut self,
        keys: &[i64],
        read: &PlanRead<'_>,
    ) -> Result<Vec<PlanInput>, StoreError>;
}

/// The default [`PlanReader`]: each batch in a transaction of its own.
pub(crate) struct EachBatch<'a, S: ?Sized>(pub(crate) &'a S);

impl<S: PlanStore + ?Sized> PlanReader for EachBatch<'_, S> {
    fn plan_inputs(
        &mut self,
        keys: &[i64],
        read: &PlanRead<'_>,
    ) -> Result<Vec<PlanInput>, StoreError> {
        self.0.plan_inputs(keys, read)
    }
}

/// The planner's bookkeeping and the broadcasts (see [`crate::domain::followups`]).
pub trait PlanStore: Send + Sync {
    /// Contacts a planning pass at `now` must look at: events after
    /// `after_event_seq`, score changes after `after_change_seq`, or a wake
    /// instant reached. Internal keys, ascending.
    fn plan_candidates(
        &self,
        now: Timestamp,
        after_event_seq: i64,
        after_change_seq: i64,
    ) -> Result<Vec<i64>, StoreError>;
    /// Every contact's internal key, ascending.
    fn contact_keys(&self) -> Result<Vec<i64>, StoreError>;
    /// Contacts a worker of a pass reads, plans and writes at a time. A
    /// store whose batches each cost round trips and statement starts on a
    /// server takes more at once; an embedded one keeps its transactions
    /// (and the pass's memory) small.
    fn plan_chunk(&self) -> usize {
        1_000
    }
    fn contact_key(&self, id: &str) -> Result<Option<i64>, StoreError>;
    fn last_change_seq(&self) -> Result<i64, StoreError>;
    /// The inputs of several contacts (keys ascending), read in one
    /// transaction. Missing keys are left out; a contact whose memo
    /// `read.memo` refuses comes with its whole history.
    fn plan_inputs(&self, keys: &[i64], read: &PlanRead<'_>) -> Result<Vec<PlanInput>, StoreError>;
    /// A reader for one worker of a pass, whose successive batches may be
    /// read from one snapshot (a store's page cache then holds between
    /// batches). `full`: the pass reads every contact in key order and
    /// writes far more than an incremental one. By default each batch is
    /// read on its own.
    fn plan_reader(&self, _full: bool) -> Result<Box<dyn PlanReader + '_>, StoreError> {
        Ok(Box::new(EachBatch(self)))
    }
    /// Writes a batch in one transaction: new rows (a key already present is
    /// left as it is), drops, wake instants, memos and decisions. A contact
    /// erased since the pass read it gets none of them, and is no error.
    fn save_plan(&self, batch: &[PlanWrite], now: Timestamp) -> Result<(), StoreError>;
    /// Records how far a pass got (`marks`, numbers in `meta`) with other
    /// `meta` values, in one transaction. Each mark is compared and set: it
    /// becomes the pass's `reached` if it still holds the `seen` the pass
    /// started from; if another pass (of any process) moved it meanwhile,
    /// the lower of the two is kept, so that what either pass may have
    /// missed is looked at again.
    fn finish_pass(
        &self,
        marks: &[PassMark<'_>],
        meta: &[(&str, String)],
    ) -> Result<(), StoreError>;
    /// Stores a broadcast; false when its id exists (nothing changes), of
    /// two processes creating one id, one gets true.
    fn create_broadcast(&self, spec: &BroadcastSpec, now: Timestamp) -> Result<bool, StoreError>;
    fn broadcasts(&self) -> Result<Vec<BroadcastSpec>, StoreError>;
    /// Marks planning as needed and returns the mark's new value: a pass
    /// calls it as it starts, so that one cut short is resumed at the next
    /// start. Writes that call for planning (events, records, broadcasts)
    /// set the mark in their own transaction.
    fn request_plan(&self) -> Result<i64, StoreError>;
    /// True while a request for planning has not been met by a completed
    /// pass: something was accepted but not planned, or a pass was cut short.
    fn plan_requested(&self) -> Result<bool, StoreError>;
    /// A pass that started after request `upto` completed: the requests up
    /// to it are met (never moves back, so a slower pass cannot hide a
    /// request made after it started).
    fn plan_done(&self, upto: i64) -> Result<(), StoreError>;
}
