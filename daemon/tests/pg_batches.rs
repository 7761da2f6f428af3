//! The PostgreSQL store writes a scoring or planning batch with one
//! statement per table (issue 18): what lands must be what the SQLite
//! store, contact by contact, lands. The same batches, then whole passes
//! of the real pipelines under the shipped rules, run on both stores, and
//! everything they wrote is read back and compared: scores, history,
//! published changes, desk rows and events, campaign figures, outbox rows,
//! decisions and wake instants.

#![allow(clippy::unwrap_used)]

#[path = "common/pg.rs"]
mod pg_scratch;

use chrono::{DateTime, Duration, Utc};
use relance::adapters::postgres::PgStore;
use relance::adapters::sqlite::SqliteStore;
use relance::core::model::{Event, FollowUpKind, Timestamp};
use relance::domain::desk::campaigns::CampaignFacts;
use relance::domain::desk::{DeskEvent, DeskKind, DeskRow, StatusView};
use relance::domain::fatigue::Verdict;
use relance::domain::ingest::{Incoming, Patch};
use relance::domain::outbox::{NewSend, Payload, Row, Settlement, State, idempotency_key};
use relance::ports::store::{
    Admission, AdmissionVerdict, CompanyCache, PlanRead, PlanRow, PlanWrite, ScoreWrite,
    StoreHandle, StoredChange,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The same empty store on both backends.
struct Both {
    sqlite: StoreHandle,
    pg: StoreHandle,
    _dir: tempfile::TempDir,
    _db: pg_scratch::Scratch,
}

impl Both {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sqlite: StoreHandle = Arc::new(
            SqliteStore::open(
                &dir.path().join("batches.db"),
                std::time::Duration::from_secs(60),
                16,
            )
            .unwrap(),
        );
        let db = pg_scratch::Scratch::new("batches");
        let pg: StoreHandle = Arc::new(PgStore::open(&db.url(), 8).unwrap());
        Self {
            sqlite,
            pg,
            _dir: dir,
            _db: db,
        }
    }

    /// Runs `f` on each store, SQLite first.
    fn each(&self, f: impl Fn(&StoreHandle)) {
        f(&self.sqlite);
        f(&self.pg);
    }

    /// Asserts that `view` reads the same from both stores.
    fn agree<T: std::fmt::Debug + PartialEq>(&self, what: &str, view: impl Fn(&StoreHandle) -> T) {
        let (sqlite, pg) = (view(&self.sqlite), view(&self.pg));
        assert_eq!(
            sqlite, pg,
            "{what}: SQLite (left) and PostgreSQL (right) differ"
        );
    }
}

fn t(s: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn t0() -> Timestamp {
    t("2026-03-02T12:00:00Z")
}

fn contacts(store: &StoreHandle, ids: &[&str]) {
    let batch: Vec<Patch> = ids
        .iter()
        .map(|id| Patch {
            id: (*id).into(),
            ..Patch::default()
        })
        .collect();
    store.upsert_contacts(&batch).unwrap();
}

fn key(store: &StoreHandle, id: &str) -> i64 {
    store.contact_key(id).unwrap().unwrap()
}

fn allow(row: &Row) -> Admission {
    Admission {
        verdict: AdmissionVerdict::Allow {
            event_type: format!("{}_sent", row.channel),
        },
        reasons: Vec::new(),
    }
}

/// Claims every row due at `at` and settles it as delivered then; returns
/// them, by key (all of them: which of equally due rows a limit leaves
/// depends on their numbers, which differ between the stores).
fn deliver_due(store: &StoreHandle, at: Timestamp) -> Vec<Row> {
    let mut rows = store
        .claim_due(
            at,
            at + Duration::minutes(10),
            100_000,
            "d",
            &mut |row, _, _| allow(row),
        )
        .unwrap();
    let settled: Vec<_> = rows.iter().map(|r| (r.seq, Settlement::Sent, at)).collect();
    store.settle_many("d", &settled).unwrap();
    rows.sort_by(|a, b| a.idem_key.cmp(&b.idem_key));
    rows
}

/// Enqueues `sends` due at `at` and delivers them then.
fn deliver(store: &StoreHandle, sends: &[NewSend], at: Timestamp) {
    store.enqueue(sends, at).unwrap();
    assert_eq!(deliver_due(store, at).len(), sends.len());
}

fn send(contact: &str, followup: &str, n: usize, due_at: Timestamp) -> NewSend {
    NewSend {
        idem_key: idempotency_key(contact, followup, &n.to_string()),
        contact: contact.into(),
        followup: followup.into(),
        kind: FollowUpKind::Event,
        priority: 10,
        channel: "email".into(),
        due_at,
        payload: Payload::template("nurture_welcome"),
    }
}

fn change(
    contact: &str,
    at: Timestamp,
    kind: &str,
    from: (i64, &str),
    to: (i64, &str),
) -> StoredChange {
    StoredChange {
        seq: 0,
        contact: contact.into(),
        at,
        kind: kind.into(),
        from_score: from.0,
        to_score: to.0,
        from_band: from.1.into(),
        to_band: to.1.into(),
        since: at,
    }
}

fn score(key: i64, contact: &str, score: i64, band: &str, seen: Option<Timestamp>) -> ScoreWrite {
    ScoreWrite {
        key,
        contact: contact.into(),
        score,
        band: band.into(),
        next_change_at: Some(t0() + Duration::days(3)),
        snapshot: true,
        recent: vec![(t0(), score)],
        changes: Vec::new(),
        seen,
        desk: None,
        campaigns: CampaignFacts::default(),
        desk_mark: 0,
        hot_lead: None,
    }
}

fn desk(calls: u32, last_call: Option<(Timestamp, &str)>, events: Vec<DeskEvent>) -> DeskRow {
    DeskRow {
        status: StatusView::default(),
        calls,
        last_call: last_call.map(|(at, code)| (at, code.to_string())),
        callback_at: last_call.map(|(at, _)| at + Duration::days(2)),
        documentation_at: None,
        do_not_call: None,
        owner: Some("ana".into()),
        events,
    }
}

fn desk_event(at: Timestamp, kind: DeskKind, code: &str, key: &str) -> DeskEvent {
    DeskEvent {
        at,
        kind,
        code: code.into(),
        owner: "ana".into(),
        key: key.into(),
        reason: String::new(),
    }
}

/// Everything a scoring pass writes about `ids`, as the store reads it
/// back. `exact` (batches written by one writer): changes with their
/// numbers, and when each score was written. Else (whole passes) changes
/// sorted without numbers (workers commit in any order), and no instant of
/// writing: PostgreSQL keeps no fingerprint of the desk rows, so a pass
/// writes a contact with a desk row again, unchanged but for that instant.
fn scoring_view(store: &StoreHandle, ids: &[&str], exact: bool) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        // Not compared: the desk's fingerprint, which only SQLite keeps.
        let stored = store.stored_score(id).unwrap().map(|s| {
            let written = exact.then_some(s.scored_at);
            (s.score, s.band, s.next_change_at, written, s.recent)
        });
        out.push(format!("{id} score {stored:?}"));
        out.push(format!(
            "{id} history {:?}",
            store.score_history(id, None).unwrap()
        ));
        out.push(format!(
            "{id} status {:?}",
            store.prospect_status(id).unwrap()
        ));
    }
    let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    out.push(format!("briefs {:?}", store.briefs(&ids).unwrap()));
    let mut changes: Vec<String> = store
        .score_changes(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|c| {
            if exact {
                format!("{c:?}")
            } else {
                format!("{:?}", StoredChange { seq: 0, ..c })
            }
        })
        .collect();
    if !exact {
        changes.sort();
    }
    out.extend(changes);
    out.push(format!("bands {:?}", store.band_counts().unwrap()));
    let calls = store
        .calls_between(
            t0() - Duration::days(1000),
            t0() + Duration::days(1000),
            None,
        )
        .unwrap();
    out.push(format!("calls {calls:?}"));
    out.push(format!(
        "never called {:?}",
        store.never_called(1000).unwrap()
    ));
    out.push(format!(
        "callbacks {:?}",
        store
            .callbacks_overdue(t0() + Duration::days(1000), 1000)
            .unwrap()
    ));
    out
}

/// The outbox (rows sorted by key, without their numbers, which
/// PostgreSQL's identity hands out with gaps) and the decisions, sorted.
fn plan_view(store: &StoreHandle, followups: &[&str]) -> Vec<String> {
    let mut rows: Vec<String> = store
        .outbox_rows(None, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| format!("{:?}", Row { seq: 0, ..r }))
        .collect();
    rows.sort();
    let mut decisions: Vec<String> = store
        .decisions(None, 100_000)
        .unwrap()
        .iter()
        .map(|d| format!("{d:?}"))
        .collect();
    decisions.sort();
    rows.extend(decisions);
    let names: Vec<String> = followups.iter().map(|s| s.to_string()).collect();
    rows.push(format!(
        "campaigns {:?}",
        store.campaign_counts(&names).unwrap()
    ));
    rows
}

/// What the planner reads back of `ids`: wake instants and memos, by id
/// (the stores number contacts in another order).
fn planner_view(store: &StoreHandle, ids: &[&str]) -> Vec<String> {
    let keys: Vec<i64> = ids.iter().map(|id| key(store, id)).collect();
    let folded = BTreeSet::new();
    let companies = CompanyCache::default();
    let read = PlanRead {
        changes_since: t0() - Duration::days(1000),
        recent_from: t0() - Duration::days(1000),
        props_of: "call",
        folded: &folded,
        memo: &|_, upto, bytes| relance::domain::followups::memo::HistoryMemo::decode(upto, bytes),
        new_after: None,
        companies: &companies,
    };
    store
        .plan_inputs(&keys, &read)
        .unwrap()
        .iter()
        .map(|i| format!("{} wake {:?} memo {:?}", i.contact.id, i.wake, i.memo))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// Which of `ids` the planner reads with their memo when the events
/// numbered above `new_after` are checked against each memo's edge.
fn memos_read(store: &StoreHandle, ids: &[&str], new_after: Option<i64>) -> Vec<(String, bool)> {
    let keys: Vec<i64> = ids.iter().map(|id| key(store, id)).collect();
    let folded = BTreeSet::new();
    let companies = CompanyCache::default();
    let read = PlanRead {
        changes_since: t0() - Duration::days(1000),
        recent_from: t0() + Duration::days(1000),
        props_of: "call",
        folded: &folded,
        memo: &|_, upto, bytes| relance::domain::followups::memo::HistoryMemo::decode(upto, bytes),
        new_after,
        companies: &companies,
    };
    let mut read: Vec<(String, bool)> = store
        .plan_inputs(&keys, &read)
        .unwrap()
        .into_iter()
        .map(|i| (i.contact.id, i.memo.is_some()))
        .collect();
    read.sort();
    read
}

/// Everything the planner reads of `ids` (by id, without the numbers each
/// store hands out), read in batches of consecutive keys (a range) and of
/// every other key (a list), with memos trusted (but those the events
/// numbered above `new_after` show stale) and a recent window.
fn plan_inputs_view(
    store: &StoreHandle,
    ids: &[&str],
    now: Timestamp,
    new_after: Option<i64>,
) -> Vec<String> {
    let mut keys: Vec<i64> = ids.iter().map(|id| key(store, id)).collect();
    keys.sort_unstable();
    let folded: BTreeSet<String> = ["email_opened", "page_view"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let companies = CompanyCache::default();
    let read = PlanRead {
        changes_since: now - Duration::days(3),
        recent_from: now - Duration::days(20),
        props_of: "call",
        folded: &folded,
        memo: &|_, upto, bytes| relance::domain::followups::memo::HistoryMemo::decode(upto, bytes),
        new_after,
        companies: &companies,
    };
    let show = |i: &relance::ports::store::PlanInput| {
        let rows: Vec<Row> = i
            .rows
            .iter()
            .map(|r| Row {
                seq: 0,
                ..r.clone()
            })
            .collect();
        let changes: Vec<StoredChange> = i
            .changes
            .iter()
            .map(|c| StoredChange {
                seq: 0,
                ..c.clone()
            })
            .collect();
        format!(
            "{} company {:?} memo {:?} older {:?} left out {} recent {:?} reserved {:?} \
             score {:?} changes {changes:?} rows {rows:?} wake {:?} prospect {:?}",
            i.contact.id,
            i.company.as_ref().map(|c| &c.id),
            i.memo,
            i.older,
            i.left_out,
            i.recent,
            i.reserved,
            i.score,
            i.wake,
            // SQLite stores no desk row equal to a missing one (the
            // default status), PostgreSQL does: both read as that status.
            i.prospect
                .as_deref()
                .filter(|p| *p != StatusView::default().status.as_str())
        )
    };
    // The range as a pass over every contact reads it: every company
    // loaded at once; the lists look theirs up.
    let every = CompanyCache::for_every_contact();
    let whole: BTreeSet<String> = store
        .plan_inputs(
            &keys,
            &PlanRead {
                companies: &every,
                ..read
            },
        )
        .unwrap()
        .iter()
        .map(show)
        .collect();
    let mut listed = BTreeSet::new();
    for part in [0, 1] {
        let some: Vec<i64> = keys.iter().copied().skip(part).step_by(2).collect();
        listed.extend(store.plan_inputs(&some, &read).unwrap().iter().map(show));
    }
    assert_eq!(whole, listed, "read as a range and as lists");
    whole.into_iter().collect()
}

#[test]
fn a_scoring_batch_lands_as_on_sqlite() {
    let both = Both::new();
    let ids = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let sent_at = t0() - Duration::days(10);
    let spring_key = idempotency_key("c0", "spring", "0");
    let t1 = t0();
    let t2 = t0() + Duration::hours(1);
    let facts = CampaignFacts {
        window: Duration::days(30),
        in_target: vec!["spring".into()],
    };
    both.each(|store| {
        contacts(store, &ids);
        deliver(
            store,
            &[
                send("c0", "spring", 0, sent_at),
                send("c1", "spring", 0, sent_at),
            ],
            sent_at,
        );
        let erased = key(store, "c5");
        assert!(store.erase_contact("c5").unwrap());
        let k = |id| key(store, id);
        let opened = desk_event(
            sent_at + Duration::hours(1),
            DeskKind::Open,
            "",
            &spring_key,
        );
        let clicked = desk_event(
            sent_at + Duration::hours(2),
            DeskKind::Click,
            "",
            &spring_key,
        );
        let called = desk_event(sent_at + Duration::days(1), DeskKind::Call, "NRP", "");
        // First scores: c3 twice (the second finds the first and yields),
        // an erased contact (nothing), kept events repeated in a row.
        let first = vec![
            ScoreWrite {
                changes: vec![change("c0", t1, "band_up", (0, "cold"), (4000, "warm"))],
                desk: Some(desk(
                    1,
                    Some((sent_at + Duration::days(1), "NRP")),
                    vec![
                        opened.clone(),
                        clicked.clone(),
                        clicked.clone(),
                        called.clone(),
                    ],
                )),
                campaigns: facts.clone(),
                ..score(k("c0"), "c0", 4000, "warm", None)
            },
            ScoreWrite {
                campaigns: facts.clone(),
                ..score(k("c1"), "c1", 1000, "cold", None)
            },
            ScoreWrite {
                changes: vec![
                    change("c2", t1, "jump_up", (0, "cold"), (2500, "cold")),
                    change("c2", t1, "band_up", (0, "cold"), (7000, "hot")),
                ],
                desk: Some(desk(
                    2,
                    Some((t1 - Duration::days(3), "RAPP")),
                    vec![called.clone()],
                )),
                ..score(k("c2"), "c2", 7000, "hot", None)
            },
            score(k("c3"), "c3", 500, "cold", None),
            score(k("c3"), "c3", 900, "cold", None),
            ScoreWrite {
                snapshot: false,
                ..score(k("c4"), "c4", 100, "cold", None)
            },
            score(erased, "c5", 100, "cold", None),
        ];
        store
            .save_scores(&first, t1, &[("test.mark", "1".into())])
            .unwrap();
    });
    both.agree("after the first scores", |s| scoring_view(s, &ids, true));
    both.agree("campaigns after the first scores", |s| {
        plan_view(s, &["spring"])
    });
    both.agree("meta", |s| s.meta("test.mark").unwrap());

    both.each(|store| {
        let k = |id| key(store, id);
        // Again an hour later: c1 from a stale read (nothing), c2's desk
        // row removed, c4 twice (the second against the first's score).
        let again = vec![
            ScoreWrite {
                changes: vec![change("c0", t2, "band_up", (4000, "warm"), (8000, "hot"))],
                desk: Some(desk(
                    1,
                    Some((sent_at + Duration::days(1), "NRP")),
                    Vec::new(),
                )),
                campaigns: facts.clone(),
                ..score(k("c0"), "c0", 8000, "hot", Some(t1))
            },
            ScoreWrite {
                changes: vec![change("c1", t2, "band_up", (1000, "cold"), (9000, "hot"))],
                ..score(k("c1"), "c1", 9000, "hot", Some(t1 - Duration::hours(1)))
            },
            score(k("c2"), "c2", 6500, "warm", Some(t1)),
            score(k("c4"), "c4", 200, "cold", Some(t1)),
            ScoreWrite {
                changes: vec![change("c4", t2, "jump_up", (200, "cold"), (3000, "warm"))],
                ..score(k("c4"), "c4", 3000, "warm", Some(t2))
            },
            ScoreWrite {
                changes: vec![change("c3", t2, "band_up", (500, "cold"), (4500, "warm"))],
                ..score(k("c3"), "c3", 4500, "warm", Some(t1))
            },
        ];
        store.save_scores(&again, t2, &[]).unwrap();
    });
    both.agree("after the second scores", |s| scoring_view(s, &ids, true));
    both.agree("campaigns after the second scores", |s| {
        plan_view(s, &["spring"])
    });
    assert_eq!(both.pg.score_changes(0, 100).unwrap().len(), 6);
    let c4 = both.pg.stored_score("c4").unwrap().unwrap();
    assert_eq!((c4.score, c4.band.as_str()), (3000, "warm"));
}

fn plan_row(contact: &str, n: usize, state: State, decision: Verdict, due: Timestamp) -> PlanRow {
    PlanRow {
        send: send(contact, "nurture", n, due),
        state,
        first_due: t0(),
        decision,
        reasons: Vec::new(),
    }
}

fn write(
    key: i64,
    rows: Vec<PlanRow>,
    wake: Option<Timestamp>,
    wake_was: Option<Timestamp>,
) -> PlanWrite {
    PlanWrite {
        key,
        rows,
        drops: Vec::new(),
        wake,
        wake_was,
        memo: None,
    }
}

#[test]
fn a_planning_batch_lands_as_on_sqlite() {
    let both = Both::new();
    let ids = ["p0", "p1", "p2", "p3"];
    let t1 = t0();
    let t2 = t0() + Duration::hours(1);
    let later = t0() + Duration::days(2);
    both.each(|store| {
        contacts(store, &ids);
        let k = |id| key(store, id);
        // p0 plans one key twice: the first row stands, logged once.
        let first = vec![
            write(
                k("p0"),
                vec![
                    plan_row("p0", 0, State::Planned, Verdict::Allow, t1),
                    plan_row("p0", 1, State::Deferred, Verdict::Defer, later),
                    plan_row("p0", 0, State::Blocked, Verdict::Block, t1),
                ],
                Some(later),
                None,
            ),
            write(
                k("p1"),
                vec![plan_row("p1", 0, State::Planned, Verdict::Allow, t1)],
                Some(later),
                None,
            ),
            write(
                k("p2"),
                vec![plan_row("p2", 0, State::Dropped, Verdict::Drop, t1)],
                None,
                None,
            ),
        ];
        store.save_plan(&first, t1).unwrap();
    });
    both.agree("after the first plan", |s| plan_view(s, &["nurture"]));
    both.agree("wake after the first plan", |s| planner_view(s, &ids));

    both.each(|store| {
        let k = |id| key(store, id);
        let seq = |idem: &str| {
            store
                .outbox_rows(None, 100)
                .unwrap()
                .iter()
                .find(|r| r.idem_key == idem)
                .unwrap()
                .seq
        };
        let deferred = seq(&idempotency_key("p0", "nurture", "1"));
        let planned = seq(&idempotency_key("p1", "nurture", "0"));
        let again = vec![
            // A key already stored, a row dropped twice, the wake removed.
            PlanWrite {
                drops: vec![(deferred, "left".into()), (deferred, "again".into())],
                ..write(
                    k("p0"),
                    vec![plan_row("p0", 0, State::Deferred, Verdict::Defer, later)],
                    None,
                    Some(later),
                )
            },
            // The wake unchanged, then p1 again: a new wake and a drop.
            write(k("p1"), Vec::new(), Some(later), Some(later)),
            write(
                k("p3"),
                vec![plan_row("p3", 0, State::Planned, Verdict::Allow, t2)],
                Some(t2),
                None,
            ),
            PlanWrite {
                drops: vec![(planned, "left".into())],
                ..write(k("p1"), Vec::new(), Some(t2), Some(later))
            },
        ];
        store.save_plan(&again, t2).unwrap();
    });
    both.agree("after the second plan", |s| plan_view(s, &["nurture"]));
    both.agree("wake after the second plan", |s| planner_view(s, &ids));
    let dropped = both
        .pg
        .outbox_rows(Some(State::Dropped), 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.last_error.as_deref() == Some("left"))
        .count();
    assert_eq!(dropped, 2);
}

/// A small deterministic population under the shipped rules: companies,
/// contacts, and a history of opens, clicks, visits, calls and meetings.
mod population {
    use super::*;

    pub const CONTACTS: usize = 120;

    /// SplitMix64, as the benchmarks' generator.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    const KINDS: &[&str] = &[
        "email_open",
        "email_click",
        "page_visit",
        "page_visit",
        "download",
        "form_submit",
        "call",
        "webinar_signup",
        "demo_request",
        "meeting",
        "unsubscribe",
    ];
    const URLS: &[&str] = &[
        "https://payroll.example/pricing",
        "https://payroll.example/blog/payslips",
        "https://payroll.example/demo",
    ];
    const CODES: &[&str] = &["NRP", "RAPP", "RDV", "REFUS", "OCC", "PISTE"];

    pub fn load(store: &StoreHandle, now: Timestamp) {
        let companies: Vec<Patch> = (0..5)
            .map(|i| {
                let mut p = Patch {
                    id: format!("co{i}"),
                    ..Patch::default()
                };
                p.fields
                    .insert("name".into(), format!("Company {i}").into());
                p.attributes
                    .insert("headcount".into(), (50 * (i + 1) * (i + 1)).into());
                p
            })
            .collect();
        store.upsert_companies(&companies).unwrap();
        let mut rng = Rng(0x5EED);
        let mut people = Vec::new();
        let mut events = Vec::new();
        for i in 0..CONTACTS {
            let id = format!("c{i}");
            let mut p = Patch {
                id: id.clone(),
                ..Patch::default()
            };
            p.fields
                .insert("email".into(), format!("c{i}@example.com").into());
            p.fields
                .insert("phone".into(), format!("+3361234{i:04}").into());
            p.fields
                .insert("company".into(), format!("co{}", rng.below(5)).into());
            p.fields.insert("status".into(), "prospect".into());
            if i % 3 == 0 {
                p.fields.insert("owner".into(), "ana".into());
            }
            p.attributes.insert(
                "title".into(),
                ["DRH", "Responsable paie", "Comptable", "CEO"][rng.below(4) as usize].into(),
            );
            people.push(p);
            for j in 0..rng.below(25) {
                let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
                let mut props = serde_json::Map::new();
                match kind {
                    "page_visit" => {
                        props.insert("url".into(), URLS[rng.below(3) as usize].into());
                    }
                    "call" => {
                        props.insert("outcome".into(), CODES[rng.below(6) as usize].into());
                    }
                    _ => {}
                }
                events.push(Incoming::Contact(Event {
                    id: Some(format!("e{i}-{j}")),
                    contact: id.clone(),
                    kind: kind.into(),
                    at: now - Duration::minutes(rng.below(120 * 24 * 60) as i64 + 1),
                    channel: (kind == "call").then(|| "phone".to_string()),
                    props,
                }));
            }
        }
        store.upsert_contacts(&people).unwrap();
        store.append_events(&events).unwrap();
    }

    /// New activity between two passes: pricing visits, opens of a
    /// delivered send, calls.
    pub fn more(store: &StoreHandle, at: Timestamp, sent: &[Row]) {
        let mut events = Vec::new();
        for i in (0..CONTACTS).step_by(7) {
            let mut props = serde_json::Map::new();
            props.insert("url".into(), "https://payroll.example/pricing".into());
            events.push(Incoming::Contact(Event {
                id: Some(format!("late-{i}")),
                contact: format!("c{i}"),
                kind: "page_visit".into(),
                at,
                channel: None,
                props,
            }));
        }
        for (n, row) in sent.iter().enumerate() {
            let mut props = serde_json::Map::new();
            props.insert("key".into(), row.idem_key.clone().into());
            events.push(Incoming::Contact(Event {
                id: Some(format!("open-{n}")),
                contact: row.contact.clone(),
                kind: if n % 2 == 0 {
                    "email_open"
                } else {
                    "email_click"
                }
                .into(),
                at,
                channel: Some("email".into()),
                props,
            }));
        }
        store.append_events(&events).unwrap();
    }
}

/// On PostgreSQL an erasure may be under way in another process while a
/// pass saves: `save` runs on its own thread (with the keys of `gone` and
/// `kept`) while another connection holds `gone`'s deletion uncommitted;
/// once `save` is seen waiting on a lock, the deletion commits. Returns
/// what `save` returned, the scratch database and the store.
fn saved_during_an_erasure(
    save: impl FnOnce(&StoreHandle, i64, i64) -> Result<(), relance::ports::store::StoreError>
    + Send
    + 'static,
) -> (
    Result<(), relance::ports::store::StoreError>,
    pg_scratch::Scratch,
    StoreHandle,
) {
    let db = pg_scratch::Scratch::new("erasing");
    let url = db.url();
    let store: StoreHandle = Arc::new(PgStore::open(&url, 2).unwrap());
    contacts(&store, &["gone", "kept"]);
    let (gone, kept) = (key(&store, "gone"), key(&store, "kept"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (eraser, conn) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    rt.block_on(eraser.batch_execute("BEGIN; DELETE FROM contacts WHERE id = 'gone'"))
        .unwrap();
    let saving = {
        let store = store.clone();
        std::thread::spawn(move || save(&store, gone, kept))
    };
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        db.name
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while pg_scratch::count(&url, &waiting) == 0 {
        assert!(
            !saving.is_finished(),
            "the save did not wait for the erasure"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the save never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rt.block_on(eraser.batch_execute("COMMIT")).unwrap();
    (saving.join().unwrap(), db, store)
}

/// A plan saved while the contact's erasure is under way waits for it,
/// then keeps nothing of the contact (no row, no decision left behind) and
/// the rest of its batch, without an error.
#[test]
fn a_plan_saved_during_an_erasure_waits_and_keeps_nothing_of_the_contact() {
    let t1 = t0();
    let later = t0() + Duration::days(2);
    let (saved, db, store) = saved_during_an_erasure(move |store, gone, kept| {
        store.save_plan(
            &[
                write(
                    gone,
                    vec![plan_row("gone", 0, State::Planned, Verdict::Allow, t1)],
                    Some(later),
                    None,
                ),
                write(
                    kept,
                    vec![plan_row("kept", 0, State::Planned, Verdict::Allow, t1)],
                    Some(later),
                    None,
                ),
            ],
            t1,
        )
    });
    saved.expect("a plan saved during an erasure is no error");
    let rows = store.outbox_rows(None, 100).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.contact.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
    for (table, n) in [("decision_log", 1), ("plan_wake", 1), ("outbox", 1)] {
        let left = pg_scratch::count(&db.url(), &format!("SELECT count(*) FROM {table}"));
        assert_eq!(left, n, "{table}");
    }
}

/// The same for a contact's first score: the rescoring pass's save waits,
/// then writes the other contact's score, snapshot and change alone.
#[test]
fn a_first_score_saved_during_an_erasure_waits_and_keeps_nothing_of_the_contact() {
    let (saved, db, store) = saved_during_an_erasure(|store, gone, kept| {
        let with_change = |key, id: &str| ScoreWrite {
            changes: vec![change(id, t0(), "band_up", (0, "cold"), (6500, "warm"))],
            ..score(key, id, 6500, "warm", None)
        };
        store.save_scores(
            &[with_change(gone, "gone"), with_change(kept, "kept")],
            t0(),
            &[],
        )
    });
    saved.expect("a score saved during an erasure is no error");
    assert_eq!(store.stored_score("kept").unwrap().unwrap().score, 6500);
    for (table, n) in [("scores", 1), ("score_snapshots", 1), ("score_changes", 1)] {
        let left = pg_scratch::count(&db.url(), &format!("SELECT count(*) FROM {table}"));
        assert_eq!(left, n, "{table}");
    }
}

/// The shipped configuration on the store at `db` (SQLite) or `url`.
fn shipped(db: &std::path::Path, url: Option<String>) -> relance::pipeline::config::Config {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let name = db.display().to_string();
    let mut config = relance::pipeline::config::Config::parse(&text, &file, &|n| {
        (n == "RELANCE_DB").then(|| name.clone())
    })
    .unwrap();
    config.store.url = url;
    config
}

#[test]
fn whole_passes_land_as_on_sqlite() {
    use relance::pipeline::{plan, rescore::rescore};
    let dir = tempfile::tempdir().unwrap();
    let db = pg_scratch::Scratch::new("passes");
    let configs = [
        shipped(&dir.path().join("passes.db"), None),
        shipped(&dir.path().join("unused.db"), Some(db.url())),
    ];
    let stores: Vec<StoreHandle> = configs
        .iter()
        .map(|c| relance::adapters::open_store(c).unwrap())
        .collect();
    let ids: Vec<String> = (0..population::CONTACTS).map(|i| format!("c{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let followups = |s: &StoreHandle| -> Vec<String> {
        let names: BTreeSet<String> = s
            .outbox_rows(None, 100_000)
            .unwrap()
            .into_iter()
            .map(|r| r.followup)
            .collect();
        names.into_iter().collect()
    };
    let agree = |what: &str, at: Timestamp| {
        let views: Vec<Vec<String>> = stores
            .iter()
            .map(|s| {
                let names = followups(s);
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut v = scoring_view(s, &ids, false);
                v.extend(plan_view(s, &names));
                v.extend(planner_view(s, &ids));
                v.extend(plan_inputs_view(s, &ids, at, None));
                v
            })
            .collect();
        for (a, b) in views[0].iter().zip(&views[1]) {
            assert_eq!(a, b, "{what}: SQLite (left) and PostgreSQL (right) differ");
        }
        assert_eq!(views[0].len(), views[1].len(), "{what}");
    };
    let now = t0();
    for (store, config) in stores.iter().zip(&configs) {
        population::load(store, now);
        rescore(&**store, config, now, true).unwrap();
        plan::run(&**store, config, now, true).unwrap();
    }
    agree("first rescoring and planning", now);
    assert!(!stores[1].outbox_rows(None, 10).unwrap().is_empty());

    // A rebuild that finds every score, desk row and campaign fact as
    // stored writes nothing on either store: PostgreSQL keeps the desk
    // fingerprint too, and leaves its desk rows as they are.
    let desk_rows = || {
        pg_scratch::column(
            &db.url(),
            "SELECT contact || ':' || xmin::text FROM contact_desk ORDER BY contact",
        )
    };
    let before = desk_rows();
    assert!(!before.is_empty(), "the population has desk rows");
    let rebuilt: Vec<usize> = stores
        .iter()
        .zip(&configs)
        .map(|(store, config)| rescore(&**store, config, now, true).unwrap().written)
        .collect();
    assert_eq!(rebuilt, [0, 0], "a rebuild with nothing new writes nothing");
    assert_eq!(desk_rows(), before, "desk rows rewritten");
    agree("a rebuild finding nothing new", now);

    let later = now + Duration::hours(2);
    for (store, config) in stores.iter().zip(&configs) {
        // The rows due are delivered, and reacted to.
        let sent = deliver_due(store, later);
        population::more(store, later + Duration::minutes(5), &sent);
        rescore(&**store, config, later + Duration::minutes(10), false).unwrap();
        plan::run(&**store, config, later + Duration::minutes(10), false).unwrap();
    }
    agree("incremental rescoring and planning", later);

    let next_day = now + Duration::days(1);
    for (store, config) in stores.iter().zip(&configs) {
        rescore(&**store, config, next_day, true).unwrap();
        plan::run(&**store, config, next_day, true).unwrap();
    }
    agree("a full rebuild and planning a day later", next_day);

    // Events that arrive after the memos were written: one older than its
    // contact's memo edge (late: that memo missed it), one newer. Checked
    // against the memos' edges, the first contact's memo is not read.
    let with_memo: Vec<&str> = memos_read(&stores[0], &ids, None)
        .into_iter()
        .filter(|(_, memo)| *memo)
        .filter_map(|(id, _)| ids.iter().find(|i| **i == id).copied())
        .take(2)
        .collect();
    let [late, newer] = with_memo[..] else {
        panic!("two contacts with a memo: {with_memo:?}");
    };
    let mut marks = Vec::new();
    for store in &stores {
        let mark = store.last_event_seq().unwrap();
        marks.push(mark);
        let event = |contact: &str, at: Timestamp| {
            Incoming::Contact(Event {
                id: Some(format!("{contact}-after-the-memo")),
                contact: contact.into(),
                kind: "email_open".into(),
                at,
                channel: Some("email".into()),
                props: serde_json::Map::new(),
            })
        };
        store
            .append_events(&[
                event(late, now - Duration::days(400)),
                event(newer, next_day + Duration::hours(1)),
            ])
            .unwrap();
        let pair = [late, newer];
        assert_eq!(
            memos_read(store, &pair, None),
            [(late.to_string(), true), (newer.to_string(), true)],
            "unchecked, both memos are read"
        );
        let checked = memos_read(store, &pair, Some(mark));
        assert!(checked.contains(&(late.to_string(), false)), "{checked:?}");
        assert!(checked.contains(&(newer.to_string(), true)), "{checked:?}");
        assert_eq!(
            memos_read(store, &pair, Some(store.last_event_seq().unwrap())),
            memos_read(store, &pair, None),
            "nothing numbered after the mark: nothing missed"
        );
    }
    // Read beside the memos of the others, the late contact's whole
    // history, its event after the memo's edge included, once.
    let views: Vec<Vec<String>> = stores
        .iter()
        .zip(marks)
        .map(|(s, mark)| plan_inputs_view(s, &ids, next_day, Some(mark)))
        .collect();
    assert_eq!(views[0], views[1], "SQLite (left) and PostgreSQL (right)");
    let late_view = views[1].iter().find(|v| v.starts_with(&format!("{late} ")));
    assert!(
        late_view.is_some_and(|v| v.contains("memo None")),
        "{late_view:?}"
    );
}
