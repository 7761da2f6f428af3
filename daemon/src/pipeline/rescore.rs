//! A rescoring pass: the one part of scoring that touches the store.
//!
//! Incremental by default: it rescores only contacts with new events, whose
//! time-dependent terms are due (`next_change_at`), or whose profile or
//! company changed. A full rebuild streams every contact with its history in
//! one sequential read; it runs when asked, on the first pass, and whenever
//! the scoring rules changed. Both give the same scores.

use crate::core::condition::{Standing, Subject};
use crate::core::model::{Company, Contact, Event, Timestamp};
use crate::domain::desk::campaigns::CampaignFacts;
use crate::domain::desk::{DeskKind, ProspectStatus};
use crate::domain::scoring::StoredScore;
use crate::domain::scoring::changes::{ChangeDetector, ScorePoint};
use crate::domain::scoring::model::{ScoreCard, ScoringModel};
use crate::domain::scoring::points::Points;
use crate::pipeline::config::Config;
use crate::ports::store::desk::HotLead;
use crate::ports::store::{RescoreInput, ScoreWrite, Store, StoreError, StoredChange};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

const LAST_SEQ: &str = "rescore.last_event_seq";
const RULES: &str = "rescore.rules";
/// Writes are flushed in transactions of this many contacts.
const FLUSH: usize = 10_000;
/// An incremental pass reads its contacts in sorted batches of this many,
const READ_BATCH: usize = 512;
/// and writes once it holds this many scores, if no other worker writes.
const EAGER_FLUSH: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("scoring rules: {0}")]
    Rules(#[from] crate::domain::scoring::model::ScoringError),
    #[error("campaigns: {0}")]
    Campaigns(String),
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PassReport {
    pub full: bool,
    /// Contacts scored.
    pub examined: usize,
    /// Contacts whose score or band changed (a snapshot each).
    pub changed: usize,
    /// Band crossings and jumps published.
    pub changes: usize,
    /// Contacts whose rows were written: a new score, or a desk row or
    /// campaign figures that changed. The others cost no write.
    pub written: usize,
}

/// Fingerprint of the rules: a change of rules forces a full rebuild.
pub fn rules_fingerprint(config: &Config) -> String {
    // The desk's rules too: the pass maintains the prospect status.
    let text = serde_json::to_string(&config.scoring).unwrap_or_default()
        + &config.desk_rules().fingerprint();
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// How long a pass holds the changed contacts it took from the queue
/// without renewing: past it (a pass that died), another pass takes them.
/// A running pass renews it every third of it.
const TAKE_LEASE: chrono::Duration = chrono::Duration::minutes(1);

/// Names the passes of this process apart in the store's queue.
static PASSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs one pass at `now` over `store`.
pub fn rescore(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
    force_full: bool,
) -> Result<PassReport, PassError> {
    let owner = format!(
        "rescore-{}-{}",
        std::process::id(),
        PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let taken = store.take_changed(&owner, now, now + TAKE_LEASE)?;
    let out = if taken.is_empty() {
        rescore_taken(store, config, now, force_full, taken)
    } else {
        holding(store, &owner, now, || {
            rescore_taken(store, config, now, force_full, taken)
        })
    };
    // What was rescored left the queue; the rest goes back, even on error.
    let released = store.release_changed(&owner);
    let report = out?;
    released?;
    Ok(report)
}

/// Runs `pass` while renewing `owner`'s lease on the contacts it took, so
/// that a long pass keeps them and a dead one lets them go within
/// [`TAKE_LEASE`]. Leases run on the pass's clock: `now` plus the time
/// spent.
fn holding<T>(store: &dyn Store, owner: &str, now: Timestamp, pass: impl FnOnce() -> T) -> T {
    let beat = TAKE_LEASE.to_std().unwrap_or_default() / 3;
    let started = std::time::Instant::now();
    let (done, stop) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(beat) {
                let spent = chrono::Duration::from_std(started.elapsed()).unwrap_or(TAKE_LEASE);
                if let Err(e) = store.renew_changed(owner, now + spent + TAKE_LEASE) {
                    tracing::warn!(error = %e, "cannot renew the lease on changed contacts");
                }
            }
        });
        let out = pass();
        drop(done);
        out
    })
}

fn rescore_taken(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
    force_full: bool,
    taken: Vec<i64>,
) -> Result<PassReport, PassError> {
    let model = ScoringModel::compile(&config.scoring)?;
    let detector = ChangeDetector::new(&config.scoring.changes);
    let write_turn = std::sync::Mutex::new(());
    let desk = config.desk_rules();
    // The campaigns' targets, which the pass judges clickers against.
    let targets =
        crate::pipeline::report::campaign_targets(store, config).map_err(|e| match e {
            crate::pipeline::report::ReportError::Store(e) => PassError::Store(e),
            other => PassError::Campaigns(other.to_string()),
        })?;
    let fingerprint = rules_fingerprint(config);
    let same_rules = store.meta(RULES)?.as_deref() == Some(fingerprint.as_str());
    let shared = Shared {
        store,
        desk: &desk,
        mark_seed: crate::domain::desk::MarkSeed::new(&desk),
        targets: &targets,
        window: config.calls.conversion_window.0,
        model: &model,
        detector: &detector,
        now,
        write_turn: &write_turn,
    };
    let last_seq = store.meta(LAST_SEQ)?.and_then(|v| v.parse::<i64>().ok());
    // Read before looking for work: anything committed later has a higher seq.
    let mark = store.last_event_seq()?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let incremental = last_seq.is_some() && same_rules && !force_full;
    let reports: Vec<Result<PassReport, PassError>> = match last_seq {
        Some(seq) if incremental => {
            let mut ids = store.rescore_candidate_keys(now, seq)?;
            if !taken.is_empty() {
                ids.extend(taken);
                ids.sort_unstable();
                ids.dedup();
            }
            let chunk = ids.len().div_ceil(workers).max(1);
            std::thread::scope(|s| {
                let handles: Vec<_> = ids
                    .chunks(chunk)
                    .map(|part| s.spawn(move || shared.incremental(part)))
                    .collect();
                handles.into_iter().map(join).collect()
            })
        }
        _ => match store.contact_bounds()? {
            None => Vec::new(),
            Some((lo, hi)) => std::thread::scope(|s| {
                let handles: Vec<_> = split(lo, hi + 1, workers)
                    .into_iter()
                    .map(|range| s.spawn(move || shared.full(range)))
                    .collect();
                handles.into_iter().map(join).collect()
            }),
        },
    };
    let mut report = PassReport {
        full: !incremental,
        ..PassReport::default()
    };
    for r in reports {
        let r = r?;
        report.examined += r.examined;
        report.changed += r.changed;
        report.changes += r.changes;
        report.written += r.written;
    }
    advance(store, LAST_SEQ, last_seq, mark)?;
    store.save_scores(&[], now, &[(RULES, fingerprint)])?;
    tracing::info!(
        full = report.full,
        examined = report.examined,
        changed = report.changed,
        changes = report.changes,
        written = report.written,
        workers,
        "rescoring pass done"
    );
    Ok(report)
}

/// Moves a pass's mark from `seen` to `reached` (compare-and-set); if
/// another pass moved it meanwhile, the lower of the two stays, so that
/// what either pass may have missed is rescored again.
fn advance(
    store: &dyn Store,
    key: &str,
    seen: Option<i64>,
    reached: i64,
) -> Result<(), StoreError> {
    let mut expected = seen;
    while !store.advance_mark(key, expected, reached)? {
        let current = store.meta(key)?.and_then(|v| v.parse::<i64>().ok());
        if current.is_some_and(|c| c <= reached) {
            return Ok(());
        }
        expected = current;
    }
    Ok(())
}

/// Workers beyond the cores only contend for the write lock.
const MAX_WORKERS: usize = 4;

fn join(
    h: std::thread::ScopedJoinHandle<'_, Result<PassReport, PassError>>,
) -> Result<PassReport, PassError> {
    h.join().unwrap_or_else(|_| {
        Err(PassError::Store(StoreError::Corrupt(
            "a rescoring worker panicked".into(),
        )))
    })
}

/// `[lo, hi)` cut into at most `n` contiguous ranges.
fn split(lo: i64, hi: i64, n: usize) -> Vec<(i64, i64)> {
    let n = n.max(1) as i64;
    let step = ((hi - lo) / n).max(1);
    let mut out = Vec::new();
    let mut start = lo;
    while start < hi {
        let end = if out.len() as i64 == n - 1 {
            hi
        } else {
            (start + step).min(hi)
        };
        out.push((start, end));
        start = end;
    }
    out
}

/// What every worker of a pass shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    store: &'a dyn Store,
    desk: &'a crate::domain::desk::DeskRules,
    mark_seed: crate::domain::desk::MarkSeed,
    targets: &'a [crate::pipeline::report::Target],
    window: chrono::Duration,
    model: &'a ScoringModel,
    detector: &'a ChangeDetector,
    now: Timestamp,
    /// Workers take turns to write: waiting here wakes at once, whereas
    /// SQLite's busy handler sleeps in coarse steps.
    write_turn: &'a std::sync::Mutex<()>,
}

impl Shared<'_> {
    fn pass(&self) -> Pass<'_> {
        Pass {
            desk: self.desk,
            mark_seed: self.mark_seed,
            targets: self.targets,
            window: self.window,
            model: self.model,
            detector: self.detector,
            now: self.now,
            writes: Vec::new(),
            report: PassReport::default(),
            companies: HashMap::new(),
            write_turn: self.write_turn,
        }
    }

    /// Rescores the given contacts.
    fn incremental(&self, keys: &[i64]) -> Result<PassReport, PassError> {
        let store = self.store;
        let mut pass = self.pass();
        let mut inputs = Vec::new();
        for batch in keys.chunks(READ_BATCH) {
            store.rescore_inputs(batch, &mut inputs)?;
            pass.load_companies(store, &inputs)?;
            for (key, contact, events, previous) in inputs.drain(..) {
                let company = pass.company(store, contact.company.as_deref())?;
                pass.score(key, &contact, company.as_deref(), &events, previous)?;
            }
            pass.flush_if_free(store)?;
        }
        pass.finish(store)?;
        Ok(pass.report)
    }

    /// Rebuilds the contacts of one range of internal keys.
    fn full(&self, range: (i64, i64)) -> Result<PassReport, PassError> {
        let store = self.store;
        let mut pass = self.pass();
        pass.remember(store.companies_in_range(range)?.unwrap_or_default());
        store.scan_for_rescore(range, &mut |key, contact, events, previous| {
            let company = pass.company(store, contact.company.as_deref())?;
            pass.score(key, &contact, company.as_deref(), events, previous)?;
            pass.flush(store)
        })?;
        pass.finish(store)?;
        Ok(pass.report)
    }
}

struct Pass<'a> {
    desk: &'a crate::domain::desk::DeskRules,
    mark_seed: crate::domain::desk::MarkSeed,
    targets: &'a [crate::pipeline::report::Target],
    window: chrono::Duration,
    model: &'a ScoringModel,
    detector: &'a ChangeDetector,
    now: Timestamp,
    writes: Vec<ScoreWrite>,
    report: PassReport,
    companies: HashMap<String, Option<Arc<Company>>>,
    write_turn: &'a std::sync::Mutex<()>,
}

impl Pass<'_> {
    /// A company, read once per pass and worker.
    fn company(
        &mut self,
        store: &dyn Store,
        id: Option<&str>,
    ) -> Result<Option<Arc<Company>>, StoreError> {
        let Some(id) = id else { return Ok(None) };
        if let Some(c) = self.companies.get(id) {
            return Ok(c.clone());
        }
        let c = store.company(id)?.map(Arc::new);
        self.companies.insert(id.to_string(), c.clone());
        Ok(c)
    }

    /// Keeps `companies` for the rest of the pass.
    fn remember(&mut self, companies: Vec<Company>) {
        for company in companies {
            self.companies
                .insert(company.id.clone(), Some(Arc::new(company)));
        }
    }

    /// Reads the companies of `inputs` not read yet, a few queries for all.
    fn load_companies(
        &mut self,
        store: &dyn Store,
        inputs: &[RescoreInput],
    ) -> Result<(), StoreError> {
        let mut missing: Vec<&str> = inputs
            .iter()
            .filter_map(|(_, contact, _, _)| contact.company.as_deref())
            .filter(|id| !self.companies.contains_key(*id))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        self.remember(store.companies(&missing)?);
        // Unknown companies are remembered too, as the point read does.
        for id in missing {
            self.companies.entry(id.to_string()).or_insert(None);
        }
        Ok(())
    }

    fn score(
        &mut self,
        key: i64,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
        previous: Option<StoredScore>,
    ) -> Result<(), StoreError> {
        self.report.examined += 1;
        let card = self
            .model
            .score_unexplained(contact, company, events, self.now);
        let (snapshot, changes) = match &previous {
            None => (true, self.first_change(&card)),
            Some(p) if p.score == card.score.0 && *p.band == *card.band => (false, Vec::new()),
            Some(p) => (true, self.changes(p, &card)),
        };
        let unchanged = previous
            .as_ref()
            .is_some_and(|p| !snapshot && p.next_change_at == card.next_change_at);
        if snapshot {
            self.report.changed += 1;
        }
        self.report.changes += changes.len();
        // A call, a meeting or a reaction may leave the score as it was.
        let upto = events.partition_point(|e| e.at <= self.now);
        let desk = self.desk.row(contact, &events[..upto]);
        let in_target = match &desk {
            Some(d)
                if d.events
                    .iter()
                    .any(|e| e.kind == DeskKind::Click && !e.key.is_empty()) =>
            {
                self.in_target(contact, company, &events[..upto], &card)
            }
            _ => Vec::new(),
        };
        // A hot lead the desk may call (see `calls today`).
        let callable = desk.as_ref().is_none_or(|d| {
            d.do_not_call.is_none()
                && !matches!(
                    d.status.status,
                    ProspectStatus::Stopped | ProspectStatus::Lost
                )
        });
        let hot_lead = (callable && self.desk.config.hot_bands.iter().any(|b| *b == *card.band))
            .then(|| HotLead {
                owner: contact.owner.clone(),
            });
        let campaigns = CampaignFacts {
            window: self.window,
            in_target,
        };
        let desk_mark = crate::domain::desk::mark(
            self.mark_seed,
            desk.as_ref(),
            &campaigns,
            hot_lead.as_ref().map(|h| h.owner.as_deref()),
        );
        // Without a mark (a store that keeps none, a score written before
        // marks), only a contact with no desk row and out of the call queue
        // has nothing more to write.
        let same_desk = previous.as_ref().is_some_and(|p| match p.desk_mark {
            Some(m) => m == desk_mark,
            None => desk.is_none() && hot_lead.is_none(),
        });
        if !unchanged || !same_desk {
            // The snapshots of the jump window travel with the score.
            let since = self.now - self.detector.window();
            let mut recent: Vec<(Timestamp, i64)> = previous
                .as_ref()
                .map(|p| {
                    p.recent
                        .iter()
                        .copied()
                        .filter(|(at, _)| *at >= since)
                        .collect()
                })
                .unwrap_or_default();
            if snapshot {
                recent.push((self.now, card.score.0));
            }
            self.report.written += 1;
            self.writes.push(ScoreWrite {
                key,
                recent,
                contact: contact.id.clone(),
                score: card.score.0,
                band: card.band.to_string(),
                next_change_at: card.next_change_at,
                snapshot,
                changes,
                seen: previous.as_ref().map(|p| p.scored_at),
                desk,
                campaigns,
                desk_mark,
                hot_lead,
            });
        }
        Ok(())
    }

    /// The campaigns whose target the contact is in now (for a clicker).
    fn in_target(
        &self,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
        card: &ScoreCard,
    ) -> Vec<String> {
        let band: &str = &card.band;
        let subject = Subject::new(contact, company, events, self.now).with_standing(Standing {
            band: Some(band),
            score: Some(card.score.as_f64()),
            call: None,
            prospect: None,
        });
        self.targets
            .iter()
            .filter(|t| t.holds(&subject, Some(band)))
            .map(|t| t.name.clone())
            .collect()
    }

    fn first_change(&self, card: &ScoreCard) -> Vec<StoredChange> {
        self.detector
            .first(self.model, card, self.now)
            .into_iter()
            .map(stored)
            .collect()
    }

    fn changes(&self, previous: &StoredScore, card: &ScoreCard) -> Vec<StoredChange> {
        let history: Vec<ScorePoint> = previous
            .recent
            .iter()
            .map(|&(at, score)| ScorePoint {
                at,
                score: Points(score),
            })
            .collect();
        let before = ScoreCard {
            contact: card.contact.clone(),
            score: Points(previous.score),
            band: Arc::from(previous.band.as_str()),
            profile: Points::ZERO,
            behaviour: Points::ZERO,
            negative: Points::ZERO,
            inactivity: Points::ZERO,
            contributions: Vec::new(),
            next_change_at: None,
        };
        self.detector
            .detect(
                self.model,
                &before,
                previous.scored_at,
                &history,
                card,
                self.now,
            )
            .into_iter()
            .map(stored)
            .collect()
    }

    fn flush(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if self.writes.len() >= FLUSH {
            self.finish(store)?;
        }
        Ok(())
    }

    /// Writes what is pending if no other worker is writing: a worker's
    /// writes then overlap the others' reads instead of all queueing at the
    /// end of the pass behind one lock.
    fn flush_if_free(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if self.writes.len() >= FLUSH {
            return self.finish(store);
        }
        if self.writes.len() < EAGER_FLUSH {
            return Ok(());
        }
        let _turn = match self.write_turn.try_lock() {
            Ok(turn) => turn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        store.save_scores(&self.writes, self.now, &[])?;
        self.writes.clear();
        Ok(())
    }

    fn finish(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if !self.writes.is_empty() {
            let _turn = self
                .write_turn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            store.save_scores(&self.writes, self.now, &[])?;
            self.writes.clear();
        }
        Ok(())
    }
}

fn stored(c: crate::domain::scoring::changes::ScoreChange) -> StoredChange {
    StoredChange {
        seq: 0,
        contact: c.contact,
        at: c.at,
        kind: c.kind.as_str().to_string(),
        from_score: c.from_score.0,
        to_score: c.to_score.0,
        from_band: c.from_band,
        to_band: c.to_band,
        since: c.since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ingest::{Format, Incoming, Kind, read_lines};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    const KINDS: [&str; 10] = [
        "email_open",
        "email_click",
        "page_visit",
        "download",
        "demo_request",
        "email_sent",
        "call",
        "unsubscribe",
        "trade_show_visit",
        "email_reply",
    ];
    const URLS: [&str; 3] = [
        "https://x.example/pricing",
        "https://x.example/careers",
        "https://x.example/blog",
    ];

    fn config(dir: &Path) -> Config {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
        let text = std::fs::read_to_string(&file).expect("shipped config");
        let db = dir.join("s.db").display().to_string();
        Config::parse(&text, &file, &|name| {
            (name == "RELANCE_DB").then(|| db.clone())
        })
        .expect("valid")
    }

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z")
            .expect("valid")
            .with_timezone(&chrono::Utc)
    }

    fn seed(store: &dyn Store) {
        let companies =
            "id,headcount,sector,foreign_subsidiaries\nbig,900,retail,0\nmid,120,industry,2\n";
        let contacts = "id,company,title\nc0,mid,DRH\nc1,mid,Stagiaire RH\nc2,big,DAF\nc3,mid,Directeur RH\nc4,,DRH\nc5,big,DRH\n";
        for (csv, kind) in [(companies, Kind::Company), (contacts, Kind::Contact)] {
            let batch: Vec<_> = read_lines(csv.as_bytes(), Format::Csv, kind)
                .expect("csv")
                .map(|l| l.item.expect("valid"))
                .collect();
            match kind {
                Kind::Company => store.upsert_companies(&batch).expect("companies"),
                _ => store.upsert_contacts(&batch).expect("contacts"),
            };
        }
    }

    fn event(contact: usize, kind: usize, minutes: i64, url: usize) -> Incoming {
        let mut props = serde_json::Map::new();
        if KINDS[kind] == "page_visit" {
            props.insert("url".into(), URLS[url].into());
        }
        Incoming::Contact(crate::core::model::Event {
            id: None,
            contact: format!("c{contact}"),
            kind: KINDS[kind].into(),
            at: t0() + chrono::Duration::minutes(minutes),
            channel: None,
            props,
        })
    }

    fn scores(config: &Config) -> BTreeMap<String, (i64, String, Option<Timestamp>)> {
        let store = crate::adapters::sqlite::open(config).expect("store");
        (0..6)
            .filter_map(|i| store.stored_score(&format!("c{i}")).expect("read"))
            .map(|s| (s.contact, (s.score, s.band, s.next_change_at)))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

        #[test]
        fn incremental_passes_agree_with_a_full_rebuild(
            batches in prop::collection::vec(
                (prop::collection::vec((0..6usize, 0..10usize, 0..200_000i64, 0..3usize), 0..12), 1..400_000i64),
                1..6,
            ),
        ) {
            let a = tempfile::tempdir().expect("tmp");
            let b = tempfile::tempdir().expect("tmp");
            let (ca, cb) = (config(a.path()), config(b.path()));
            let sa = crate::adapters::sqlite::open(&ca).expect("store");
            seed(&*sa);
            let mut now = t0();
            let mut all = Vec::new();
            for (events, advance) in &batches {
                let batch: Vec<Incoming> = events.iter().map(|&(c, k, m, u)| event(c, k, m, u)).collect();
                sa.append_events(&batch).expect("append");
                all.extend(batch);
                now += chrono::Duration::minutes(*advance);
                rescore(&*sa, &ca, now, false).expect("incremental pass");
            }
            let sb = crate::adapters::sqlite::open(&cb).expect("store");
            seed(&*sb);
            sb.append_events(&all).expect("append");
            let full = rescore(&*sb, &cb, now, true).expect("full rebuild");
            prop_assert!(full.full);
            prop_assert_eq!(scores(&ca), scores(&cb));
        }
    }

    #[test]
    fn rule_changes_force_a_full_rebuild_and_profile_changes_are_rescored() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path());
        let store = crate::adapters::sqlite::open(&cfg).expect("store");
        seed(&*store);
        assert!(
            rescore(&*store, &cfg, t0(), false).expect("pass").full,
            "first pass rebuilds"
        );
        let again = rescore(&*store, &cfg, t0(), false).expect("pass");
        assert_eq!((again.full, again.examined), (false, 0));

        // c4 becomes an intern: only c4 is rescored, and it drops.
        let before = store
            .stored_score("c4")
            .expect("read")
            .expect("scored")
            .score;
        let patch: Vec<_> = read_lines(
            "id,title\nc4,Stagiaire\n".as_bytes(),
            Format::Csv,
            Kind::Contact,
        )
        .expect("csv")
        .map(|l| l.item.expect("valid"))
        .collect();
        store.upsert_contacts(&patch).expect("update");
        let pass = rescore(&*store, &cfg, t0(), false).expect("pass");
        assert_eq!((pass.full, pass.examined, pass.changed), (false, 1, 1));
        assert!(
            store
                .stored_score("c4")
                .expect("read")
                .expect("scored")
                .score
                < before
        );
        assert_eq!(store.score_history("c4", None).expect("film").len(), 2);

        let mut changed = cfg.clone();
        changed.scoring.bands[0].min = Some(140.0);
        assert!(
            rescore(&*store, &changed, t0(), false).expect("pass").full,
            "new rules rebuild everything"
        );
    }
}
