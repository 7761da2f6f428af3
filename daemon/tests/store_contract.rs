//! The store contract, as one suite run against every backend: what each
//! method of `relance::ports::store::Store` guarantees when several handles (as
//! far as the contract goes, several processes) share one store. A backend
//! plugs in with a [`Backend`] and one line in [`contract!`]'s list at the
//! bottom; the cases never name a backend.

#[path = "common/pg.rs"]
mod pg_scratch;

use chrono::{DateTime, Duration, Utc};
use relance::adapters::postgres::PgStore;
use relance::adapters::sqlite::SqliteStore;
use relance::core::model::{Contact, Event, FollowUpKind, Timestamp};
use relance::domain::desk::{DeskRow, StatusView};
use relance::domain::fatigue::Verdict;
use relance::domain::ingest::{Incoming, Patch};
use relance::domain::outbox::{NewSend, Payload, Row, Settlement, State, idempotency_key};
use relance::ports::store::desk::{HotLead, HotLeads};
use relance::ports::store::{
    Admission, AdmissionVerdict, Append, Claimed, PassMark, PlanRow, PlanWrite, ScoreWrite,
    StoreHandle, StoredChange, Upsert,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

/// One store opened for a case, and how to open it again.
pub struct Opened {
    pub store: StoreHandle,
    /// Opens a second handle on the same store, with its own connections,
    /// as another process would.
    pub again: Box<dyn Fn() -> StoreHandle + Send + Sync>,
    /// Whatever must live as long as the case (a temporary directory).
    _keep: Box<dyn std::any::Any>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").finish_non_exhaustive()
    }
}

/// How the suite opens fresh stores of one backend.
pub type Backend = fn() -> Opened;

fn sqlite() -> Opened {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("contract.db");
    let open = move || -> StoreHandle {
        Arc::new(SqliteStore::open(&path, std::time::Duration::from_secs(60), 16).expect("open"))
    };
    Opened {
        store: open(),
        again: Box::new(open),
        _keep: Box::new(dir),
    }
}

/// A database of its own on the local PostgreSQL, dropped after the case.
fn pg() -> Opened {
    let db = pg_scratch::Scratch::new("contract");
    let url = db.url();
    let open = move || -> StoreHandle { Arc::new(PgStore::open(&url, 8).expect("open")) };
    Opened {
        store: open(),
        again: Box::new(open),
        _keep: Box::new(db),
    }
}

fn t(s: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(s)
        .expect("instant")
        .with_timezone(&Utc)
}

fn now() -> Timestamp {
    t("2026-11-20T09:00:00Z")
}

fn contacts(store: &StoreHandle, ids: &[String]) {
    let batch: Vec<Patch> = ids
        .iter()
        .map(|id| Patch {
            id: id.clone(),
            ..Patch::default()
        })
        .collect();
    let out = store.upsert_contacts(&batch).expect("contacts");
    assert!(out.iter().all(|u| *u == Upsert::Inserted), "{out:?}");
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn event(contact: &str, id: &str, at: Timestamp) -> Incoming {
    Incoming::Contact(Event {
        id: Some(id.into()),
        contact: contact.into(),
        kind: "email_open".into(),
        at,
        channel: None,
        props: serde_json::Map::new(),
    })
}

fn send(contact: &str, step: usize, channel: &str) -> NewSend {
    NewSend {
        idem_key: idempotency_key(contact, "nurture", &format!("{channel}-{step}")),
        contact: contact.into(),
        followup: "nurture".into(),
        kind: FollowUpKind::Systematic,
        priority: 10,
        channel: channel.into(),
        due_at: now(),
        payload: Payload::template("nurture_welcome"),
    }
}

fn allow(row: &Row) -> Admission {
    Admission {
        verdict: AdmissionVerdict::Allow {
            event_type: format!("{}_sent", row.channel),
        },
        reasons: Vec::new(),
    }
}

/// A guard in miniature: at most `per_channel` sends per contact and
/// channel, and `budget` per contact across channels, counting sends and
/// in-flight reservations the store hands over.
fn capped(per_channel: usize, budget: usize) -> impl FnMut(&Row, &Contact, &[Event]) -> Admission {
    move |row, _, weighs| {
        let sent: Vec<&Event> = weighs
            .iter()
            .filter(|e| e.kind.ends_with("_sent"))
            .collect();
        let on_channel = sent
            .iter()
            .filter(|e| e.kind == format!("{}_sent", row.channel))
            .count();
        if on_channel >= per_channel || sent.len() >= budget {
            return Admission {
                verdict: AdmissionVerdict::Block,
                reasons: Vec::new(),
            };
        }
        allow(row)
    }
}

/// Runs `f(i, handle)` on two threads at once, each with its own handle.
fn race<T: Send + 'static>(
    opened: &Opened,
    f: impl Fn(usize, StoreHandle) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let start = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [opened.store.clone(), (opened.again)()]
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let (f, start) = (f.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                f(i, store)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("racer"))
        .collect()
}

/// A warm score of `score` for contact `key`, with its snapshot and no
/// change, compared and set against `seen`.
fn scored(key: i64, contact: &str, score: i64, seen: Option<Timestamp>) -> ScoreWrite {
    ScoreWrite {
        key,
        contact: contact.into(),
        score,
        band: "warm".into(),
        next_change_at: None,
        snapshot: true,
        desk: None,
        campaigns: Default::default(),
        desk_mark: 0,
        hot_lead: None,
        recent: Vec::new(),
        changes: Vec::new(),
        seen,
    }
}

pub fn events_are_kept_once_and_numbered_upwards_across_handles(backend: Backend) {
    let opened = backend();
    let people = ids("c", 20);
    contacts(&opened.store, &people);
    let per = 50;
    // Both handles append the same events, in batches: each is stored once.
    let people2 = people.clone();
    let outcomes = race(&opened, move |_, store| {
        let mut inserted = 0;
        for batch in 0..per {
            let events: Vec<Incoming> = people2
                .iter()
                .map(|c| event(c, &format!("{c}-{batch}"), now() + Duration::minutes(batch)))
                .collect();
            for a in store.append_events(&events).expect("append") {
                assert!(matches!(a, Append::Inserted | Append::Duplicate), "{a:?}");
                inserted += usize::from(a == Append::Inserted);
            }
        }
        inserted
    });
    let total = people.len() * per as usize;
    assert_eq!(outcomes.iter().sum::<usize>(), total, "each event once");
    let store = &opened.store;
    assert_eq!(store.counts().expect("counts").events, total as u64);
    // Numbers are unique and none is skipped by a pass that remembers one.
    assert_eq!(store.last_event_seq().expect("seq"), total as i64);
    let mark = store.last_event_seq().expect("seq");
    let other = (opened.again)();
    other
        .append_events(&[event("c3", "late", now())])
        .expect("append");
    assert_eq!(
        store.contacts_with_events_after(mark).expect("after"),
        ["c3"]
    );
    assert!(store.last_event_seq().expect("seq") > mark);
    // Numbers are not reused after the newest event's contact is erased.
    assert!(store.erase_contact("c3").expect("erase"));
    store
        .append_events(&[event("c4", "later", now())])
        .expect("append");
    assert_eq!(store.last_event_seq().expect("seq"), mark + 2);
}

pub fn no_outbox_row_is_claimed_twice(backend: Backend) {
    let opened = backend();
    let people = ids("c", 30);
    contacts(&opened.store, &people);
    let sends: Vec<NewSend> = people
        .iter()
        .flat_map(|c| (0..4).map(move |i| send(c, i, "email")))
        .collect();
    let fresh = opened.store.enqueue(&sends, now()).expect("enqueue");
    assert!(fresh.iter().all(|n| *n));
    let lease = now() + Duration::minutes(10);
    let claimed = race(&opened, move |i, store| {
        let owner = format!("owner-{i}");
        let mut mine = Vec::new();
        loop {
            let rows = store
                .claim_due(now(), lease, 7, &owner, &mut |row, _, _| allow(row))
                .expect("claim");
            if rows.is_empty() {
                return mine;
            }
            mine.extend(rows.into_iter().map(|r| (r.seq, r.idem_key)));
        }
    });
    let all: Vec<&(i64, String)> = claimed.iter().flatten().collect();
    let distinct: BTreeSet<i64> = all.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(all.len(), sends.len(), "every row claimed");
    assert_eq!(distinct.len(), sends.len(), "no row claimed twice");
    // Only the holder of a lease settles its row.
    let (seq, _) = all[0];
    let holder = if claimed[0].iter().any(|(s, _)| s == seq) {
        "owner-0"
    } else {
        "owner-1"
    };
    let stranger = if holder == "owner-0" {
        "owner-1"
    } else {
        "owner-0"
    };
    let store = &opened.store;
    assert!(
        !store
            .settle(*seq, stranger, &Settlement::Sent, now())
            .expect("settle")
    );
    assert!(
        store
            .settle(*seq, holder, &Settlement::Sent, now())
            .expect("settle")
    );
}

pub fn caps_and_the_budget_hold_when_two_claimers_race(backend: Backend) {
    let opened = backend();
    let people = ids("c", 12);
    contacts(&opened.store, &people);
    // Four sends per channel and contact; one per channel and three in all
    // may go.
    let sends: Vec<NewSend> = people
        .iter()
        .flat_map(|c| {
            ["email", "sms", "call", "letter"]
                .into_iter()
                .flat_map(move |ch| (0..4).map(move |i| send(c, i, ch)))
        })
        .collect();
    opened.store.enqueue(&sends, now()).expect("enqueue");
    let lease = now() + Duration::minutes(10);
    let claimed = race(&opened, move |i, store| {
        let owner = format!("owner-{i}");
        let mut admit = capped(1, 3);
        let mut mine = Vec::new();
        loop {
            let rows = store
                .claim_due(now(), lease, 3, &owner, &mut admit)
                .expect("claim");
            mine.extend(rows);
            // Blocked rows claim nothing: go on while any is due.
            if store.next_due().expect("due").is_none_or(|d| d > now()) {
                return mine;
            }
        }
    });
    let mut per_contact: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in claimed.into_iter().flatten() {
        per_contact
            .entry(row.contact)
            .or_default()
            .push(row.channel);
    }
    assert_eq!(per_contact.len(), people.len());
    for (contact, channels) in per_contact {
        assert_eq!(channels.len(), 3, "{contact}: the budget, no more");
        let distinct: BTreeSet<&String> = channels.iter().collect();
        assert_eq!(distinct.len(), 3, "{contact}: one per channel");
    }
}

pub fn changed_contacts_are_taken_once(backend: Backend) {
    let opened = backend();
    let people = ids("c", 200);
    contacts(&opened.store, &people);
    let lease = now() + Duration::hours(1);
    let taken = race(&opened, move |i, store| {
        store
            .take_changed(&format!("pass-{i}"), now(), lease)
            .expect("take")
    });
    let (a, b) = (&taken[0], &taken[1]);
    assert_eq!(a.len() + b.len(), people.len(), "every changed contact");
    let union: BTreeSet<i64> = a.iter().chain(b).copied().collect();
    assert_eq!(union.len(), people.len(), "none taken twice");
    let store = &opened.store;
    // Held: nobody else takes them until the lease expires ...
    assert!(
        store
            .take_changed("third", now(), lease)
            .expect("take")
            .is_empty()
    );
    // ... or their pass gives them back.
    let given = store.release_changed("pass-0").expect("release");
    assert_eq!(given, a.len() as u64);
    assert_eq!(&store.take_changed("third", now(), lease).expect("take"), a);
    let after = lease + Duration::seconds(1);
    // A pass that renews its lease keeps what it holds past the first one.
    let renewed = after + Duration::minutes(1);
    assert_eq!(
        store.renew_changed("third", renewed).expect("renew"),
        a.len() as u64
    );
    let others = store
        .take_changed("fourth", after, after + Duration::hours(1))
        .expect("take");
    assert_eq!(others.len(), b.len(), "only the lease not renewed lapsed");
    assert!(store.release_changed("fourth").expect("release") == b.len() as u64);
    let after = renewed + Duration::seconds(1);
    let expired = store
        .take_changed("fourth", after, after + Duration::hours(1))
        .expect("take");
    assert_eq!(
        expired.len(),
        people.len(),
        "expired leases are taken again"
    );
    // A change while a pass holds the contact queues it again.
    let other = (opened.again)();
    let patch = Patch {
        id: "c7".into(),
        fields: serde_json::Map::from_iter([("email".to_string(), "c7@x.example".into())]),
        ..Patch::default()
    };
    assert_eq!(
        other.upsert_contacts(&[patch]).expect("update"),
        [Upsert::Updated]
    );
    assert_eq!(
        store
            .take_changed("fifth", after, after + Duration::hours(1))
            .expect("take")
            .len(),
        1
    );
}

pub fn progress_marks_are_compared_and_set(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    assert!(store.advance_mark("m", None, 10).expect("cas"));
    assert!(
        !store.advance_mark("m", None, 20).expect("cas"),
        "not absent any more"
    );
    assert!(!store.advance_mark("m", Some(5), 20).expect("cas"), "stale");
    assert!(store.advance_mark("m", Some(10), 20).expect("cas"));
    assert_eq!(store.meta("m").expect("meta").as_deref(), Some("20"));
    // Two handles each add 100 by compare-and-set: no increment is lost.
    race(&opened, |_, store| {
        for _ in 0..100 {
            loop {
                let seen = store
                    .meta("m")
                    .expect("meta")
                    .and_then(|v| v.parse::<i64>().ok());
                let next = seen.unwrap_or(0) + 1;
                if store.advance_mark("m", seen, next).expect("cas") {
                    break;
                }
            }
        }
    });
    assert_eq!(store.meta("m").expect("meta").as_deref(), Some("220"));
    // A pass finishing after another that started with it keeps the lower.
    let mark = |seen, reached| PassMark {
        key: "p",
        seen,
        reached,
    };
    store.finish_pass(&[mark(None, 100)], &[]).expect("finish");
    store
        .finish_pass(&[mark(Some(100), 120)], &[])
        .expect("finish");
    store
        .finish_pass(&[mark(Some(100), 110)], &[])
        .expect("finish");
    assert_eq!(store.meta("p").expect("meta").as_deref(), Some("110"));
}

pub fn a_schedule_is_held_by_one_owner(backend: Backend) {
    let opened = backend();
    let lease = now() + Duration::minutes(1);
    let won = race(&opened, move |i, store| {
        store
            .claim_schedule("rescore", &format!("owner-{i}"), now(), lease)
            .expect("claim")
    });
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = if won[0] { "owner-0" } else { "owner-1" };
    let store = &opened.store;
    assert!(
        store
            .renew_schedule("rescore", winner, lease + Duration::minutes(1))
            .expect("renew")
    );
    assert!(
        !store
            .renew_schedule("rescore", "stranger", lease)
            .expect("renew")
    );
}

pub fn waiting_for_events_sees_other_handles(backend: Backend) {
    let opened = backend();
    contacts(&opened.store, &ids("c", 1));
    let store = opened.store.clone();
    let before = store.last_event_seq().expect("seq");
    // Already past: no wait.
    let other = (opened.again)();
    other
        .append_events(&[event("c0", "e0", now())])
        .expect("append");
    assert_eq!(
        store
            .wait_for_events(before, std::time::Duration::from_secs(60))
            .expect("wait"),
        before + 1
    );
    // A write through another handle wakes a waiter long before its bound.
    let waiter = std::thread::spawn(move || {
        store
            .wait_for_events(before + 1, std::time::Duration::from_secs(120))
            .expect("wait")
    });
    other
        .append_events(&[event("c0", "e1", now())])
        .expect("append");
    assert_eq!(waiter.join().expect("waiter"), before + 2);
    // Nothing new: the wait ends at its bound with the same number.
    assert_eq!(
        opened
            .store
            .wait_for_events(before + 2, std::time::Duration::from_millis(10))
            .expect("wait"),
        before + 2
    );
}

pub fn a_score_is_written_by_one_of_two_passes(backend: Backend) {
    let opened = backend();
    contacts(&opened.store, &ids("c", 1));
    let key = opened.store.contact_key("c0").expect("key").expect("known");
    let write = move |score: i64, seen: Option<Timestamp>| ScoreWrite {
        changes: vec![StoredChange {
            seq: 0,
            contact: "c0".into(),
            at: now(),
            kind: "band".into(),
            from_score: 0,
            to_score: score,
            from_band: "cold".into(),
            to_band: "warm".into(),
            since: now(),
        }],
        ..scored(key, "c0", score, seen)
    };
    // Two passes read "never scored" and both found a change: one lands.
    race(&opened, move |i, store| {
        store
            .save_scores(&[write(100 + i as i64, None)], now(), &[])
            .expect("save");
    });
    let store = &opened.store;
    assert_eq!(store.score_history("c0", None).expect("film").len(), 1);
    assert_eq!(store.score_changes(0, 100).expect("changes").len(), 1);
    let stored = store.stored_score("c0").expect("score").expect("scored");
    // Again from the same stored score, an hour later: one lands.
    let later = now() + Duration::hours(1);
    let seen = Some(stored.scored_at);
    race(&opened, move |i, store| {
        store
            .save_scores(&[write(200 + i as i64, seen)], later, &[])
            .expect("save");
    });
    assert_eq!(store.score_history("c0", None).expect("film").len(), 2);
    assert_eq!(store.score_changes(0, 100).expect("changes").len(), 2);
    // A write from a stale read changes nothing.
    store
        .save_scores(&[write(300, seen)], later + Duration::hours(1), &[])
        .expect("save");
    let now_stored = store.stored_score("c0").expect("score").expect("scored");
    assert!(now_stored.score == 200 || now_stored.score == 201);
    assert_eq!(store.score_history("c0", None).expect("film").len(), 2);
}

/// A delivered row of follow-up `followup` (kind `kind`) for `contact`.
fn sent_row(contact: &str, followup: &str, kind: FollowUpKind, n: usize) -> NewSend {
    NewSend {
        idem_key: idempotency_key(contact, followup, &format!("{n}")),
        contact: contact.into(),
        followup: followup.into(),
        kind,
        priority: 10,
        channel: "email".into(),
        due_at: now(),
        payload: Payload::template("nurture_welcome"),
    }
}

/// Enqueues `sends`, claims them at `at` and settles them as delivered at
/// `at`: delivered rows and decisions of that instant.
fn deliver(store: &StoreHandle, sends: &[NewSend], at: Timestamp) {
    let sends: Vec<NewSend> = sends
        .iter()
        .map(|s| NewSend {
            due_at: at,
            ..s.clone()
        })
        .collect();
    store.enqueue(&sends, at).expect("enqueue");
    let lease = at + Duration::minutes(10);
    let rows = store
        .claim_due(at, lease, 1000, "d", &mut |row, _, _| allow(row))
        .expect("claim");
    assert_eq!(rows.len(), sends.len());
    let settled: Vec<(i64, Settlement, Timestamp)> =
        rows.iter().map(|r| (r.seq, Settlement::Sent, at)).collect();
    assert!(
        store
            .settle_many("d", &settled)
            .expect("settle")
            .iter()
            .all(|s| *s)
    );
}

pub fn retention_prunes_old_rows_in_batches_and_keeps_what_planning_reads(backend: Backend) {
    use relance::ports::store::retention::{Cut, Pruned};
    let opened = backend();
    let store = &opened.store;
    let people = ids("c", 5);
    contacts(store, &people);
    let old = now() - Duration::days(100);
    // Per contact, delivered 100 days ago: two trigger sends, a nurture
    // step and a send of a broadcast still running; delivered recently: a
    // trigger send. And one row still planned from long ago.
    for c in &people {
        deliver(
            store,
            &[
                sent_row(c, "clicked", FollowUpKind::Opportunistic, 0),
                sent_row(c, "clicked", FollowUpKind::Opportunistic, 1),
                sent_row(c, "welcome", FollowUpKind::Systematic, 0),
                sent_row(c, "news", FollowUpKind::Event, 0),
            ],
            old,
        );
        deliver(
            store,
            &[sent_row(c, "clicked", FollowUpKind::Opportunistic, 2)],
            now() - Duration::days(1),
        );
    }
    let waiting = NewSend {
        due_at: old,
        ..sent_row("c0", "clicked", FollowUpKind::Opportunistic, 9)
    };
    store
        .enqueue(std::slice::from_ref(&waiting), old)
        .expect("enqueue");
    // A score snapshot per contact 100 days ago, and one today for c0.
    for (i, c) in people.iter().enumerate() {
        let key = store.contact_key(c).expect("key").expect("known");
        let write = |seen| scored(key, c, 100 + i as i64, seen);
        store.save_scores(&[write(None)], old, &[]).expect("save");
        if i == 0 {
            store
                .save_scores(&[write(Some(old))], now(), &[])
                .expect("save");
        }
    }
    let decisions_before = store.decisions(None, 1000).expect("decisions").len();
    assert_eq!(decisions_before, people.len() * 5);

    let keep = vec!["news".to_string()];
    let cut = Cut {
        sent_before: now() - Duration::days(90),
        keep: &keep,
        decisions_before: now() - Duration::days(90),
        snapshots_before: now() - Duration::days(90),
        limit: 4,
    };
    // A call deletes at most the limit of each kind, oldest first.
    let first = store.prune(&cut).expect("prune");
    assert_eq!(
        first,
        Pruned {
            sent: 4,
            decisions: 4,
            snapshots: 4
        }
    );
    // Two handles prune the rest side by side: each row once, no error.
    let rounds = race(&opened, move |_, store| {
        let keep = vec!["news".to_string()];
        let cut = Cut { keep: &keep, ..cut };
        let mut all = Pruned::default();
        loop {
            let round = store.prune(&cut).expect("prune");
            all.add(round);
            if !round.full(cut.limit) {
                return all;
            }
        }
    });
    let mut total = first;
    for r in rounds {
        total.add(r);
    }
    assert_eq!(
        total,
        Pruned {
            sent: 10,
            decisions: 20,
            snapshots: 5
        }
    );
    assert_eq!(store.prune(&cut).expect("prune"), Pruned::default());

    // What is left: the nurture steps, the running broadcast, the recent
    // sends, the waiting row; their decisions and the recent snapshot.
    let rows = store.outbox_rows(None, 1000).expect("rows");
    let mut left: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        *left
            .entry((r.followup.clone(), r.state.as_str().to_string()))
            .or_default() += 1;
    }
    let expect: BTreeMap<(String, String), usize> = [
        (("clicked".to_string(), "sent".to_string()), 5),
        (("clicked".to_string(), "planned".to_string()), 1),
        (("news".to_string(), "sent".to_string()), 5),
        (("welcome".to_string(), "sent".to_string()), 5),
    ]
    .into_iter()
    .collect();
    assert_eq!(left, expect);
    assert!(store.outbox_row(&waiting.idem_key).expect("row").is_some());
    assert_eq!(store.decisions(None, 1000).expect("decisions").len(), 5);
    assert_eq!(store.score_history("c0", None).expect("film").len(), 1);
    assert!(store.score_history("c1", None).expect("film").is_empty());
    // The sends stay counted: the events they left are history.
    assert_eq!(
        store
            .events_of("c1")
            .expect("events")
            .iter()
            .filter(|e| e.kind == "email_sent")
            .count(),
        5
    );
}

pub fn a_batch_of_contacts_is_written_whole_repeats_in_order(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    let line = |id: &str, field: &str, value: &str| Patch {
        id: id.into(),
        fields: serde_json::Map::from_iter([(field.to_string(), value.into())]),
        ..Patch::default()
    };
    let mut batch: Vec<Patch> = (0..3_000)
        .map(|i| line(&format!("c{i:04}"), "first_name", &format!("F{i}")))
        .collect();
    // One contact twice in the batch, a third line unchanged.
    batch.push(line("c0007", "email", "c7@example.com"));
    batch.push(line("c0007", "email", "c7@example.com"));
    let out = store.upsert_contacts(&batch).expect("upsert");
    assert!(out[..3_000].iter().all(|u| *u == Upsert::Inserted));
    assert_eq!(out[3_000..], [Upsert::Updated, Upsert::Unchanged]);
    let c7 = store.contact("c0007").expect("read").expect("stored");
    assert_eq!(
        (c7.first_name.as_deref(), c7.email.as_deref()),
        (Some("F7"), Some("c7@example.com"))
    );
    assert_eq!(store.counts().expect("counts").contacts, 3_000);
    // Every written contact is queued for rescoring once.
    let lease = now() + Duration::hours(1);
    assert_eq!(
        store.take_changed("p", now(), lease).expect("take").len(),
        3_000
    );
    // Again: nothing changes.
    let again = store.upsert_contacts(&batch[..10]).expect("upsert");
    assert!(again.iter().all(|u| *u == Upsert::Unchanged));
}

/// A batch delivering several sends of a campaign to one contact counts
/// each send and the contact once; a later batch adds to both as needed;
/// a retried row counts once it is delivered.
pub fn campaign_sends_are_counted_per_delivery_in_batches(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    contacts(store, &ids("c", 3));
    let at = now() - Duration::days(1);
    let send = |c: &str, n| sent_row(c, "autumn", FollowUpKind::Event, n);
    deliver(store, &[send("c0", 0), send("c0", 1), send("c1", 0)], at);
    let autumn = || {
        let c = store
            .campaign_counts(&["autumn".to_string()])
            .expect("counts")
            .pop()
            .expect("autumn");
        (c.sent, c.contacts)
    };
    assert_eq!(autumn(), (3, 2));
    let later = at + Duration::hours(1);
    let due = |s: NewSend| NewSend { due_at: later, ..s };
    store
        .enqueue(&[due(send("c0", 2)), due(send("c2", 0))], later)
        .expect("enqueue");
    let lease = later + Duration::minutes(10);
    let rows = store
        .claim_due(later, lease, 10, "d", &mut |row, _, _| allow(row))
        .expect("claim");
    assert_eq!(
        (rows.len(), rows[0].contact.as_str()),
        (2, "c0"),
        "in the order enqueued"
    );
    let retry = Settlement::Retry {
        at: later + Duration::minutes(1),
        error: "503".into(),
    };
    let settled = store
        .settle_many(
            "d",
            &[
                (rows[0].seq, Settlement::Sent, later),
                (rows[1].seq, retry, later),
            ],
        )
        .expect("settle");
    assert_eq!(settled, [true, true]);
    assert_eq!(autumn(), (4, 2), "c0's third send; c2's is retried");
    let again = later + Duration::minutes(2);
    let rows = store
        .claim_due(
            again,
            again + Duration::minutes(10),
            10,
            "d",
            &mut |row, _, _| allow(row),
        )
        .expect("claim");
    assert_eq!(rows.len(), 1, "the retried row");
    store
        .settle_many("d", &[(rows[0].seq, Settlement::Sent, again)])
        .expect("settle");
    assert_eq!(autumn(), (5, 3));
}

pub fn campaign_figures_count_sends_and_folded_reactions_and_survive_retention(backend: Backend) {
    use relance::domain::desk::{DeskEvent, DeskKind, DeskRow, StatusView};
    use relance::ports::store::retention::Cut;
    let opened = backend();
    let store = &opened.store;
    let people = ids("c", 3);
    contacts(store, &people);
    let sent_at = now() - Duration::days(100);
    for c in &people {
        deliver(
            store,
            &[sent_row(c, "spring", FollowUpKind::Event, 0)],
            sent_at,
        );
    }
    let spring = || {
        store
            .campaign_counts(&["spring".to_string()])
            .expect("counts")
            .pop()
            .expect("spring")
    };
    assert_eq!(
        (spring().sent, spring().contacts, spring().opened),
        (3, 3, 0)
    );
    // The scoring pass folds c0's open and click of its send, in the target.
    let key = store.contact_key("c0").expect("key").expect("known");
    let send_key = idempotency_key("c0", "spring", "0");
    let reacted = |kind| DeskEvent {
        at: sent_at + Duration::hours(1),
        kind,
        code: String::new(),
        owner: String::new(),
        key: send_key.clone(),
        reason: String::new(),
    };
    let desk = DeskRow {
        status: StatusView::default(),
        calls: 0,
        last_call: None,
        callback_at: None,
        documentation_at: None,
        do_not_call: None,
        owner: None,
        events: vec![reacted(DeskKind::Open), reacted(DeskKind::Click)],
    };
    let facts = relance::domain::desk::campaigns::CampaignFacts {
        window: Duration::days(30),
        in_target: vec!["spring".to_string()],
    };
    let write = |seen| ScoreWrite {
        desk: Some(desk.clone()),
        campaigns: facts.clone(),
        ..scored(key, "c0", 100, seen)
    };
    store.save_scores(&[write(None)], now(), &[]).expect("save");
    let figures = spring();
    assert_eq!(
        (
            figures.sent,
            figures.opened,
            figures.clicked,
            figures.clicked_in_target
        ),
        (3, 1, 1, 1)
    );
    // Retention deletes the sends; the next fold keeps what was counted.
    let pruned = store
        .prune(&Cut {
            sent_before: now() - Duration::days(90),
            keep: &[],
            decisions_before: sent_at,
            snapshots_before: sent_at,
            limit: 100,
        })
        .expect("prune");
    assert_eq!(pruned.sent, 3);
    let seen = store
        .stored_score("c0")
        .expect("score")
        .map(|s| s.scored_at);
    store
        .save_scores(&[write(seen)], now() + Duration::hours(1), &[])
        .expect("save");
    let figures = spring();
    assert_eq!(
        (
            figures.sent,
            figures.contacts,
            figures.opened,
            figures.clicked
        ),
        (3, 3, 1, 1)
    );
    // An erased contact leaves the figures.
    assert!(store.erase_contact("c0").expect("erase"));
    let figures = spring();
    assert_eq!((figures.sent, figures.contacts, figures.opened), (2, 2, 0));
}

/// A scored contact for the call desk: band, score (hundredths), and its
/// desk row when it was called or has a call-back.
fn scored_lead(
    key: i64,
    id: &str,
    band: &str,
    score: i64,
    desk: Option<DeskRow>,
    owner: Option<&str>,
    seen: Option<Timestamp>,
) -> ScoreWrite {
    ScoreWrite {
        key,
        contact: id.into(),
        score,
        band: band.into(),
        next_change_at: None,
        snapshot: true,
        recent: Vec::new(),
        changes: Vec::new(),
        seen,
        desk,
        campaigns: Default::default(),
        desk_mark: 0,
        hot_lead: (band == "hot").then(|| HotLead {
            owner: owner.map(str::to_owned),
        }),
    }
}

fn desk_row(last_call: Option<Timestamp>, callback_at: Option<Timestamp>) -> DeskRow {
    DeskRow {
        status: StatusView::default(),
        calls: u32::from(last_call.is_some()),
        last_call: last_call.map(|at| (at, "NRP".to_string())),
        callback_at,
        documentation_at: None,
        do_not_call: None,
        owner: None,
        events: Vec::new(),
    }
}

pub fn hot_leads_come_ranked_and_counted(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    let people = [
        ("h1", Some("bob")),
        ("h2", None),
        ("h3", None),
        ("h4", None),
        ("h5", Some("ana")),
        ("w1", None),
    ];
    let batch: Vec<Patch> = people
        .iter()
        .map(|(id, owner)| {
            let mut p = Patch {
                id: (*id).into(),
                ..Patch::default()
            };
            if let Some(o) = owner {
                p.fields.insert("owner".into(), (*o).into());
            }
            p
        })
        .collect();
    store.upsert_contacts(&batch).expect("contacts");
    let key = |id: &str| store.contact_key(id).expect("key").expect("known");
    let yesterday = now() - Duration::days(1);
    let callback = now() - Duration::hours(2);
    let writes = vec![
        scored_lead(key("h1"), "h1", "hot", 8000, None, Some("bob"), None),
        scored_lead(key("h2"), "h2", "hot", 9000, None, None, None),
        // Ties with h1: its call-back ranks it first.
        scored_lead(
            key("h3"),
            "h3",
            "hot",
            8000,
            Some(desk_row(None, Some(callback))),
            None,
            None,
        ),
        // Called yesterday.
        scored_lead(
            key("h4"),
            "h4",
            "hot",
            9500,
            Some(desk_row(Some(yesterday), None)),
            None,
            None,
        ),
        scored_lead(key("h5"), "h5", "hot", 8500, None, Some("ana"), None),
        scored_lead(key("w1"), "w1", "warm", 9900, None, None, None),
    ];
    store.save_scores(&writes, now(), &[]).expect("scores");
    let bands = vec!["hot".to_string()];
    let hot = |days: i64, owner: Option<&'static str>| HotLeads {
        bands: &bands,
        called_before: now() - Duration::days(days),
        owner,
    };
    let ids = |h: &HotLeads<'_>, limit: u32| -> Vec<String> {
        store
            .hot_leads(h, limit)
            .expect("hot leads")
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    // Not called within a week: h4 was, yesterday.
    assert_eq!(ids(&hot(7, None), 10), ["h2", "h5", "h3", "h1"]);
    assert_eq!(store.hot_lead_count(&hot(7, None)).expect("count"), 4);
    assert_eq!(ids(&hot(7, None), 3), ["h2", "h5", "h3"]);
    assert_eq!(ids(&hot(7, None), 1), ["h2"]);
    // Not called since now: h4 too.
    assert_eq!(ids(&hot(0, None), 10), ["h4", "h2", "h5", "h3", "h1"]);
    assert_eq!(store.hot_lead_count(&hot(0, None)).expect("count"), 5);
    // Called before exactly yesterday's call: not yet.
    let just = HotLeads {
        bands: &bands,
        called_before: yesterday,
        owner: None,
    };
    assert_eq!(store.hot_lead_count(&just).expect("count"), 4);
    assert_eq!(ids(&hot(7, Some("ana")), 10), ["h5"]);
    assert_eq!(
        store.hot_lead_count(&hot(7, Some("ana"))).expect("count"),
        1
    );
    assert_eq!(
        store.hot_lead_count(&hot(7, Some("eve"))).expect("count"),
        0
    );

    // The call-back due, with its rank and whether it is a hot lead.
    let due = store
        .callbacks_due(now(), &hot(7, None))
        .expect("call-backs");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, "h3");
    assert_eq!(due[0].score, Some(8000));
    assert_eq!(due[0].callback_at, Some(callback));
    assert!(due[0].hot);
    let ranked = store
        .ranked(&["w1".into(), "h1".into(), "nobody".into()], &hot(7, None))
        .expect("ranked");
    let seen: Vec<(&str, bool, Option<&str>)> = ranked
        .iter()
        .map(|r| (r.id.as_str(), r.hot, r.owner.as_deref()))
        .collect();
    assert_eq!(seen, [("w1", false, None), ("h1", true, Some("bob"))]);

    // A new owner, a lead cooling down, an erasure: the counts follow.
    let mut to_ana = Patch {
        id: "h1".into(),
        ..Patch::default()
    };
    to_ana.fields.insert("owner".into(), "ana".into());
    store.upsert_contacts(&[to_ana]).expect("owner");
    assert_eq!(ids(&hot(7, Some("ana")), 10), ["h5", "h1"]);
    assert_eq!(
        store.hot_lead_count(&hot(7, Some("ana"))).expect("count"),
        2
    );
    let seen = store.stored_score("h2").expect("score").expect("scored");
    store
        .save_scores(
            &[scored_lead(
                key("h2"),
                "h2",
                "warm",
                6000,
                None,
                None,
                Some(seen.scored_at),
            )],
            now(),
            &[],
        )
        .expect("cooled");
    assert!(store.erase_contact("h5").expect("erase"));
    assert_eq!(ids(&hot(7, None), 10), ["h3", "h1"]);
    assert_eq!(store.hot_lead_count(&hot(7, None)).expect("count"), 2);
    assert_eq!(
        store.hot_lead_count(&hot(7, Some("ana"))).expect("count"),
        1
    );
}

/// A claim in batches decides each row after the rows of its contact
/// before it (their reservations count), hands each claimed row over as
/// stored, with the contact, its company and its score, and takes back a
/// row whose lease expired without counting that row's stale reservation.
pub fn a_batch_claim_hands_over_each_row_with_what_its_request_needs(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    let mut name = serde_json::Map::new();
    name.insert("name".into(), "Acme".into());
    let acme = Patch {
        id: "acme".into(),
        fields: name,
        ..Patch::default()
    };
    store.upsert_companies(&[acme]).expect("company");
    let people = ids("c", 3);
    let batch: Vec<Patch> = people
        .iter()
        .map(|id| {
            let mut fields = serde_json::Map::new();
            fields.insert("company".into(), "acme".into());
            fields.insert("first_name".into(), id.to_uppercase().into());
            Patch {
                id: id.clone(),
                fields,
                ..Patch::default()
            }
        })
        .collect();
    store.upsert_contacts(&batch).expect("contacts");
    let key = store.contact_key("c0").expect("key").expect("known");
    store
        .save_scores(&[scored(key, "c0", 150, None)], now(), &[])
        .expect("score");
    let sends: Vec<NewSend> = people
        .iter()
        .flat_map(|c| {
            ["email", "sms"]
                .into_iter()
                .flat_map(move |ch| (0..3).map(move |i| send(c, i, ch)))
        })
        .collect();
    store.enqueue(&sends, now()).expect("enqueue");
    let lease = now() + Duration::minutes(10);
    let claimed = store
        .claim_batch(now(), lease, 100, "a", &mut capped(1, 3))
        .expect("claim");
    let mut per_contact: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &claimed {
        per_contact
            .entry(c.row.contact.as_str())
            .or_default()
            .push(c.row.channel.as_str());
        assert_eq!(c.contact.id, c.row.contact);
        assert_eq!(c.contact.first_name, Some(c.row.contact.to_uppercase()));
        let company = c.company.as_ref().expect("its company");
        assert_eq!(company.name.as_deref(), Some("Acme"));
        let scored = c.score.as_ref().map(|s| (s.score, s.band.as_str()));
        let expected = (c.row.contact == "c0").then_some((150, "warm"));
        assert_eq!(scored, expected, "{}", c.row.contact);
        assert_eq!(
            (c.row.attempts, c.row.lease_until, c.row.state),
            (1, Some(lease), State::Claimed)
        );
        // Handed over as stored.
        let stored = store
            .outbox_row(&c.row.idem_key)
            .expect("read")
            .expect("row");
        assert_eq!(stored, c.row);
    }
    // One send per channel: the second of each was blocked by the
    // reservation the batch had just made.
    assert_eq!(per_contact.len(), people.len());
    for (contact, mut channels) in per_contact {
        channels.sort_unstable();
        assert_eq!(channels, ["email", "sms"], "{contact}");
    }
    // A blocked row is put back as it was due, its attempt not counted and
    // no lease left on it.
    let handed: BTreeSet<&str> = claimed.iter().map(|c| c.row.idem_key.as_str()).collect();
    let blocked: Vec<Row> = sends
        .iter()
        .filter(|s| !handed.contains(s.idem_key.as_str()))
        .map(|s| store.outbox_row(&s.idem_key).expect("read").expect("row"))
        .collect();
    assert_eq!(blocked.len(), sends.len() - claimed.len());
    for row in &blocked {
        assert_eq!(
            (row.state, row.attempts, row.lease_until, row.due_at),
            (State::Blocked, 0, None, now()),
            "{}",
            row.idem_key
        );
    }
    // The lease expires: each row is decided again without its own stale
    // reservation, and claimed for a second attempt under the same key.
    let later = lease + Duration::minutes(1);
    let again = store
        .claim_batch(
            later,
            later + Duration::minutes(10),
            100,
            "b",
            &mut capped(1, 3),
        )
        .expect("claim again");
    let keys =
        |c: &[Claimed]| -> BTreeSet<String> { c.iter().map(|c| c.row.idem_key.clone()).collect() };
    assert_eq!(keys(&again), keys(&claimed));
    assert!(again.iter().all(|c| c.row.attempts == 2), "{again:?}");
}

/// A rebuild reads the companies of its key range at once where the store
/// offers it: exactly those of the range's contacts, each with its signals.
pub fn the_companies_of_a_key_range_come_at_once(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    let companies: Vec<Patch> = ["acme", "globex", "initech"]
        .into_iter()
        .map(|id| {
            let mut fields = serde_json::Map::new();
            fields.insert("name".into(), id.to_uppercase().into());
            Patch {
                id: id.into(),
                fields,
                ..Patch::default()
            }
        })
        .collect();
    store.upsert_companies(&companies).expect("companies");
    let signal = relance::core::model::BusinessSignal {
        kind: "funding".into(),
        at: now(),
        props: serde_json::Map::new(),
    };
    let signalled = Incoming::Company {
        company: "globex".into(),
        signal: signal.clone(),
    };
    store.append_events(&[signalled]).expect("signal");
    // In key order: two of acme's, one of globex's, one of initech's, one
    // without a company.
    let of = [
        Some("acme"),
        Some("acme"),
        Some("globex"),
        Some("initech"),
        None,
    ];
    let people: Vec<Patch> = of
        .iter()
        .enumerate()
        .map(|(i, company)| {
            let mut fields = serde_json::Map::new();
            if let Some(c) = company {
                fields.insert("company".into(), (*c).into());
            }
            Patch {
                id: format!("p{i}"),
                fields,
                ..Patch::default()
            }
        })
        .collect();
    for p in &people {
        store
            .upsert_contacts(std::slice::from_ref(p))
            .expect("contact");
    }
    let key = |i: usize| {
        store
            .contact_key(&format!("p{i}"))
            .expect("key")
            .expect("known")
    };
    let read = |range: (i64, i64)| -> Option<Vec<(String, Option<String>, usize)>> {
        let mut got: Vec<_> = store
            .companies_in_range(range)
            .expect("read")?
            .into_iter()
            .map(|c| {
                if c.id == "globex" {
                    assert_eq!(c.signals, std::slice::from_ref(&signal));
                }
                (c.id, c.name, c.signals.len())
            })
            .collect();
        got.sort();
        Some(got)
    };
    let Some(first) = read((key(0), key(3))) else {
        // This store reads companies one at a time.
        return;
    };
    assert_eq!(
        first,
        [
            ("acme".to_string(), Some("ACME".to_string()), 0),
            ("globex".to_string(), Some("GLOBEX".to_string()), 1)
        ]
    );
    let rest = read((key(3), key(4) + 1)).expect("the same store");
    assert_eq!(
        rest,
        [("initech".to_string(), Some("INITECH".to_string()), 0)]
    );
    assert_eq!(read((key(4), key(4) + 1)), Some(Vec::new()));
}

/// Every rescoring read (the rebuild's scan, a batch of keys, one key)
/// hands over each contact's events whole and oldest first: producer
/// ids, channels, nested and repeated props, none of another contact's.
pub fn every_rescoring_read_hands_over_each_event_whole(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    let people = ids("r", 4);
    contacts(store, &people);
    let mut visit = serde_json::Map::new();
    visit.insert("url".into(), "https://example.com/pricing?a=é".into());
    visit.insert(
        "depth".into(),
        serde_json::json!({"pages": [1, 2], "ok": true}),
    );
    let ev = |contact: &str,
              id: Option<&str>,
              kind: &str,
              at: &str,
              channel: Option<&str>,
              props: &serde_json::Map<String, serde_json::Value>| Event {
        id: id.map(str::to_string),
        contact: contact.into(),
        kind: kind.into(),
        at: t(at),
        channel: channel.map(str::to_string),
        props: props.clone(),
    };
    let none = serde_json::Map::new();
    let mut bounce = serde_json::Map::new();
    bounce.insert("code".into(), 550.into());
    // r2 has no events; r0's come out of order; r3's two share an instant
    // and come in the order appended.
    let expected = [
        vec![
            ev(
                "r0",
                None,
                "page_visit",
                "2026-11-01T10:00:00Z",
                None,
                &visit,
            ),
            ev(
                "r0",
                Some("r0-open"),
                "email_open",
                "2026-11-02T10:00:00Z",
                Some("email"),
                &none,
            ),
            ev(
                "r0",
                None,
                "page_visit",
                "2026-11-03T10:00:00Z",
                Some("web"),
                &visit,
            ),
        ],
        vec![ev(
            "r1",
            Some("r1-a"),
            "form_submit",
            "2026-11-04T08:30:00.123456Z",
            None,
            &visit,
        )],
        Vec::new(),
        vec![
            ev(
                "r3",
                None,
                "unsubscribe",
                "2026-11-05T00:00:00Z",
                Some("email"),
                &none,
            ),
            ev(
                "r3",
                None,
                "email_bounce",
                "2026-11-05T00:00:00Z",
                None,
                &bounce,
            ),
        ],
    ];
    let mut appended: Vec<Incoming> = expected
        .iter()
        .flatten()
        .map(|e| Incoming::Contact(e.clone()))
        .collect();
    appended.swap(0, 2);
    store.append_events(&appended).expect("append");
    let keys: Vec<i64> = people
        .iter()
        .map(|id| store.contact_key(id).expect("key").expect("known"))
        .collect();
    let want: Vec<(i64, String, Vec<Event>)> = keys
        .iter()
        .zip(&people)
        .zip(&expected)
        .map(|((k, id), events)| (*k, id.clone(), events.clone()))
        .collect();

    let bounds = store.contact_bounds().expect("bounds").expect("contacts");
    let mut scanned = Vec::new();
    store
        .scan_for_rescore(
            (bounds.0, bounds.1 + 1),
            &mut |key, contact, events, previous| {
                assert_eq!(previous, None);
                scanned.push((key, contact.id, events.to_vec()));
                Ok(())
            },
        )
        .expect("scan");
    assert_eq!(scanned, want, "the rebuild's scan");

    let mut inputs = Vec::new();
    store.rescore_inputs(&keys, &mut inputs).expect("inputs");
    let batch: Vec<_> = inputs
        .into_iter()
        .map(|(key, contact, events, _)| (key, contact.id, events))
        .collect();
    assert_eq!(batch, want, "a batch of keys");

    for (key, id, events) in &want {
        let (contact, got, previous) = store.rescore_input(*key).expect("one").expect("known");
        assert_eq!((&contact.id, &got, previous), (id, events, None), "one key");
    }
}

/// A full pass lists every contact by its key, ascending, before it
/// starts: each key once, an erased contact's gone, and a contact added
/// after is listed by the next call.
pub fn every_contact_is_listed_by_its_key_in_order(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    assert_eq!(store.contact_keys().expect("keys"), Vec::<i64>::new());
    let people: Vec<Patch> = (0..300)
        .map(|i| Patch {
            id: format!("k{i}"),
            ..Patch::default()
        })
        .collect();
    store.upsert_contacts(&people).expect("contacts");
    assert!(store.erase_contact("k7").expect("erase"));
    let mut expected: Vec<i64> = (0..300)
        .filter(|&i| i != 7)
        .map(|i| {
            store
                .contact_key(&format!("k{i}"))
                .expect("key")
                .expect("known")
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(store.contact_keys().expect("keys"), expected);
    store
        .upsert_contacts(&[Patch {
            id: "late".into(),
            ..Patch::default()
        }])
        .expect("late contact");
    let late = store.contact_key("late").expect("key").expect("known");
    expected.push(late);
    expected.sort_unstable();
    assert_eq!((*opened.again)().contact_keys().expect("keys"), expected);
}

/// A pass reads a contact, the contact is erased, then the pass saves its
/// plan: nothing of it is written (no row, decision or wake), the rest of
/// the batch is, and the save is no error.
fn a_plan_for_a_contact_erased_since_its_read_keeps_nothing_of_it(backend: Backend) {
    let opened = backend();
    let store = &opened.store;
    contacts(store, &["gone".into(), "kept".into()]);
    let key = |id: &str| store.contact_key(id).expect("key").expect("known");
    let (gone, kept) = (key("gone"), key("kept"));
    let later = now() + Duration::days(2);
    let write = |key: i64, contact: &str| PlanWrite {
        key,
        rows: vec![PlanRow {
            send: send(contact, 0, "email"),
            state: State::Planned,
            first_due: now(),
            decision: Verdict::Allow,
            reasons: Vec::new(),
        }],
        drops: Vec::new(),
        wake: Some(later),
        wake_was: None,
        memo: None,
    };
    assert!(store.erase_contact("gone").expect("erase"));
    store
        .save_plan(&[write(gone, "gone"), write(kept, "kept")], now())
        .expect("a plan for an erased contact is no error");
    let rows = store.outbox_rows(None, 100).expect("rows");
    assert_eq!(
        rows.iter().map(|r| r.contact.as_str()).collect::<Vec<_>>(),
        ["kept"],
        "outbox rows"
    );
    let decided: u64 = store
        .decision_reasons(now() - Duration::days(1), later)
        .expect("decisions")
        .iter()
        .map(|d| d.n)
        .sum();
    assert_eq!(decided, 1, "decisions counted on the dashboard");
    assert_eq!(
        store
            .plan_candidates(later, i64::MAX, i64::MAX)
            .expect("woken"),
        [kept],
        "contacts to wake"
    );
}

/// One `#[test]` per case for a backend: a new backend adds its
/// [`Backend`] and a line `contract!(name);`.
macro_rules! contract {
    ($backend:ident) => {
        mod $backend {
            #[test]
            fn events_are_kept_once_and_numbered_upwards_across_handles() {
                super::events_are_kept_once_and_numbered_upwards_across_handles(super::$backend);
            }
            #[test]
            fn no_outbox_row_is_claimed_twice() {
                super::no_outbox_row_is_claimed_twice(super::$backend);
            }
            #[test]
            fn caps_and_the_budget_hold_when_two_claimers_race() {
                super::caps_and_the_budget_hold_when_two_claimers_race(super::$backend);
            }
            #[test]
            fn changed_contacts_are_taken_once() {
                super::changed_contacts_are_taken_once(super::$backend);
            }
            #[test]
            fn progress_marks_are_compared_and_set() {
                super::progress_marks_are_compared_and_set(super::$backend);
            }
            #[test]
            fn a_schedule_is_held_by_one_owner() {
                super::a_schedule_is_held_by_one_owner(super::$backend);
            }
            #[test]
            fn a_score_is_written_by_one_of_two_passes() {
                super::a_score_is_written_by_one_of_two_passes(super::$backend);
            }
            #[test]
            fn retention_prunes_old_rows_in_batches_and_keeps_what_planning_reads() {
                super::retention_prunes_old_rows_in_batches_and_keeps_what_planning_reads(
                    super::$backend,
                );
            }
            #[test]
            fn a_batch_of_contacts_is_written_whole_repeats_in_order() {
                super::a_batch_of_contacts_is_written_whole_repeats_in_order(super::$backend);
            }
            #[test]
            fn campaign_sends_are_counted_per_delivery_in_batches() {
                super::campaign_sends_are_counted_per_delivery_in_batches(super::$backend);
            }
            #[test]
            fn campaign_figures_count_sends_and_folded_reactions_and_survive_retention() {
                super::campaign_figures_count_sends_and_folded_reactions_and_survive_retention(
                    super::$backend,
                );
            }
            #[test]
            fn hot_leads_come_ranked_and_counted() {
                super::hot_leads_come_ranked_and_counted(super::$backend);
            }
            #[test]
            fn a_batch_claim_hands_over_each_row_with_what_its_request_needs() {
                super::a_batch_claim_hands_over_each_row_with_what_its_request_needs(
                    super::$backend,
                );
            }
            #[test]
            fn the_companies_of_a_key_range_come_at_once() {
                super::the_companies_of_a_key_range_come_at_once(super::$backend);
            }
            #[test]
            fn every_rescoring_read_hands_over_each_event_whole() {
                super::every_rescoring_read_hands_over_each_event_whole(super::$backend);
            }
            #[test]
            fn every_contact_is_listed_by_its_key_in_order() {
                super::every_contact_is_listed_by_its_key_in_order(super::$backend);
            }
            #[test]
            fn a_plan_for_a_contact_erased_since_its_read_keeps_nothing_of_it() {
                super::a_plan_for_a_contact_erased_since_its_read_keeps_nothing_of_it(
                    super::$backend,
                );
            }
            #[test]
            fn waiting_for_events_sees_other_handles() {
                super::waiting_for_events_sees_other_handles(super::$backend);
            }
        }
    };
}

contract!(sqlite);
contract!(pg);
