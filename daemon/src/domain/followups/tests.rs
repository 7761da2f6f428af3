//! Planner and arbitration scenarios at exact instants, on the shipped
//! configuration where it matters.

use super::*;
use crate::core::condition::ConditionConfig;
use crate::core::model::{
    BusinessSignal, Company, Contact, Event, FollowUpKind, Status, Timestamp,
};
use crate::domain::fatigue::{ContactState, Fatigue, FatiguePoints, Reason};
use crate::domain::scoring::{ChangeKind, Points, ScoreChange};
use crate::pipeline::config::Config;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::path::Path;

fn shipped() -> Config {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    Config::load(&file).unwrap_or_else(|e| panic!("{e}"))
}

fn compiled() -> CompiledFollowups {
    shipped()
        .followups
        .compile()
        .expect("shipped [followups] compiles")
}

fn utc(s: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(s)
        .expect("valid")
        .with_timezone(&Utc)
}

/// Wednesday 2026-03-25, 11:00 in Paris: every send window is open.
fn wednesday() -> Timestamp {
    utc("2026-03-25T10:00:00Z")
}

fn prospect(tier: &str) -> Contact {
    Contact {
        id: "p".into(),
        status: Status::Prospect,
        tier: Some(tier.into()),
        timezone: Some(chrono_tz::Europe::Paris),
        ..Contact::default()
    }
}

fn event(id: &str, kind: &str, at: Timestamp, props: serde_json::Value) -> Event {
    Event {
        id: Some(id.into()),
        contact: "p".into(),
        kind: kind.into(),
        at,
        channel: None,
        props: props.as_object().cloned().unwrap_or_default(),
    }
}

fn call(id: &str, at: Timestamp, outcome: &str) -> Event {
    event(id, "call", at, json!({ "outcome": outcome }))
}

fn view<'a>(
    contact: &'a Contact,
    events: &'a [Event],
    band: &'a str,
    state: &'a PlanState,
) -> ContactView<'a> {
    ContactView {
        contact,
        company: None,
        events,
        earlier: &[],
        calls: compiled().calls.status(events),
        since: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        band: Some(band),
        score: None,
        prospect: None,
        changes: &[],
        state,
    }
}

fn seminar(now: Timestamp) -> Broadcast {
    BroadcastSpec {
        id: "seminar-2026-04".into(),
        name: "payroll_seminar".into(),
        segment: toml::from_str::<ConditionConfig>(r#"field = "status""#)
            .map(|mut c| {
                c.eq = Some(
                    toml::from_str::<toml::Value>("v = \"prospect\"").expect("toml")["v"]
                        .clone()
                        .try_into()
                        .expect("literal"),
                );
                c
            })
            .expect("condition"),
        channel: "email".into(),
        template: "seminar_invitation".into(),
        exempt: false,
        start: now,
        end: now + Duration::days(14),
        priority: None,
    }
    .compile()
    .expect("valid broadcast")
}

fn names(planned: &[Planned]) -> Vec<&str> {
    planned.iter().map(|p| p.followup.as_str()).collect()
}

#[test]
fn nurture_enrols_cold_prospects_plans_steps_and_exits_when_hot() {
    let f = compiled();
    let now = wednesday();
    let contact = prospect("target_1");
    let mut state = PlanState::default();

    let first = plan(&f, &view(&contact, &[], "cold", &state), &[], now);
    assert_eq!(names(&first), ["prospects_target_1_2"]);
    assert_eq!(first[0].kind, FollowUpKind::Systematic);
    assert_eq!(first[0].channel, "email");
    assert_eq!(first[0].template, "nurture_welcome");
    assert_eq!(first[0].due, now);
    assert_eq!(first[0].priority, 10);
    assert_eq!(
        first[0].occurrence,
        Occurrence::Step {
            index: 0,
            enrolled_at: now
        }
    );
    state.record(&first);

    // Nothing new until the call step, 21 days after the email.
    let later = now + Duration::days(10);
    assert!(plan(&f, &view(&contact, &[], "warm", &state), &[], later).is_empty());
    let later = now + Duration::days(20) + Duration::hours(12);
    let second = plan(&f, &view(&contact, &[], "warm", &state), &[], later);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].template, "call_task");
    assert_eq!(second[0].due, now + Duration::days(21));
    assert_eq!(
        second[0].occurrence,
        Occurrence::Step {
            index: 1,
            enrolled_at: now
        }
    );

    // Hot: sales take over, the sequence stops.
    assert!(plan(&f, &view(&contact, &[], "hot", &state), &[], later).is_empty());
    // Hot contacts never enter; nor do contacts outside the segment.
    let fresh = PlanState::default();
    assert!(plan(&f, &view(&contact, &[], "hot", &fresh), &[], now).is_empty());
    let core = prospect("core");
    assert!(plan(&f, &view(&core, &[], "cold", &fresh), &[], now).is_empty());
}

#[test]
fn click_trigger_plans_a_call_within_four_hours_then_cools_down() {
    let f = compiled();
    let now = wednesday();
    let contact = Contact {
        owner: Some("claire".into()),
        ..prospect("core")
    };
    let events = [
        event("c1", "email_click", now - Duration::hours(3), json!({})),
        event("c2", "email_click", now - Duration::hours(1), json!({})),
    ];
    let mut state = PlanState::default();
    let planned = plan(&f, &view(&contact, &events, "cold", &state), &[], now);
    assert_eq!(names(&planned), ["email_click_call"]);
    let p = &planned[0];
    assert_eq!(p.kind, FollowUpKind::Opportunistic);
    assert_eq!(
        (p.channel.as_str(), p.template.as_str()),
        ("phone", "call_task")
    );
    assert_eq!(p.due, now - Duration::hours(3));
    assert_eq!(
        p.deadline,
        Some(now - Duration::hours(3) + Duration::hours(4))
    );
    assert_eq!(p.priority, 30);
    assert_eq!(p.owner.as_deref(), Some("claire"));
    assert_eq!(p.to_new_send().payload.owner.as_deref(), Some("claire"));
    state.record(&planned);

    // Another click three days later is still within the 7-day cooldown.
    let mut events = events.to_vec();
    let t = now + Duration::days(3);
    events.push(event("c3", "email_click", t, json!({})));
    assert!(plan(&f, &view(&contact, &events, "cold", &state), &[], t).is_empty());
    // Eight days later it fires again.
    let t = now + Duration::days(8);
    events.push(event("c4", "email_click", t, json!({})));
    let again = plan(&f, &view(&contact, &events, "cold", &state), &[], t);
    assert_eq!(names(&again), ["email_click_call"]);
    assert_eq!(again[0].due, t);

    // A pricing-page visit fires its own trigger; another page does not.
    let visits = [
        event(
            "v1",
            "page_visit",
            now,
            json!({ "url": "https://x.fr/careers" }),
        ),
        event(
            "v2",
            "page_visit",
            now,
            json!({ "url": "https://x.fr/tarifs" }),
        ),
    ];
    let planned = plan(
        &f,
        &view(&contact, &visits, "cold", &PlanState::default()),
        &[],
        now,
    );
    assert_eq!(names(&planned), ["pricing_visit_call"]);
}

#[test]
fn score_changes_and_business_signals_trigger_calls() {
    let f = compiled();
    let now = wednesday();
    let contact = Contact {
        company: Some("acme".into()),
        ..prospect("core")
    };
    let change = |kind, to_band: &str| ScoreChange {
        contact: "p".into(),
        kind,
        at: now - Duration::minutes(10),
        from_score: Points::from_f64(120.0),
        to_score: Points::from_f64(160.0),
        from_band: "warm".into(),
        to_band: to_band.into(),
        since: now - Duration::days(1),
    };
    let state = PlanState::default();
    let changes = [
        change(ChangeKind::BandUp, "hot"),
        change(ChangeKind::JumpUp, "hot"),
    ];
    let mut v = view(&contact, &[], "hot", &state);
    v.changes = &changes;
    let planned = plan(&f, &v, &[], now);
    assert_eq!(names(&planned), ["hot_call"]);
    assert_eq!(planned[0].due, now - Duration::minutes(10));

    let signal = |kind: &str, days| BusinessSignal {
        kind: kind.into(),
        at: now - Duration::days(days),
        props: serde_json::Map::new(),
    };
    let company = Company {
        id: "acme".into(),
        signals: vec![
            signal("difficulty", 1),
            signal("new_sites", 2),
            signal("growth", 30),
        ],
        ..Company::default()
    };
    let mut v = view(&contact, &[], "warm", &state);
    v.company = Some(&company);
    let planned = plan(&f, &v, &[], now);
    assert_eq!(names(&planned), ["business_signal_call"]);
    assert_eq!(planned[0].due, now - Duration::days(2));
}

#[test]
fn call_outcomes_give_the_prospect_status() {
    let f = compiled();
    let t0 = wednesday() - Duration::days(30);
    let day = |n| t0 + Duration::days(n);
    let nrp = |n: i64| call(&format!("n{n}"), day(n), "NRP");
    let status = |events: &[Event]| f.calls.status(events);

    let mut events: Vec<Event> = (0..4).map(nrp).collect();
    assert_eq!(status(&events), CallStatus::Open { unsuccessful: 4 });
    events.push(call("occ", day(5), "occ"));
    assert_eq!(status(&events), CallStatus::Stopped, "ARRÊTÉ after 5");
    // Reaching the person restarts the count.
    let mut reached: Vec<Event> = (0..4).map(nrp).collect();
    reached.push(call("piste", day(5), "PISTE"));
    reached.push(nrp(6));
    assert_eq!(status(&reached), CallStatus::Open { unsuccessful: 1 });
    reached.push(call("rdv", day(7), "RDV"));
    assert_eq!(status(&reached), CallStatus::Won, "GAGNÉ on RDV");
    let lost = [nrp(0), call("hc", day(1), "HORS CIBLE")];
    assert_eq!(status(&lost), CallStatus::Lost);
    let refused = [call("r", day(1), "REFUS")];
    assert_eq!(status(&refused), CallStatus::Lost);

    // Once stopped: a click plans no call, the nurture email still goes.
    let now = wednesday();
    let contact = prospect("target_2");
    events.push(event(
        "click",
        "email_click",
        now - Duration::hours(1),
        json!({}),
    ));
    let state = PlanState::default();
    let planned = plan(&f, &view(&contact, &events, "cold", &state), &[], now);
    assert_eq!(names(&planned), ["prospects_target_1_2"]);
    assert!(planned.iter().all(|p| p.channel != "phone"));
}

#[test]
fn broadcasts_reach_the_segment_whatever_the_temperature() {
    let f = compiled();
    let now = wednesday();
    let seminar = seminar(now + Duration::hours(2));
    let state = PlanState::default();
    for band in ["hot", "warm", "cold"] {
        let contact = prospect("core");
        let planned = plan(
            &f,
            &view(&contact, &[], band, &state),
            std::slice::from_ref(&seminar),
            now,
        );
        assert_eq!(names(&planned), ["payroll_seminar"], "{band}");
        assert_eq!(planned[0].kind, FollowUpKind::Event);
        assert_eq!(planned[0].due, now + Duration::hours(2));
        assert_eq!(planned[0].priority, 20);
    }
    let customer = Contact {
        status: Status::Customer,
        ..prospect("core")
    };
    assert!(
        plan(
            &f,
            &view(&customer, &[], "cold", &state),
            std::slice::from_ref(&seminar),
            now
        )
        .is_empty()
    );
    // Not yet within the window, and over.
    let early = now - Duration::days(2);
    let contact = prospect("core");
    assert!(
        plan(
            &f,
            &view(&contact, &[], "cold", &state),
            std::slice::from_ref(&seminar),
            early
        )
        .is_empty()
    );
    let late = now + Duration::days(15);
    assert!(plan(&f, &view(&contact, &[], "cold", &state), &[seminar], late).is_empty());
}

#[test]
fn replanning_never_yields_a_new_key_for_the_same_occurrence() {
    let f = compiled();
    let now = wednesday();
    let contact = prospect("target_1");
    let events = [event(
        "c1",
        "email_click",
        now - Duration::hours(1),
        json!({}),
    )];
    let broadcasts = [seminar(now)];
    let empty = PlanState::default();
    let first = plan(
        &f,
        &view(&contact, &events, "cold", &empty),
        &broadcasts,
        now,
    );
    assert_eq!(first.len(), 3);
    for p in &first {
        assert_eq!(
            p.idem_key,
            crate::domain::outbox::idempotency_key("p", &p.followup, &p.occurrence.key_part())
        );
    }
    // From scratch an hour later: the same keys (the outbox dedups them).
    let later = now + Duration::hours(1);
    let again = plan(
        &f,
        &view(&contact, &events, "cold", &empty),
        &broadcasts,
        later,
    );
    let keys = |v: &[Planned]| {
        let mut k: Vec<String> = v.iter().map(|p| p.idem_key.clone()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&first), keys(&again));
    // With the state recorded: nothing new, however often.
    let mut state = PlanState::default();
    state.record(&first);
    for h in [0, 1, 5, 23] {
        let t = now + Duration::hours(h);
        assert!(plan(&f, &view(&contact, &events, "cold", &state), &broadcasts, t).is_empty());
    }
    let send = first[0].to_new_send();
    assert_eq!(send.idem_key, first[0].idem_key);
    assert_eq!(
        send.payload.template.as_deref(),
        Some(first[0].template.as_str())
    );
}

/// Seed 004: the monthly newsletter (systematic), a seminar invitation
/// (event) and a sales call after an email click (opportunistic) on the same
/// day. The call passes; the invitation and the newsletter each get a later
/// day of their own.
#[test]
fn newsletter_invitation_and_call_on_the_same_day_only_the_call_passes() {
    let config = shipped();
    let f = CompiledFollowups::from_config(&config).expect("compiles");
    let guard = config.guard().expect("guard");
    let now = wednesday();
    let contact = prospect("target_1");
    let events = [event(
        "c1",
        "email_click",
        now - Duration::hours(1),
        json!({}),
    )];
    let state = PlanState::default();
    let planned = plan(
        &f,
        &view(&contact, &events, "cold", &state),
        &[seminar(now)],
        now,
    );
    assert_eq!(planned.len(), 3);

    // The prospect is already solicited: 21 points, the `reduce` level.
    let mut fatigue = ContactState::new(&guard, &contact);
    fatigue.fatigue = Fatigue::new(FatiguePoints::from_points(21), now);
    let result = arbitrate(&f.arbitration, &guard, &mut fatigue, planned, now).expect("arbitrated");
    assert!(result.later.is_empty());
    let outcome = |name: &str| {
        result
            .decided
            .iter()
            .find(|a| a.planned.followup == name)
            .map(|a| a.outcome.clone())
            .expect("decided")
    };
    let order: Vec<&str> = result
        .decided
        .iter()
        .map(|a| a.planned.followup.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "email_click_call",
            "payroll_seminar",
            "prospects_target_1_2"
        ]
    );
    assert_eq!(outcome("email_click_call"), Outcome::Allow { at: now });
    // The call task costs nothing (the call itself will): still 21 points.
    // The daily budget holds the invitation to Thursday 08:00 in Paris; the
    // newsletter (priority 10, held by the `reduce` level until fatigue is
    // below 20) also finds Thursday taken by the invitation: Friday 08:00.
    assert_eq!(
        outcome("payroll_seminar"),
        Outcome::Defer {
            until: utc("2026-03-26T07:00:00Z")
        }
    );
    assert!(matches!(
        result.decided[1].reasons[0],
        Reason::Budget { .. }
    ));
    assert_eq!(
        outcome("prospects_target_1_2"),
        Outcome::Defer {
            until: utc("2026-03-27T07:00:00Z")
        }
    );
    assert_eq!(
        fatigue.fatigue_at(&guard, now),
        FatiguePoints::from_points(21)
    );
}

#[test]
fn a_follow_up_deferred_too_long_is_dropped_with_its_reason() {
    let config = shipped();
    let f = CompiledFollowups::from_config(&config).expect("compiles");
    let guard = config.guard().expect("guard");
    let now = wednesday();
    let contact = prospect("target_1");
    let state = PlanState::default();
    let mut planned = plan(&f, &view(&contact, &[], "cold", &state), &[], now);
    assert_eq!(planned.len(), 1);
    // First planned three days ago; it cannot pass before six more days.
    planned[0].first_planned = now - Duration::days(3);
    let mut fatigue = ContactState::new(&guard, &contact);
    fatigue.fatigue = Fatigue::new(FatiguePoints::from_points(26), now);
    let result = arbitrate(&f.arbitration, &guard, &mut fatigue, planned, now).expect("ok");
    match &result.decided[0].outcome {
        Outcome::Drop {
            reason:
                DropReason::MaxDeferral {
                    first_planned,
                    until,
                    ..
                },
        } => {
            assert_eq!(*first_planned, now - Duration::days(3));
            assert_eq!(*until, Some(utc("2026-03-31T10:00:01Z")));
        }
        other => panic!("expected a drop, got {other:?}"),
    }

    // Do-not-contact on email blocks; due after the window waits.
    let blocked = Contact {
        do_not_contact: ["email".to_string()].into(),
        ..prospect("target_1")
    };
    let mut planned = plan(&f, &view(&blocked, &[], "cold", &state), &[], now);
    let mut later = planned[0].clone();
    later.due = now + Duration::days(3);
    later.idem_key = "other".into();
    planned.push(later);
    let mut fatigue = ContactState::new(&guard, &blocked);
    let result = arbitrate(&f.arbitration, &guard, &mut fatigue, planned, now).expect("ok");
    assert_eq!(result.decided[0].outcome, Outcome::Block);
    assert_eq!(result.later.len(), 1);
}

#[test]
fn configuration_errors_have_key_paths_lines_and_columns() {
    let text = r#"[channels.email]
plugin = "email"
event = "email_sent"

[templates.hello]
channel = "email"
text = "hi"

[[followups.triggers]]
name = "click"
event = "email_click"
cooldown = "0s"
action = { channel = "phone", template = "hello" }

[[followups.nurture]]
name = "click"
segment = { field = "colour", eq = "blue" }
bands = ["tepid"]

[[followups.nurture.steps]]
channel = "email"
template = "bye"
"#;
    let errs = Config::parse(text, Path::new("t.toml"), &|_| None)
        .expect_err("invalid")
        .errors()
        .to_vec();
    let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (10, "followups.triggers[0].name"),
            (12, "followups.triggers[0].cooldown"),
            (13, "followups.triggers[0].action.channel"),
            (17, "followups.nurture[0].segment.field"),
            (18, "followups.nurture[0].bands[0]"),
            (22, "followups.nurture[0].steps[0].template"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("defined twice"));
    assert!(errs[2].message.contains("unknown channel `phone`"));
    assert!(errs[3].message.contains("unknown field `colour`"));
    assert!(errs[4].message.contains("unknown band `tepid`"));
    assert!(errs[5].message.contains("unknown template `bye`"));
    assert_eq!(errs[5].column, 12, "{}", errs[5]);

    let both = "[[triggers]]\nname = \"x\"\nevent = \"email_click\"\nchange = \"band_up\"\naction = { channel = \"email\", template = \"t\" }\n";
    let config: FollowupsConfig = toml::from_str(both).expect("shape");
    let mut issues = crate::core::config::Issues::default();
    crate::core::config::Validate::validate(
        &config,
        &crate::core::config::KeyPath::root().key("followups"),
        &mut issues,
    );
    assert_eq!(issues.0.len(), 1);
    assert_eq!(issues.0[0].0.to_string(), "followups.triggers[0]");
}

/// The seed's rule: "if they clicked an email, are a cold prospect, were
/// not called for over a year and are in target 2, then …", and a nurture
/// with its own enrol and exit conditions.
#[test]
fn segments_and_conditions_select_who_is_followed_up() {
    let text = r#"
[[nurture]]
name = "dormant"
segment = { field = "status", eq = "prospect" }
enrol = { field = "attributes.source", eq = "trade_show" }
exit = { field = "last.meeting", exists = true }
priority = 12

[[nurture.steps]]
channel = "email"
template = "nurture_welcome"
priority = 15

[[nurture.steps]]
after = "7d"
from = "previous"
channel = "email"
template = "nurture_welcome"

[[triggers]]
name = "cold_t2_click"
event = "email_click"
segment = { all = [
  { field = "tier", eq = "target_2" },
  { any = [ { field = "last.call", older_than = "365d" }, { field = "last.call", exists = false } ] },
] }
action = { channel = "phone", template = "call_task", within = "4h" }
"#;
    let f = toml::from_str::<FollowupsConfig>(text)
        .expect("shape")
        .compile()
        .expect("valid");
    assert_eq!(f.priorities.opportunistic, 30, "the guard's defaults");
    let now = wednesday();
    let click = event("c", "email_click", now - Duration::hours(1), json!({}));
    let state = PlanState::default();

    let mut contact = prospect("target_2");
    contact
        .attributes
        .insert("source".into(), json!("trade_show"));
    let old_call = call("old", now - Duration::days(400), "NRP");
    let events = [old_call.clone(), click.clone()];
    let planned = plan(&f, &view(&contact, &events, "cold", &state), &[], now);
    assert_eq!(names(&planned), ["dormant", "cold_t2_click"]);
    assert_eq!(planned[0].priority, 15, "the step's priority wins");

    // Called last month: no trigger. A meeting: out of the nurture.
    let recent = call("recent", now - Duration::days(30), "NRP");
    let meeting = event("m", "meeting", now - Duration::days(2), json!({}));
    let events = [recent, meeting, click.clone()];
    assert!(plan(&f, &view(&contact, &events, "cold", &state), &[], now).is_empty());

    // Not from the trade show: never enrolled; target 1: no trigger.
    let other = prospect("target_1");
    assert!(plan(&f, &view(&other, &[click], "cold", &state), &[], now).is_empty());

    // The second step counts from the first one's recorded due instant.
    let mut state = PlanState::default();
    let first = plan(&f, &view(&contact, &[], "cold", &state), &[], now);
    state.record(&first);
    let t = now + Duration::days(7);
    let second = plan(&f, &view(&contact, &[], "cold", &state), &[], t);
    assert_eq!(second[0].due, now + Duration::days(7));
    assert_eq!(second[0].priority, 12, "the sequence's priority");

    let bad = "[[nurture]]\nname = \"n\"\nsegment = { field = \"tier\", eq = \"x\" }\n[[nurture.steps]]\nfrom = \"previous\"\nchannel = \"email\"\ntemplate = \"t\"\n";
    let err = toml::from_str::<FollowupsConfig>(bad)
        .expect("shape")
        .compile()
        .expect_err("invalid");
    assert!(
        err.to_string()
            .contains("followups.nurture[0].steps[0].from: the first step has no previous step"),
        "{err}"
    );
}

/// Seed 004's day with the seminar invitation declared exempt (a service
/// notice): it goes out the same day as the call, which takes the day's
/// budget; the newsletter, a solicitation, waits for Thursday.
#[test]
fn an_exempt_follow_up_passes_the_budget_and_does_not_use_it() {
    let config = shipped();
    let f = CompiledFollowups::from_config(&config).expect("compiles");
    let guard = config.guard().expect("guard");
    let now = wednesday();
    let contact = prospect("target_1");
    let mut notice = seminar(now);
    notice.exempt = true;
    let decide = |events: &[Event]| {
        let state = PlanState::default();
        let planned = plan(
            &f,
            &view(&contact, events, "cold", &state),
            std::slice::from_ref(&notice),
            now,
        );
        let mut fatigue = ContactState::new(&guard, &contact);
        let result =
            arbitrate(&f.arbitration, &guard, &mut fatigue, planned, now).expect("arbitrated");
        let outcomes: Vec<(String, bool, Outcome)> = result
            .decided
            .into_iter()
            .map(|a| (a.planned.followup, a.planned.exempt, a.outcome))
            .collect();
        (outcomes, fatigue.fatigue_at(&guard, now))
    };
    let click = [event(
        "c1",
        "email_click",
        now - Duration::hours(1),
        json!({}),
    )];
    let (outcomes, fatigue) = decide(&click);
    assert_eq!(
        outcomes,
        [
            ("email_click_call".into(), false, Outcome::Allow { at: now }),
            ("payroll_seminar".into(), true, Outcome::Allow { at: now }),
            (
                "prospects_target_1_2".into(),
                false,
                Outcome::Defer {
                    until: utc("2026-03-26T07:00:00Z")
                }
            ),
        ]
    );
    // The exempt email still costs its fatigue (3 points).
    assert_eq!(fatigue, FatiguePoints::from_points(3));
    // Without the call, the exempt invitation leaves the day's budget to
    // the newsletter.
    let (outcomes, _) = decide(&[]);
    let allowed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, _, o)| *o == Outcome::Allow { at: now })
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert_eq!(allowed, ["payroll_seminar", "prospects_target_1_2"]);
}

/// `exempt_when` is a condition like any other, compiled at load; on an
/// event trigger it reads the event that fired.
#[test]
fn exempt_when_is_read_at_planning_and_checked_at_load() {
    let text = r#"
[[triggers]]
name = "ack"
event = "form_submit"
exempt_when = { field = "event.props.form", eq = "unsubscribe" }
cooldown = "1s"
action = { channel = "email", template = "ack" }

[[nurture]]
name = "welcome"
segment = { field = "status", eq = "prospect" }
[[nurture.steps]]
channel = "email"
template = "receipt"
exempt = true
[[nurture.steps]]
after = "1h"
channel = "email"
template = "news"
"#;
    let f: FollowupsConfig = toml::from_str(text).expect("shape");
    let f = f.compile().expect("compiles");
    let now = wednesday();
    let contact = prospect("target_1");
    let events = [
        event(
            "f1",
            "form_submit",
            now - Duration::hours(2),
            json!({ "form": "unsubscribe" }),
        ),
        event(
            "f2",
            "form_submit",
            now - Duration::hours(1),
            json!({ "form": "contact" }),
        ),
    ];
    let state = PlanState::default();
    let mut planned: Vec<(String, String, bool)> =
        plan(&f, &view(&contact, &events, "cold", &state), &[], now)
            .into_iter()
            .map(|p| (p.followup, p.template, p.exempt))
            .collect();
    planned.sort();
    assert_eq!(
        planned,
        [
            ("ack".into(), "ack".into(), false),
            ("ack".into(), "ack".into(), true),
            ("welcome".into(), "news".into(), false),
            ("welcome".into(), "receipt".into(), true),
        ]
    );

    let errs = Config::parse(
        r#"[channels.email]
plugin = "email"
event = "email_sent"

[templates.t]
channel = "email"
text = "hi"

[[followups.triggers]]
name = "a"
event = "form_submit"
exempt = true
exempt_when = { field = "event.props.form", eq = "x" }
action = { channel = "email", template = "t" }

[[followups.nurture]]
name = "n"
segment = { field = "status", eq = "prospect" }
[[followups.nurture.steps]]
channel = "email"
template = "t"
exempt_when = { field = "event.props.form", eq = "x" }
"#,
        Path::new("t.toml"),
        &|_| None,
    )
    .expect_err("invalid")
    .errors()
    .to_vec();
    let found: Vec<(usize, usize, &str)> = errs
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (13, 15, "followups.triggers[0].exempt_when"),
            (22, 25, "followups.nurture[0].steps[0].exempt_when.field"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("already exempts"), "{}", errs[0]);
    assert!(
        errs[1].message.contains("not about an event"),
        "{}",
        errs[1]
    );
}
