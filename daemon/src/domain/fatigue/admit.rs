//! The guard in front of the outbox: turns its decision for one pending
//! send into what the store records in the claim transaction. Pure: plain
//! data in ([`Candidate`]), an [`Admission`] out.

use super::guard::{Decision, Guard, Proposal, Verdict};
use super::state::ContactState;
use crate::core::config::Config;
use crate::core::model::{Contact, Event, FollowUpKind, Timestamp};
use serde_json::json;

/// A pending send put to the guard at claim time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub channel: &'a str,
    pub kind: FollowUpKind,
    pub priority: i32,
    /// Transactional: passes fatigue, caps and the budget (not the windows).
    pub exempt: bool,
    /// When it was first due: the maximum deferral counts from here.
    pub first_due: Timestamp,
}

/// The guard's answer for one pending send, as the store records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    pub verdict: AdmissionVerdict,
    /// Machine-readable reasons, logged as they are.
    pub reasons: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AdmissionVerdict {
    /// Claim the row and reserve a send recorded as `event_type`.
    Allow {
        event_type: String,
    },
    Defer {
        until: Timestamp,
    },
    Block,
}

impl AdmissionVerdict {
    pub fn verdict(&self) -> Verdict {
        match self {
            AdmissionVerdict::Allow { .. } => Verdict::Allow,
            AdmissionVerdict::Defer { .. } => Verdict::Defer,
            AdmissionVerdict::Block => Verdict::Block,
        }
    }
}

/// Decides `send` for `contact`, whose events and in-flight reservations
/// are `weighs` (oldest first).
pub fn admit(
    guard: &Guard,
    config: &Config,
    send: &Candidate<'_>,
    contact: &Contact,
    weighs: &[Event],
    now: Timestamp,
) -> Admission {
    let Some(channel) = guard.channel(send.channel) else {
        return block(json!([{ "rule": "unknown_channel", "channel": send.channel }]));
    };
    let Some(event_type) = config.channels.get(send.channel).map(|c| c.event.clone()) else {
        return block(json!([{ "rule": "unknown_channel", "channel": send.channel }]));
    };
    // Only what happened by `now` weighs (an event imported with a later
    // instant counts from then on).
    let state = match ContactState::replay(guard, contact, weighs.iter().filter(|e| e.at <= now)) {
        Ok(s) => s,
        Err(e) => return block(json!([{ "rule": "history", "error": e.to_string() }])),
    };
    let proposal = Proposal {
        channel,
        kind: send.kind,
        priority: u32::try_from(send.priority).ok(),
        exempt: send.exempt,
        first_proposed: Some(send.first_due),
    };
    let decision = guard.decide(&proposal, &state, now);
    let reasons = serde_json::to_value(&decision.reasons)
        .unwrap_or_else(|e| json!([{ "rule": "unserializable", "error": e.to_string() }]));
    Admission {
        verdict: verdict(&decision, event_type),
        reasons,
    }
}

fn verdict(decision: &Decision, event_type: String) -> AdmissionVerdict {
    match (decision.decision, decision.until) {
        (Verdict::Allow, _) => AdmissionVerdict::Allow { event_type },
        (Verdict::Defer, Some(until)) => AdmissionVerdict::Defer { until },
        (Verdict::Defer, None) | (Verdict::Drop | Verdict::Block, _) => AdmissionVerdict::Block,
    }
}

fn block(reasons: serde_json::Value) -> Admission {
    Admission {
        verdict: AdmissionVerdict::Block,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ingest::{Format, Kind, read_lines};
    use crate::domain::outbox::{NewSend, Payload, Settlement, State, idempotency_key};
    use crate::ports::store::StoreHandle;
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
        let store = crate::adapters::sqlite::open(cfg).expect("store");
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
                    let guard = Guard::from_config(&cfg).expect("guard");
                    let store = crate::adapters::sqlite::open(&cfg).expect("store");
                    let owner = format!("worker-{w}");
                    let lease = now() + chrono::Duration::minutes(5);
                    barrier.wait();
                    let mut claimed = 0;
                    loop {
                        let rows = store
                            .claim_due(now(), lease, 1, &owner, &mut |row, contact, weighs| {
                                admit(&guard, &cfg, &row.candidate(), contact, weighs, now())
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
                    let guard = Guard::from_config(&cfg).expect("guard");
                    let store = crate::adapters::sqlite::open(&cfg).expect("store");
                    let lease = now() + chrono::Duration::minutes(5);
                    barrier.wait();
                    store
                        .claim_due(now(), lease, 1, &format!("w{w}"), &mut |row, c, weighs| {
                            admit(&guard, &cfg, &row.candidate(), c, weighs, now())
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
        let guard = Guard::from_config(&cfg).expect("guard");
        let store = store_with_p(&cfg);
        store.enqueue(&[send(0), send(1)], now()).expect("enqueue");
        let lease = now() + chrono::Duration::minutes(5);
        let rows = store
            .claim_due(now(), lease, 10, "a", &mut |row, contact, weighs| {
                admit(&guard, &cfg, &row.candidate(), contact, weighs, now())
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
}
