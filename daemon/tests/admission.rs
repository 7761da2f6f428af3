//! Claims with the guard's admission: a cap and the budget hold when
//! several threads claim the same contact's sends at once through one
//! store handle.

use relance::core::model::{FollowUpKind, Timestamp};
use relance::domain::fatigue::Verdict;
use relance::domain::fatigue::admit::admit;
use relance::domain::ingest::{Format, Kind, read_lines};
use relance::domain::outbox::{NewSend, Payload, Settlement, State, idempotency_key};
use relance::pipeline::config::Config;
use relance::ports::store::StoreHandle;
use std::path::Path;
use std::sync::{Arc, Barrier};

/// The shipped configuration with a daily budget of five, so that the
/// caps are what these tests meet.
fn config(dir: &Path) -> Config {
    shipped(dir, |t| {
        t.replace(
            "[followups.arbitration.budget]\ncount = 1",
            "[followups.arbitration.budget]\ncount = 5",
        )
    })
}

fn shipped(dir: &Path, edit: impl Fn(&str) -> String) -> Config {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let text = edit(&std::fs::read_to_string(&file).expect("shipped config"));
    let db = dir.join("g.db").display().to_string();
    Config::parse(&text, &file, &|n| (n == "RELANCE_DB").then(|| db.clone())).expect("valid")
}

/// Tuesday 10:00 in Paris: inside the email window.
fn now() -> Timestamp {
    chrono::DateTime::parse_from_rfc3339("2026-11-17T09:00:00Z")
        .expect("valid")
        .with_timezone(&chrono::Utc)
}

fn send(n: usize) -> NewSend {
    NewSend {
        idem_key: idempotency_key("p", &format!("campaign-{n}"), "1"),
        contact: "p".into(),
        followup: format!("campaign-{n}"),
        kind: FollowUpKind::Event,
        priority: 20,
        channel: "email".into(),
        due_at: now(),
        payload: Payload::default(),
    }
}

/// A store with contact `p`, in Paris.
fn store_with_p(cfg: &Config) -> StoreHandle {
    let store = relance::adapters::sqlite::open(cfg).expect("store");
    let contacts: Vec<_> = read_lines(
        "id,timezone\np,Europe/Paris\n".as_bytes(),
        Format::Csv,
        Kind::Contact,
    )
    .expect("csv")
    .map(|l| l.item.expect("valid"))
    .collect();
    store.upsert_contacts(&contacts).expect("contact");
    store
}

#[test]
fn concurrent_claims_never_pass_a_cap_together() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = Arc::new(config(dir.path()));
    let store = store_with_p(&cfg);
    let sends: Vec<NewSend> = (0..8).map(send).collect();
    store.enqueue(&sends, now()).expect("enqueue");

    let workers = 4;
    let barrier = Arc::new(Barrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (cfg, barrier) = (cfg.clone(), barrier.clone());
            std::thread::spawn(move || {
                let guard = cfg.guard().expect("guard");
                let store = relance::adapters::sqlite::open(&cfg).expect("store");
                let owner = format!("worker-{w}");
                let lease = now() + chrono::Duration::minutes(5);
                barrier.wait();
                let mut claimed = 0;
                loop {
                    let rows = store
                        .claim_due(now(), lease, 1, &owner, &mut |row, contact, weighs| {
                            admit(
                                &guard,
                                &cfg.channels,
                                &row.candidate(),
                                contact,
                                weighs,
                                now(),
                            )
                        })
                        .expect("claim");
                    let depth = store.outbox_depth().expect("depth");
                    claimed += rows.len();
                    if depth[&State::Planned] == 0 {
                        return claimed;
                    }
                }
            })
        })
        .collect();
    let claimed: usize = handles.into_iter().map(|h| h.join().expect("worker")).sum();
    assert_eq!(claimed, 2, "the email cap admits two sends in seven days");

    let depth = store.outbox_depth().expect("depth");
    assert_eq!((depth[&State::Claimed], depth[&State::Deferred]), (2, 6));
    let decisions = store.decisions(Some("p"), 100).expect("log");
    assert_eq!(decisions.len(), 8, "every decision is logged");
    let deferred: Vec<_> = decisions
        .iter()
        .filter(|d| d.decision == Verdict::Defer)
        .collect();
    assert_eq!(deferred.len(), 6);
    // The cap frees seven days after the first send.
    assert!(
        deferred
            .iter()
            .all(|d| d.until == Some(now() + chrono::Duration::days(7))),
        "{deferred:?}"
    );
    assert!(
        deferred
            .iter()
            .all(|d| d.reasons.to_string().contains("\"cap\""))
    );
}

/// Seed 004 at claim time: whatever planned them (another pass, the
/// API), two solicitations due the same local day never both go.
#[test]
fn the_daily_budget_holds_at_claim_time_across_channels_and_claimers() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = Arc::new(shipped(dir.path(), str::to_string));
    let store = store_with_p(&cfg);
    let mut call = send(1);
    call.channel = "phone".into();
    call.kind = FollowUpKind::Opportunistic;
    call.priority = 30;
    store.enqueue(&[send(0), call], now()).expect("enqueue");
    let workers = 2;
    let barrier = Arc::new(Barrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (cfg, barrier) = (cfg.clone(), barrier.clone());
            std::thread::spawn(move || {
                let guard = cfg.guard().expect("guard");
                let store = relance::adapters::sqlite::open(&cfg).expect("store");
                let lease = now() + chrono::Duration::minutes(5);
                barrier.wait();
                store
                    .claim_due(now(), lease, 1, &format!("w{w}"), &mut |row, c, weighs| {
                        admit(&guard, &cfg.channels, &row.candidate(), c, weighs, now())
                    })
                    .expect("claim")
                    .len()
            })
        })
        .collect();
    let claimed: usize = handles.into_iter().map(|h| h.join().expect("worker")).sum();
    assert_eq!(claimed, 1, "one solicitation a day");
    let decisions = store.decisions(Some("p"), 10).expect("log");
    let deferred: Vec<_> = decisions
        .iter()
        .filter(|d| d.decision == Verdict::Defer)
        .collect();
    assert_eq!(deferred.len(), 1, "{decisions:?}");
    assert!(deferred[0].reasons.to_string().contains("\"budget\""));
    // Tuesday 17 November in Paris is full; Wednesday opens at 00:00
    // local, then the send window of the channel held (email 08:00,
    // phone 09:00 Paris).
    let until = deferred[0].until.expect("until").to_rfc3339();
    assert!(
        ["2026-11-18T07:00:00+00:00", "2026-11-18T08:00:00+00:00"].contains(&until.as_str()),
        "{until}"
    );
}

#[test]
fn a_delivered_send_becomes_an_event_and_a_failed_one_is_released() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path());
    let guard = cfg.guard().expect("guard");
    let store = store_with_p(&cfg);
    store.enqueue(&[send(0), send(1)], now()).expect("enqueue");
    let lease = now() + chrono::Duration::minutes(5);
    let rows = store
        .claim_due(now(), lease, 10, "a", &mut |row, contact, weighs| {
            admit(
                &guard,
                &cfg.channels,
                &row.candidate(),
                contact,
                weighs,
                now(),
            )
        })
        .expect("claim");
    assert_eq!(rows.len(), 2);
    let (_, weighs) = store.guard_input("p").expect("read").expect("contact");
    assert_eq!(
        weighs.iter().filter(|e| e.kind == "email_sent").count(),
        2,
        "both reserved"
    );

    assert!(
        store
            .settle(rows[0].seq, "a", &Settlement::Sent, now())
            .expect("settle")
    );
    let failed = Settlement::Retry {
        at: now() + chrono::Duration::hours(1),
        error: "421".into(),
    };
    assert!(
        store
            .settle(rows[1].seq, "a", &failed, now())
            .expect("settle")
    );
    let events = store.events_of("p").expect("events");
    assert_eq!(events.len(), 1, "the delivered send is now an event");
    assert_eq!(
        (events[0].kind.as_str(), events[0].id.as_deref()),
        ("email_sent", Some(rows[0].idem_key.as_str()))
    );
    let (_, weighs) = store.guard_input("p").expect("read").expect("contact");
    assert_eq!(weighs.len(), 1, "the failed send no longer weighs");
}
