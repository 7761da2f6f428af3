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
use relance::domain::ingest::{Incoming, Patch};
use relance::domain::outbox::{NewSend, Payload, Row, Settlement, State, idempotency_key};
use relance::ports::store::{
    Admission, AdmissionVerdict, Append, Claimed, PassMark, ScoreWrite, StoreHandle, StoredChange,
    Upsert,
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

/// A first score for `c0` (internal key `key`), warm, without changes.
fn warm_c0(key: i64, score: i64) -> ScoreWrite {
    ScoreWrite {
        key,
        contact: "c0".into(),
        score,
        band: "warm".into(),
        next_change_at: None,
        snapshot: true,
        desk: None,
        campaigns: Default::default(),
        recent: Vec::new(),
        changes: Vec::new(),
        seen: None,
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
        seen,
        ..warm_c0(key, score)
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
        .save_scores(&[warm_c0(key, 150)], now(), &[])
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
            fn a_batch_claim_hands_over_each_row_with_what_its_request_needs() {
                super::a_batch_claim_hands_over_each_row_with_what_its_request_needs(
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
