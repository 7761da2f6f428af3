//! The SQLite handle: one writer connection behind a mutex and a few reader
//! connections in a pool (WAL lets them read beside the writer).
//!
//! SQLite lets one writer in at a time, so the threads of a process take
//! turns at the writer's mutex, which wakes at once, instead of at the
//! file lock, whose busy handler sleeps in coarse steps; other processes
//! still meet at the file lock (IMMEDIATE transactions, busy timeout).
//! Event appends that queue up while a transaction runs are merged into the
//! next one (group commit): under load one transaction carries many
//! callers' events, which is what makes sustained ingest fast.
//!
//! Checkpoints (copying the WAL back into the database, with two fsyncs)
//! cost more than the inserts: the writer checkpoints every
//! [`WAL_CHECKPOINT_PAGES`] pages instead of SQLite's 1,000, so that pages
//! rewritten by successive group commits are copied back once; the WAL file
//! is then cut back to [`WAL_KEEP_BYTES`].

use super::conn::Conn;
use super::events::Dictionary;
use crate::adapters::group::GroupCommit;
use crate::core::model::{Company, Contact, Deal, Event, Timestamp};
use crate::domain::desk::StatusView;
use crate::domain::desk::campaigns::CampaignCounts;
use crate::domain::desk::kpis::CallRow;
use crate::domain::desk::today::Brief;
use crate::domain::ingest::{Incoming, Patch};
use crate::domain::outbox::{NewSend, Row, Settlement, State};
use crate::domain::scoring::StoredScore;
use crate::ports::store::desk::{CallTaskRow, DeskStore, DuplicateGroup, HotLeads, Listed, Ranked};
use crate::ports::store::retention::{Cut, Pruned, RetentionStore};
use crate::ports::store::ui::{
    ContactHit, DayCount, FollowupCount, PressureGrid, PressureList, PressureRow, UiReads,
};
use crate::ports::store::{
    Admission, Append, BroadcastSpec, Claimed, Counts, EachBatch, JobRun, LoggedDecision,
    OutboxStore, PassMark, PlanInput, PlanRead, PlanReader, PlanStore, PlanWrite, Props, Records,
    RescoreInput, RescoreVisitor, ScheduleStore, ScoreStore, ScoreWrite, Snapshot, StoreError,
    StoredChange, Upsert,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Idle reader connections kept open.
const READERS: usize = 8;
/// Page cache of a reader. Reads of a pass touch most pages once: at
/// 1,000,000 contacts 6 MB read as fast as 16 (the benchmarks of rescoring
/// and planning, alternated) and the passes' peak memory fell by 20–30 MB,
/// the two workers' connections filling theirs.
const READER_CACHE_MB: u32 = 6;
/// WAL pages between the writer's checkpoints (about 400 MB).
const WAL_CHECKPOINT_PAGES: i64 = 100_000;
/// WAL file size kept after a checkpoint.
const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;
/// How often [`Records::wait_for_events`] looks for other processes' events.
const EVENT_POLL: Duration = Duration::from_millis(100);

/// A shared handle on one SQLite store: `Send + Sync`, every method takes
/// `&self`. Clones are not needed: share it behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    busy_timeout: Duration,
    writer: Mutex<Conn>,
    readers: Mutex<Vec<Conn>>,
    /// Event names and props read so far, for every connection.
    dict: Arc<Dictionary>,
    /// Appends waiting for the writer (group commit).
    appends: GroupCommit,
    /// Bumped after each append through this handle: wakes the waiters of
    /// [`Records::wait_for_events`] at once.
    appended: (Mutex<u64>, Condvar),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the store, with a page cache
    /// of `cache_mb` megabytes for the writer.
    pub fn open(path: &Path, busy_timeout: Duration, cache_mb: u32) -> Result<Self, StoreError> {
        let dict = Arc::new(Dictionary::default());
        let writer = Conn::open(path, busy_timeout, cache_mb, true, dict.clone())?;
        let conn = writer.connection();
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        Ok(Self {
            path: path.to_path_buf(),
            busy_timeout,
            writer: Mutex::new(writer),
            readers: Mutex::default(),
            dict,
            appends: GroupCommit::default(),
            appended: (Mutex::new(0), Condvar::new()),
        })
    }

    /// Opens the store a configuration names.
    pub fn from_config(config: &crate::pipeline::config::Config) -> Result<Self, StoreError> {
        let timeout = Duration::from_secs(config.store.busy_timeout.seconds().max(1) as u64);
        let store = Self::open(&config.store_path(), timeout, config.store.cache_mb)?;
        store.set_default_country(&config.calls.default_country.to_ascii_uppercase())?;
        Ok(store)
    }

    /// Runs `f` on a pooled reader connection.
    fn read<T>(&self, f: impl FnOnce(&Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.reader()?;
        let out = f(&conn);
        self.give_back(conn);
        out
    }

    /// A reader connection from the pool, or a new one.
    fn reader(&self) -> Result<Conn, StoreError> {
        let pooled = lock(&self.readers).pop();
        match pooled {
            Some(c) => Ok(c),
            None => Conn::open(
                &self.path,
                self.busy_timeout,
                READER_CACHE_MB,
                false,
                self.dict.clone(),
            ),
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut pool = lock(&self.readers);
        if pool.len() < READERS {
            pool.push(conn);
        }
    }

    /// Runs `f` on the writer connection, alone in this process.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut lock(&self.writer))
    }

    /// Wakes the waiters of [`Records::wait_for_events`].
    fn appended_now(&self) {
        let (count, woken) = &self.appended;
        *lock(count) += 1;
        woken.notify_all();
    }
}

/// Trait methods that run on a reader connection.
macro_rules! reads {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        $( fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
            self.read(|c| c.$name($($arg),*))
        } )*
    };
}

/// Trait methods that run on the writer connection.
macro_rules! writes {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        $( fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
            self.write(|c| c.$name($($arg),*))
        } )*
    };
}

impl Records for SqliteStore {
    writes! {
        fn upsert_contacts(&self, batch: &[Patch]) -> Vec<Upsert>;
        fn upsert_contacts_checked(&self, batch: &[Patch]) -> crate::ports::store::ContactsWritten;
        fn begin_contact_load(&self) -> ();
        fn end_contact_load(&self) -> Vec<DuplicateGroup>;
        fn upsert_companies(&self, batch: &[Patch]) -> Vec<Upsert>;
        fn upsert_deals(&self, batch: &[Patch]) -> Vec<Upsert>;
        fn erase_contact(&self, id: &str) -> bool;
    }
    reads! {
        fn contact(&self, id: &str) -> Option<Contact>;
        fn for_each_contact(&self, f: &mut dyn FnMut(Contact)) -> ();
        fn company(&self, id: &str) -> Option<Company>;
        fn deals(&self) -> Vec<Deal>;
        fn events_of(&self, contact: &str) -> Vec<Event>;
        fn scan_histories(&self, f: &mut dyn FnMut(Contact, Vec<Event>)) -> ();
        fn last_event_seq(&self) -> i64;
        fn contacts_with_events_after(&self, seq: i64) -> Vec<String>;
        fn counts(&self) -> Counts;
        fn schema_version(&self) -> i64;
    }

    /// The caller's events join the queue; whoever holds the writer next
    /// commits the queue, so callers that arrive during a transaction
    /// share the next one.
    fn append_events(&self, batch: &[Incoming]) -> Result<Vec<Append>, StoreError> {
        self.appends.append(
            batch,
            self.writer.try_lock().ok(),
            || lock(&self.writer),
            |conn, all| {
                let out = conn.append_events(all);
                self.appended_now();
                out
            },
        )
    }

    fn wait_for_events(&self, after: i64, timeout: Duration) -> Result<i64, StoreError> {
        let deadline = Instant::now() + timeout;
        let (count, woken) = &self.appended;
        loop {
            let seen = *lock(count);
            let last = self.last_event_seq()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if last > after || left.is_zero() {
                return Ok(last);
            }
            // Until an append through this handle, or the next look at
            // what other processes wrote.
            let guard = lock(count);
            drop(
                woken
                    .wait_timeout_while(guard, left.min(EVENT_POLL), |c| *c == seen)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    /// Copies the log back into the database once it has grown past
    /// [`WAL_KEEP_BYTES`]. Otherwise the writer's own checkpoint (every
    /// [`WAL_CHECKPOINT_PAGES`]) falls inside whichever transaction crosses
    /// that mark: after a full pass, typically inside the next reaction to
    /// new events, which then takes three times as long. Passive: readers
    /// and the writer go on meanwhile; the writer starts the log again from
    /// its beginning at its next transaction.
    fn tidy(&self) -> Result<(), StoreError> {
        self.checkpoint_past(WAL_KEEP_BYTES.unsigned_abs())
    }
}

impl SqliteStore {
    /// A passive checkpoint if the log's file is larger than `bytes`: it
    /// is cut back to [`WAL_KEEP_BYTES`] when the log starts again, so a
    /// larger one holds that much written since.
    pub(super) fn checkpoint_past(&self, bytes: u64) -> Result<(), StoreError> {
        let mut log = self.path.clone().into_os_string();
        log.push("-wal");
        if std::fs::metadata(&log).is_ok_and(|m| m.len() > bytes) {
            self.read(Conn::checkpoint)?;
        }
        Ok(())
    }
}

impl OutboxStore for SqliteStore {
    writes! {
        fn enqueue(&self, batch: &[NewSend], now: Timestamp) -> Vec<bool>;
        fn claim_due(
            &self,
            now: Timestamp,
            lease_until: Timestamp,
            limit: u32,
            owner: &str,
            admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission
        ) -> Vec<Row>;
        fn claim_batch(
            &self,
            now: Timestamp,
            lease_until: Timestamp,
            limit: u32,
            owner: &str,
            admit: &mut dyn FnMut(&Row, &Contact, &[Event]) -> Admission
        ) -> Vec<Claimed>;
        fn settle(&self, seq: i64, owner: &str, how: &Settlement, now: Timestamp) -> bool;
        fn settle_many(&self, owner: &str, batch: &[(i64, Settlement, Timestamp)]) -> Vec<bool>;
        fn release_claims(&self, owner: &str, now: Timestamp) -> u64;
        fn note_waiting(&self, channel: &str, reason: &str) -> u64;
    }
    reads! {
        fn guard_input(&self, contact: &str) -> Option<(Contact, Vec<Event>)>;
        fn decisions(&self, contact: Option<&str>, limit: u32) -> Vec<LoggedDecision>;
        fn outbox_rows(&self, state: Option<State>, limit: u32) -> Vec<Row>;
        fn pending_of(&self, contact: &str) -> Vec<Row>;
        fn outbox_depth(&self) -> BTreeMap<State, u64>;
        fn next_due(&self) -> Option<Timestamp>;
        fn outbox_row(&self, key: &str) -> Option<Row>;
        fn delivered_on(&self, channels: &[String], limit: u32) -> Vec<Row>;
        fn event_by_dedup(&self, dedup: &[u8]) -> Option<(Props, Timestamp)>;
    }
}

impl RetentionStore for SqliteStore {
    writes! {
        fn prune(&self, cut: &Cut<'_>) -> Pruned;
    }
}

impl ScheduleStore for SqliteStore {
    writes! {
        fn claim_schedule(
            &self,
            schedule: &str,
            owner: &str,
            now: Timestamp,
            lease_until: Timestamp
        ) -> bool;
        fn renew_schedule(&self, schedule: &str, owner: &str, lease_until: Timestamp) -> bool;
        fn complete_schedule(&self, schedule: &str, owner: &str, last_tick: Timestamp) -> ();
        fn close_abandoned_runs(&self, schedule: &str, owner: &str, now: Timestamp) -> usize;
        fn start_job_run(&self, run: &JobRun) -> i64;
        fn finish_job_run(&self, id: i64, finished_at: Timestamp, outcome: &str) -> ();
    }
    reads! {
        fn last_tick(&self, schedule: &str) -> Option<Timestamp>;
        fn job_runs(&self, schedule: Option<&str>, limit: u32) -> Vec<JobRun>;
    }
}

impl ScoreStore for SqliteStore {
    writes! {
        fn advance_mark(&self, key: &str, expected: Option<i64>, new: i64) -> bool;
        fn take_changed(&self, owner: &str, now: Timestamp, lease_until: Timestamp) -> Vec<i64>;
        fn release_changed(&self, owner: &str) -> u64;
        fn renew_changed(&self, owner: &str, lease_until: Timestamp) -> u64;
        fn save_scores(&self, batch: &[ScoreWrite], now: Timestamp, meta: &[(&str, String)]) -> ();
    }
    reads! {
        fn meta(&self, key: &str) -> Option<String>;
        fn rescore_candidate_keys(&self, now: Timestamp, after_seq: i64) -> Vec<i64>;
        fn rescore_inputs(&self, keys: &[i64], out: &mut Vec<RescoreInput>) -> ();
        fn companies(&self, ids: &[&str]) -> Vec<Company>;
        fn rescore_candidates(&self, now: Timestamp, after_seq: i64) -> Vec<(i64, String)>;
        fn rescore_input(&self, key: i64) -> Option<(Contact, Vec<Event>, Option<StoredScore>)>;
        fn scoring_input(&self, id: &str) -> Option<(Contact, Option<Company>, Vec<Event>)>;
        fn stored_score(&self, id: &str) -> Option<StoredScore>;
        fn score_history(&self, id: &str, since: Option<Timestamp>) -> Vec<Snapshot>;
        fn score_history_at(&self, key: i64, since: Option<Timestamp>) -> Vec<Snapshot>;
        fn score_changes(&self, after_seq: i64, limit: u32) -> Vec<StoredChange>;
        fn band_counts(&self) -> BTreeMap<String, u64>;
        fn contact_bounds(&self) -> Option<(i64, i64)>;
        fn scan_for_rescore(
            &self,
            range: (i64, i64),
            f: &mut RescoreVisitor<'_>
        ) -> ();
    }
}

impl PlanStore for SqliteStore {
    writes! {
        fn save_plan(&self, batch: &[PlanWrite], now: Timestamp) -> ();
        fn finish_pass(&self, marks: &[PassMark<'_>], meta: &[(&str, String)]) -> ();
        fn create_broadcast(&self, spec: &BroadcastSpec, now: Timestamp) -> bool;
        fn request_plan(&self) -> i64;
        fn plan_done(&self, upto: i64) -> ();
    }
    /// An incremental pass reads scattered contacts, each batch through
    /// every table's upper pages: they stay cached in one snapshot. A full
    /// pass reads key ranges and writes far more: a snapshot held there
    /// would keep the writer's checkpoints from completing.
    fn plan_reader(&self, full: bool) -> Result<Box<dyn PlanReader + '_>, StoreError> {
        if full {
            return Ok(Box::new(EachBatch(self)));
        }
        Ok(Box::new(SnapshotReader {
            store: self,
            conn: Some(self.reader()?),
            since: None,
        }))
    }
    reads! {
        fn plan_candidates(&self, now: Timestamp, after_event_seq: i64, after_change_seq: i64) -> Vec<i64>;
        fn contact_keys(&self) -> Vec<i64>;
        fn contact_key(&self, id: &str) -> Option<i64>;
        fn last_change_seq(&self) -> i64;
        fn plan_inputs(&self, keys: &[i64], read: &PlanRead<'_>) -> Vec<PlanInput>;
        fn plan_requested(&self) -> bool;
        fn broadcasts(&self) -> Vec<BroadcastSpec>;
    }
}

/// How long a worker of a planning pass reads from one snapshot. A reader
/// whose snapshot moves to a newer one after a commit starts with an empty
/// page cache, so the workers of a pass, whose writes take turns between
/// their reads, would read every interior page of every table again for
/// each batch; a second bounds how long a snapshot holds checkpoints back.
pub const PLAN_SNAPSHOT: Duration = Duration::from_secs(1);

/// A planning worker's reader: one connection, its snapshot renewed after
/// [`PLAN_SNAPSHOT`].
struct SnapshotReader<'a> {
    store: &'a SqliteStore,
    /// Taken back to the pool when dropped.
    conn: Option<Conn>,
    /// When the open read transaction began.
    since: Option<Instant>,
}

impl SnapshotReader<'_> {
    fn end(&mut self) -> Result<(), StoreError> {
        if self.since.take().is_some()
            && let Some(conn) = &self.conn
        {
            conn.end_snapshot()?;
        }
        Ok(())
    }
}

impl PlanReader for SnapshotReader<'_> {
    fn plan_inputs(
        &mut self,
        keys: &[i64],
        read: &PlanRead<'_>,
    ) -> Result<Vec<PlanInput>, StoreError> {
        if self.since.is_some_and(|s| s.elapsed() >= PLAN_SNAPSHOT) {
            self.end()?;
        }
        let Some(conn) = &self.conn else {
            return Err(StoreError::Corrupt(
                "planning reader used after its end".into(),
            ));
        };
        if self.since.is_none() {
            conn.begin_snapshot()?;
            self.since = Some(Instant::now());
        }
        let out = conn.plan_inputs_in_snapshot(keys, read);
        if out.is_err() {
            self.end()?;
        }
        out
    }
}

impl Drop for SnapshotReader<'_> {
    fn drop(&mut self) {
        // A connection whose transaction would not end is not reused.
        if self.end().is_ok()
            && let Some(conn) = self.conn.take()
        {
            self.store.give_back(conn);
        }
    }
}

impl DeskStore for SqliteStore {
    fn prospect_status(&self, id: &str) -> Result<StatusView, StoreError> {
        self.read(|c| c.prospect_status(id))
    }
    fn briefs(&self, ids: &[String]) -> Result<Vec<Brief>, StoreError> {
        self.read(|c| c.briefs(ids))
    }
    fn with_status(
        &self,
        status: crate::domain::desk::ProspectStatus,
    ) -> Result<Vec<String>, StoreError> {
        self.read(|c| c.with_status(status))
    }
    fn never_called(&self, limit: u32) -> Result<Listed, StoreError> {
        self.read(|c| c.never_called(limit))
    }
    fn never_call_again(&self, limit: u32) -> Result<Listed, StoreError> {
        self.read(|c| c.never_call_again(limit))
    }
    fn documented_not_called(&self, limit: u32) -> Result<Listed, StoreError> {
        self.read(|c| c.documented_not_called(limit))
    }
    fn callbacks_overdue(&self, now: Timestamp, limit: u32) -> Result<Listed, StoreError> {
        self.read(|c| c.callbacks_overdue(now, limit))
    }
    fn callbacks_due(
        &self,
        until: Timestamp,
        hot: &HotLeads<'_>,
    ) -> Result<Vec<Ranked>, StoreError> {
        self.read(|c| c.callbacks_due(until, hot))
    }
    fn ranked(&self, ids: &[String], hot: &HotLeads<'_>) -> Result<Vec<Ranked>, StoreError> {
        self.read(|c| c.ranked(ids, hot))
    }
    fn hot_leads(&self, hot: &HotLeads<'_>, limit: u32) -> Result<Vec<Ranked>, StoreError> {
        self.read(|c| c.hot_leads(hot, limit))
    }
    fn hot_lead_count(&self, hot: &HotLeads<'_>) -> Result<u64, StoreError> {
        self.read(|c| c.hot_lead_count(hot))
    }
    fn call_tasks(
        &self,
        channels: &[String],
        until: Timestamp,
    ) -> Result<Vec<CallTaskRow>, StoreError> {
        self.read(|c| c.call_tasks(channels, until))
    }
    fn calls_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        owner: Option<&str>,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.read(|c| c.calls_between(from, to, owner))
    }
    fn score_values(&self) -> Result<Vec<i64>, StoreError> {
        self.read(|c| c.score_values())
    }
    fn duplicate_groups(&self) -> Result<Vec<DuplicateGroup>, StoreError> {
        self.read(|c| c.duplicate_groups())
    }
    fn duplicates_of(&self, ids: &[String]) -> Result<Vec<(String, DuplicateGroup)>, StoreError> {
        self.read(|c| c.duplicates_of(ids))
    }
    fn campaign_counts(&self, campaigns: &[String]) -> Result<Vec<CampaignCounts>, StoreError> {
        self.read(|c| c.campaign_counts(campaigns))
    }
}

impl SqliteStore {
    /// Records the country of national phone numbers (`[calls]
    /// default_country`): contacts written from now on are keyed with it.
    pub fn set_default_country(&self, country: &str) -> Result<(), StoreError> {
        self.write(|c| c.set_default_country(country))
    }
}

impl UiReads for SqliteStore {
    fn score_histogram(&self, width: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        self.read(|c| c.score_histogram(width))
    }
    fn band_moves(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        self.read(|c| c.band_moves(from, to))
    }
    fn outbox_by_day(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        self.read(|c| c.outbox_by_day(from, to))
    }
    fn decision_reasons(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.read(|c| c.decision_reasons(from, to))
    }
    fn outbox_by_followup(&self) -> Result<Vec<FollowupCount>, StoreError> {
        self.read(|c| c.outbox_by_followup())
    }
    fn search_contacts(&self, q: &str, limit: u32) -> Result<Vec<ContactHit>, StoreError> {
        self.read(|c| c.search_contacts(q, limit))
    }
    fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(|c| c.oldest_pending())
    }
    fn replace_pressure(&self, rows: &[PressureRow], at: Timestamp) -> Result<(), StoreError> {
        self.write(|c| c.replace_pressure(rows, at))
    }
    fn pressure_grid(&self) -> Result<PressureGrid, StoreError> {
        self.read(|c| c.pressure_grid())
    }
    fn pressure_list(
        &self,
        which: PressureList,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<PressureRow>, u64), StoreError> {
        self.read(|c| c.pressure_list(which, offset, limit))
    }
}
