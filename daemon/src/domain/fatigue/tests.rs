//! Acceptance scenarios of the guard, at exact instants.

use super::*;
use crate::core::model::{Contact, Event, Timestamp};
use crate::pipeline::config::Config;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use std::path::Path;

const DAY: i64 = 86_400;

const CONFIG: &str = r#"
[fatigue]
decay_per_day = 1.0
max_deferral = "14d"
default_timezone = "Europe/Paris"

[fatigue.costs]
call = 5.0
email_sent = 3.0
sms_sent = 7.0

[fatigue.relief]
inbound_call = 5.0

[[fatigue.levels]]
name = "normal"

[[fatigue.levels]]
name = "reduce"
from = 20.0
min_priority = 20

[[fatigue.levels]]
name = "stop"
above = 25.0
exempt_only = true

[[fatigue.caps]]
channel = "email"
limit = 2
window = "7d"

[[fatigue.caps]]
channel = "phone"
limit = 1
window = "3d"

[[fatigue.caps]]
limit = 4
window = "7d"

[[fatigue.windows]]
channel = "phone"
days = ["mon", "tue", "wed", "thu", "fri"]
from = "09:00"
to = "18:00"

[[fatigue.windows]]
channel = "email"
from = "08:00"
to = "20:00"

[channels.email]
plugin = "email"
event = "email_sent"

[channels.sms]
plugin = "webhook"
event = "sms_sent"
consent = "opt_in"

[channels.phone]
plugin = "crm"
event = "call"
"#;

fn guard() -> Guard {
    guard_of(CONFIG)
}

fn guard_of(text: &str) -> Guard {
    let config =
        Config::parse(text, Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    config.guard().expect("valid guard")
}

fn utc(s: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(s)
        .expect("valid")
        .with_timezone(&Utc)
}

fn plus(t: Timestamp, secs: i64) -> Timestamp {
    t + chrono::Duration::seconds(secs)
}

/// Wednesday 2026-03-25, 11:00 in Paris (CET): every window is open.
fn wednesday() -> Timestamp {
    utc("2026-03-25T10:00:00Z")
}

fn contact(tz: Option<Tz>) -> Contact {
    Contact {
        id: "p".into(),
        timezone: tz,
        ..Contact::default()
    }
}

fn at_fatigue(g: &Guard, points: i64, now: Timestamp) -> ContactState {
    let mut s = ContactState::new(g, &contact(None));
    s.fatigue = Fatigue::new(FatiguePoints::from_points(points), now);
    s
}

fn proposal(g: &Guard, channel: &str, kind: FollowUpKind) -> Proposal {
    Proposal::new(g.channel(channel).expect("configured"), kind)
}

fn event(kind: &str, channel: Option<&str>, at: Timestamp) -> Event {
    Event {
        id: None,
        contact: "p".into(),
        kind: kind.into(),
        at,
        channel: channel.map(Into::into),
        props: Default::default(),
    }
}

#[test]
fn at_21_systematic_email_waits_for_fatigue_below_20_and_opportunistic_call_passes() {
    let g = guard();
    let now = wednesday();
    let s = at_fatigue(&g, 21, now);

    let email = g.decide(&proposal(&g, "email", FollowUpKind::Systematic), &s, now);
    assert_eq!(email.decision, Verdict::Defer);
    // Fatigue is exactly 20 one day later; `reduce` starts *from* 20 (≥), so
    // the email passes one second after, when fatigue is below 20.
    assert_eq!(
        s.fatigue
            .when_at_most(g.decay(), FatiguePoints::from_points(20)),
        Some(plus(now, DAY))
    );
    assert_eq!(email.until, Some(plus(now, DAY + 1)));
    let still = g.decide(
        &proposal(&g, "email", FollowUpKind::Systematic),
        &s,
        plus(now, DAY),
    );
    assert_eq!(still.decision, Verdict::Defer);
    let then = g.decide(
        &proposal(&g, "email", FollowUpKind::Systematic),
        &s,
        plus(now, DAY + 1),
    );
    assert_eq!(then.decision, Verdict::Allow);

    let json = serde_json::to_value(&email).expect("serializable");
    assert_eq!(json["decision"], "defer");
    assert_eq!(json["until"], "2026-03-26T10:00:01Z");
    assert_eq!(
        json["reasons"][0],
        json!({
            "rule": "fatigue", "level": "reduce", "fatigue": 21.0, "at": "2026-03-25T10:00:00Z",
            "priority": 10, "min_priority": 20, "exempt_only": false,
            "threshold": 20.0, "inclusive": false, "passes_at": "2026-03-26T10:00:01Z"
        })
    );

    let call = g.decide(&proposal(&g, "phone", FollowUpKind::Opportunistic), &s, now);
    assert_eq!(call.decision, Verdict::Allow);
    assert_eq!(call.until, None);
    let json = serde_json::to_value(&call).expect("serializable");
    assert_eq!(json["reasons"][0]["rule"], "level");
    assert_eq!(json["reasons"][0]["level"], "reduce");

    // A numeric priority overrides the kind's default.
    let mut urgent = proposal(&g, "email", FollowUpKind::Systematic);
    urgent.priority = Some(25);
    assert_eq!(g.decide(&urgent, &s, now).decision, Verdict::Allow);
}

#[test]
fn at_26_both_are_deferred_or_blocked_past_the_maximum_deferral() {
    let g = guard();
    let now = wednesday();
    let s = at_fatigue(&g, 26, now);

    // Stop is `above 25`: the call passes once fatigue is 25, exactly 1 day.
    let call = g.decide(&proposal(&g, "phone", FollowUpKind::Opportunistic), &s, now);
    assert_eq!(
        (call.decision, call.until),
        (Verdict::Defer, Some(plus(now, DAY)))
    );
    // The email must wait for fatigue below 20: 6 days and a second.
    let email = g.decide(&proposal(&g, "email", FollowUpKind::Systematic), &s, now);
    assert_eq!(
        (email.decision, email.until),
        (Verdict::Defer, Some(plus(now, 6 * DAY + 1)))
    );
    // Fractional decay: half a day later, 25.5 left; the call waits half a day.
    let half = plus(now, DAY / 2);
    let call = g.decide(
        &proposal(&g, "phone", FollowUpKind::Opportunistic),
        &s,
        half,
    );
    assert_eq!(call.until, Some(plus(now, DAY)));
    assert_eq!(s.fatigue_at(&g, half), FatiguePoints::from_milli(25_500));

    // Proposed 10 days ago: 16 days from first proposal > 14 → blocked.
    let mut old = proposal(&g, "email", FollowUpKind::Systematic);
    old.first_proposed = Some(plus(now, -10 * DAY));
    let d = g.decide(&old, &s, now);
    assert_eq!(d.decision, Verdict::Block);
    assert_eq!(d.until, None);
    let json = serde_json::to_value(&d).expect("serializable");
    let last = &json["reasons"][1];
    assert_eq!(last["rule"], "max_deferral");
    assert_eq!(last["max_deferral"], "2w");
    assert_eq!(json["reasons"][0]["rule"], "fatigue");

    // At 40, 20 days to fall below 20: blocked at once.
    let s = at_fatigue(&g, 40, now);
    let d = g.decide(&proposal(&g, "email", FollowUpKind::Systematic), &s, now);
    assert_eq!(d.decision, Verdict::Block);
}

#[test]
fn exempt_follow_ups_skip_fatigue_and_caps_but_not_the_window() {
    let g = guard();
    // Saturday in Paris: no calls.
    let now = utc("2026-03-28T10:00:00Z");
    let s = at_fatigue(&g, 40, now);
    let mut p = proposal(&g, "email", FollowUpKind::Systematic);
    p.exempt = true;
    assert_eq!(g.decide(&p, &s, now).decision, Verdict::Allow);
    let mut p = proposal(&g, "phone", FollowUpKind::Systematic);
    p.exempt = true;
    let d = g.decide(&p, &s, now);
    // Monday 09:00 CEST (after the spring-forward of Sunday 29 March).
    assert_eq!(d.until, Some(utc("2026-03-30T07:00:00Z")));
}

#[test]
fn caps_defer_until_a_slot_frees_and_interact_with_windows() {
    let g = guard();
    let now = wednesday();
    let email = g.channel("email").expect("configured");
    let mut s = ContactState::new(&g, &contact(None));
    s.charge(&g, email, plus(now, -6 * DAY)).expect("in order");
    s.charge(&g, email, plus(now, -DAY)).expect("in order");
    let d = g.decide(&proposal(&g, "email", FollowUpKind::Opportunistic), &s, now);
    // The older email leaves the 7-day window one day from now.
    assert_eq!(
        (d.decision, d.until),
        (Verdict::Defer, Some(plus(now, DAY)))
    );
    let json = serde_json::to_value(&d).expect("serializable");
    assert_eq!(
        json["reasons"][0],
        json!({"rule": "cap", "channel": "email", "count": 2, "limit": 2, "window": "1w",
               "at": "2026-03-25T10:00:00Z", "frees_at": "2026-03-26T10:00:00Z"})
    );

    // A call logged in the CRM on Friday 20:00 Paris (imported, outside the
    // window) blocks calls for 3 days: the cap frees Monday 20:00, after the
    // window closed, so the call waits for Tuesday 09:00.
    let friday = utc("2026-03-27T19:00:00Z");
    let mut s = ContactState::new(&g, &contact(None));
    s.apply(&g, &event("call", None, friday)).expect("in order");
    let d = g.decide(
        &proposal(&g, "phone", FollowUpKind::Opportunistic),
        &s,
        plus(friday, DAY),
    );
    assert_eq!(d.until, Some(utc("2026-03-31T07:00:00Z")));
    let rules: Vec<String> = serde_json::to_value(&d).expect("serializable")["reasons"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["rule"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(rules, ["cap", "send_window"]);

    // Overall: 4 solicitations in 7 days on any channel.
    let mut s = ContactState::new(&g, &contact(None));
    let mut consent = contact(None);
    consent.consent.insert("sms".into(), true);
    s.reach = ContactState::new(&g, &consent).reach;
    let sms = g.channel("sms").expect("configured");
    for (i, ch) in [email, sms, sms, email].into_iter().enumerate() {
        s.charge(&g, ch, plus(now, -5 * DAY + i as i64 * 3600))
            .expect("in order");
    }
    s.fatigue = Fatigue::default();
    let d = g.decide(&proposal(&g, "sms", FollowUpKind::Opportunistic), &s, now);
    assert_eq!(d.until, Some(plus(now, 2 * DAY)));
}

#[test]
fn fatigue_and_window_interact_to_a_fixed_point() {
    let g = guard();
    // 19:59:59 in Paris, fatigue 21: passes fatigue at 20:00:00 next day,
    // when the email window (08:00–20:00) has just closed → 08:00 after.
    let now = utc("2026-03-25T18:59:59Z");
    let s = at_fatigue(&g, 21, now);
    let d = g.decide(&proposal(&g, "email", FollowUpKind::Systematic), &s, now);
    assert_eq!(d.until, Some(utc("2026-03-27T07:00:00Z")));
    let rules: Vec<&str> = d
        .reasons
        .iter()
        .map(|r| match r {
            Reason::Fatigue { .. } => "fatigue",
            Reason::SendWindow { .. } => "send_window",
            _ => "other",
        })
        .collect();
    assert_eq!(rules, ["fatigue", "send_window"]);
}

#[test]
fn windows_follow_each_contact_time_zone_across_dst() {
    let g = guard();
    let call = proposal(&g, "phone", FollowUpKind::Opportunistic);
    // Saturday 7 March: New York springs forward on Sunday 8 March.
    let sat = utc("2026-03-07T15:00:00Z");
    let ny = ContactState::new(&g, &contact(Some(chrono_tz::America::New_York)));
    let paris = ContactState::new(&g, &contact(Some(chrono_tz::Europe::Paris)));
    let nobody = ContactState::new(&g, &contact(None)); // default: Paris
    // Monday 09:00 EDT = 13:00Z (it was 14:00Z the week before).
    assert_eq!(
        g.decide(&call, &ny, sat).until,
        Some(utc("2026-03-09T13:00:00Z"))
    );
    // Paris is still on CET: Monday 09:00 = 08:00Z.
    assert_eq!(
        g.decide(&call, &paris, sat).until,
        Some(utc("2026-03-09T08:00:00Z"))
    );
    assert_eq!(
        g.decide(&call, &nobody, sat).until,
        Some(utc("2026-03-09T08:00:00Z"))
    );
    // Three weeks later Paris springs forward: Monday 30 March 09:00 CEST = 07:00Z.
    let sat = utc("2026-03-28T15:00:00Z");
    assert_eq!(
        g.decide(&call, &paris, sat).until,
        Some(utc("2026-03-30T07:00:00Z"))
    );
    assert_eq!(
        g.decide(&call, &ny, sat).until,
        Some(utc("2026-03-30T13:00:00Z"))
    );
    // 12:30Z on that Monday: open in Paris (14:30), not yet in New York (08:30).
    let t = utc("2026-03-30T12:30:00Z");
    assert_eq!(g.decide(&call, &paris, t).decision, Verdict::Allow);
    let d = g.decide(&call, &ny, t);
    assert_eq!(d.until, Some(utc("2026-03-30T13:00:00Z")));
    let json = serde_json::to_value(&d).expect("serializable");
    assert_eq!(json["reasons"][0]["timezone"], "America/New_York");
    assert_eq!(json["reasons"][0]["opens_local"], "2026-03-30T09:00:00");
}

#[test]
fn consent_and_unsubscribe_block() {
    let g = guard();
    let now = wednesday();
    let sms = proposal(&g, "sms", FollowUpKind::Opportunistic);
    let email = proposal(&g, "email", FollowUpKind::Opportunistic);
    let call = proposal(&g, "phone", FollowUpKind::Opportunistic);

    // SMS is opt-in: no consent recorded → blocked.
    let s = ContactState::new(&g, &contact(None));
    let d = g.decide(&sms, &s, now);
    assert_eq!(d.decision, Verdict::Block);
    assert_eq!(
        serde_json::to_value(&d).expect("serializable"),
        json!({"decision": "block", "until": null, "reasons": [
            {"rule": "consent", "channel": "sms", "explicit": null, "default": "opt_in"}]})
    );
    let mut c = contact(None);
    c.consent.insert("sms".into(), true);
    c.consent.insert("email".into(), false);
    let s = ContactState::new(&g, &c);
    assert_eq!(g.decide(&sms, &s, now).decision, Verdict::Allow);
    assert_eq!(g.decide(&email, &s, now).decision, Verdict::Block);

    // An unsubscribe from email blocks email at once, not the phone.
    let mut s = ContactState::new(&g, &contact(None));
    s.apply(&g, &event("unsubscribe", Some("email"), now))
        .expect("applies");
    let d = g.decide(&email, &s, now);
    assert_eq!(d.decision, Verdict::Block);
    assert!(matches!(d.reasons[0], Reason::DoNotContact { .. }));
    assert_eq!(g.decide(&call, &s, now).decision, Verdict::Allow);
    // Exempt does not override do-not-contact.
    let mut t = email;
    t.exempt = true;
    assert_eq!(g.decide(&t, &s, now).decision, Verdict::Block);
    // Do-not-contact listed on the contact.
    let mut c = contact(None);
    c.do_not_contact.insert("phone".into());
    let s = ContactState::new(&g, &c);
    assert_eq!(g.decide(&call, &s, now).decision, Verdict::Block);
}

#[test]
fn history_replays_imported_actions_like_relance_sends() {
    let g = guard();
    let t0 = wednesday();
    let history = [
        event("email_sent", Some("email"), plus(t0, -2 * DAY)),
        event("email_sent", Some("email"), plus(t0, -DAY)),
        event("call", None, plus(t0, -DAY)),
    ];
    let s = ContactState::replay(&g, &contact(None), &history).expect("in order");
    // 3 → 2 after a day, + 3 + 5 = 10, 9 a day later.
    assert_eq!(s.fatigue_at(&g, t0), FatiguePoints::from_points(9));
    assert_eq!(
        s.when_at_most(&g, FatiguePoints::ZERO),
        Some(plus(t0, 9 * DAY))
    );
    assert_eq!(s.sends.len(), 3);

    let mut s = ContactState::new(&g, &contact(None));
    s.fatigue = Fatigue::new(FatiguePoints::from_points(12), t0);
    // A call logged in the CRM by a sales person.
    s.apply(&g, &event("call", None, t0)).expect("in order");
    assert_eq!(s.fatigue_at(&g, t0), FatiguePoints::from_points(17));
    assert_eq!(
        s.fatigue_at(&g, plus(t0, 6 * DAY)),
        FatiguePoints::from_points(11)
    );
    // Engagement is neither cost nor send.
    s.apply(&g, &event("email_open", Some("email"), plus(t0, DAY)))
        .expect("ignored");
    assert_eq!(s.sends.len(), 1);
    // The director calls back to ask for a demo: relief of 5.
    s.apply(&g, &event("inbound_call", None, plus(t0, 2 * DAY)))
        .expect("in order");
    assert_eq!(
        s.fatigue_at(&g, plus(t0, 2 * DAY)),
        FatiguePoints::from_points(10)
    );
    let late = s.apply(&g, &event("call", None, t0));
    assert!(matches!(late, Err(StateError::OutOfOrder(_))));
    // Sends older than every cap window are forgotten.
    s.apply(&g, &event("email_sent", Some("email"), plus(t0, 30 * DAY)))
        .expect("in order");
    let channels: Vec<_> = s.sends.iter().map(|(c, _)| g.channel_name(c)).collect();
    assert_eq!(channels, [Some("email")]);

    // A snapshot (fatigue + recent sends) restores the same state.
    let mut restored = ContactState::new(&g, &contact(None));
    let (value, at) = s.fatigue.snapshot();
    restored.fatigue = Fatigue::new(value, at);
    for (channel, at) in s.sends.iter() {
        restored
            .record_send(&g, channel, at)
            .expect("known channel");
    }
    assert_eq!(restored, s);
}

#[test]
fn a_planner_charges_each_allowed_follow_up_before_the_next() {
    let g = guard();
    let now = wednesday();
    let mut s = at_fatigue(&g, 14, now);
    let plan = [
        proposal(&g, "phone", FollowUpKind::Opportunistic),
        proposal(&g, "email", FollowUpKind::Event),
        proposal(&g, "email", FollowUpKind::Systematic),
    ];
    let mut verdicts = Vec::new();
    for p in &plan {
        let d = g.decide(p, &s, now);
        if d.decision == Verdict::Allow {
            s.charge(&g, p.channel, now).expect("in order");
        }
        verdicts.push((d.decision, d.until));
    }
    // 14 + 5 = 19 (normal), + 3 = 22 (reduce): the newsletter waits 2 days.
    assert_eq!(
        verdicts,
        [
            (Verdict::Allow, None),
            (Verdict::Allow, None),
            (Verdict::Defer, Some(plus(now, 2 * DAY + 1))),
        ]
    );
    assert_eq!(s.fatigue_at(&g, now), FatiguePoints::from_points(22));
}

#[test]
fn levels_are_found_by_value() {
    let g = guard();
    assert_eq!(g.level_name(FatiguePoints::from_milli(19_999)), "normal");
    assert_eq!(g.level_name(FatiguePoints::from_points(20)), "reduce");
    assert_eq!(g.level_name(FatiguePoints::from_points(25)), "reduce");
    assert_eq!(
        g.level_name(FatiguePoints::from_units(25 * points::UNITS_PER_POINT + 1)),
        "stop"
    );
}

#[test]
fn unknown_channels_in_caps_and_windows_are_configuration_errors() {
    let text = CONFIG.replace("channel = \"phone\"\nlimit", "channel = \"fax\"\nlimit");
    let text = text.replace("channel = \"email\"\nfrom", "channel = \"pigeon\"\nfrom");
    let errs = Config::parse(&text, Path::new("t.toml"), &|_| None).expect_err("invalid");
    let errs = errs.errors();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].key, "fatigue.caps[1].channel");
    assert!(errs[0].message.contains("unknown channel `fax`"));
    assert_eq!(errs[1].key, "fatigue.windows[1].channel");
}

#[test]
fn contact_state_is_small() {
    assert!(
        std::mem::size_of::<ContactState>() <= 112,
        "{}",
        std::mem::size_of::<ContactState>()
    );
}

#[test]
fn shipped_configuration_builds_a_guard() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let g = config.guard().expect("valid guard");
    assert_eq!(g.default_timezone(), chrono_tz::Europe::Paris);
    let now = wednesday();
    let s = at_fatigue(&g, 21, now);
    let d = g.decide(&proposal(&g, "email", FollowUpKind::Systematic), &s, now);
    assert_eq!(d.until, Some(plus(now, DAY + 1)));
}

#[test]
fn a_proposal_for_an_unknown_channel_is_blocked_with_a_reason() {
    let g = guard();
    let s = ContactState::default();
    let d = g.decide(
        &Proposal::new(ChannelId(31), FollowUpKind::Event),
        &s,
        wednesday(),
    );
    assert_eq!(d.decision, Verdict::Block);
    assert_eq!(d.reasons, [Reason::UnknownChannel { channel: 31 }]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const ZONES: [Option<Tz>; 3] = [
        None,
        Some(chrono_tz::America::New_York),
        Some(chrono_tz::Asia::Tokyo),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// `until` is computed, not polled: the same proposal is allowed at
        /// `until` and at no earlier second.
        #[test]
        fn defer_until_is_the_earliest_allowed_instant(
            milli in 0i64..40_000,
            sends in proptest::collection::vec((0u8..3, 0i64..10 * DAY), 0..6),
            zone in 0usize..3,
            sms_consent: bool,
            // 2026-03-01 .. 2026-04-15: across both DST changes.
            now in 1_772_323_200i64..1_776_211_200,
            channel in 0u8..3,
            kind in 0usize..3,
            exempt in proptest::bool::weighted(0.1),
        ) {
            let g = guard();
            let now = plus(DateTime::<Utc>::UNIX_EPOCH, now);
            let mut c = contact(ZONES[zone]);
            c.consent.insert("sms".into(), sms_consent);
            let mut s = ContactState::new(&g, &c);
            let mut sends = sends;
            sends.sort_by_key(|&(_, ago)| std::cmp::Reverse(ago));
            for (ch, ago) in sends {
                s.charge(&g, ChannelId(ch), plus(now, -ago)).expect("in order");
            }
            s.fatigue.add_secs(g.decay(), now.timestamp(), milli * points::UNITS_PER_MILLI);
            let kinds = [FollowUpKind::Systematic, FollowUpKind::Event, FollowUpKind::Opportunistic];
            let mut p = Proposal::new(ChannelId(channel), kinds[kind]);
            p.exempt = exempt;
            p.first_proposed = Some(now);
            let d = g.decide(&p, &s, now);
            prop_assert_eq!(d.until.is_some(), d.decision == Verdict::Defer);
            prop_assert!(!d.reasons.is_empty());
            if let Some(until) = d.until {
                prop_assert!(until > now);
                let at = g.decide(&p, &s, until);
                prop_assert_eq!(at.decision, Verdict::Allow, "{:?} then {:?}", d, at);
                let before = g.decide(&p, &s, plus(until, -1));
                prop_assert_ne!(before.decision, Verdict::Allow, "{:?}", d);
            }
        }
    }
}

fn with_budget(budget: &str) -> Guard {
    guard_of(&format!(
        "{CONFIG}\n[followups.arbitration.budget]\n{budget}\n"
    ))
}

/// A two-day budget on email only: an email on Wednesday holds the next
/// email until Friday 00:00 in the contact's time zone, then the email
/// window (08:00); calls are not counted nor held; nor is an exempt email.
#[test]
fn a_per_channel_budget_over_two_local_days() {
    let g = with_budget("count = 1\nwindow = \"2d\"\nchannel = \"email\"");
    let now = wednesday();
    let mut s = ContactState::new(&g, &contact(Some(chrono_tz::America::New_York)));
    s.apply(&g, &event("email_sent", Some("email"), now))
        .expect("in order");
    let later = plus(now, 3600);
    let email = g.decide(&proposal(&g, "email", FollowUpKind::Event), &s, later);
    assert_eq!(email.decision, Verdict::Defer);
    // New York (EDT since 8 March): Friday 08:00 local is 12:00Z.
    assert_eq!(email.until, Some(utc("2026-03-27T12:00:00Z")));
    assert!(matches!(email.reasons[0], Reason::Budget { days: 2, .. }));
    let call = g.decide(&proposal(&g, "phone", FollowUpKind::Event), &s, later);
    assert!(
        !call
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::Budget { .. })),
        "{call:?}"
    );
    // Exempt: only the window holds it (08:00 in New York the same day).
    let mut exempt = proposal(&g, "email", FollowUpKind::Event);
    exempt.exempt = true;
    let d = g.decide(&exempt, &s, later);
    assert_eq!(d.until, Some(utc("2026-03-25T12:00:00Z")));
    assert!(!d.reasons.iter().any(|r| matches!(r, Reason::Budget { .. })));
}

/// One call, one charge: with `phone` recording call tasks, a task holds
/// its slot without fatigue; the call after it costs 5 and takes that slot
/// (one send, at the call's instant); a call before a task is a send of
/// its own.
#[test]
fn a_call_takes_the_place_of_the_call_task_before_it() {
    let text = CONFIG.replace("event = \"call\"", "event = \"call_task\"")
        + "\n[followups.calls]\nchannels = [\"phone\"]\n";
    let g = guard_of(&text);
    let phone = g.channel("phone").expect("phone");
    let now = wednesday();
    let sends = |s: &ContactState| s.sends.iter().collect::<Vec<_>>();

    let mut s = ContactState::new(&g, &contact(None));
    s.apply(&g, &event("call_task", Some("phone"), now))
        .expect("in order");
    assert_eq!(s.fatigue_at(&g, now).as_f64(), 0.0);
    assert_eq!(sends(&s), [(phone, now)]);
    let call = plus(now, 1800);
    s.apply(&g, &event("call", None, call)).expect("in order");
    assert_eq!(s.fatigue_at(&g, call).as_f64(), 5.0);
    assert_eq!(sends(&s), [(phone, call)], "the call took the task's place");

    // A call with no task before it, then a task: two sends.
    let mut s = ContactState::new(&g, &contact(None));
    s.apply(&g, &event("call", None, now)).expect("in order");
    s.charge(&g, phone, call).expect("in order");
    assert_eq!(sends(&s), [(phone, now), (phone, call)]);
    let f = s.fatigue_at(&g, call).as_f64();
    assert!(f < 5.0 && f > 4.9, "the task costs nothing: {f}");
}

/// A budget on a call channel counts its call tasks when nothing else holds
/// the call back, as it does when something does: a task this morning
/// holds the next call until the window opens tomorrow.
#[test]
fn a_budget_on_a_call_channel_counts_its_call_tasks() {
    let text = CONFIG
        .replace("event = \"call\"", "event = \"call_task\"")
        .replace(
            "[[fatigue.caps]]\nchannel = \"phone\"\nlimit = 1\nwindow = \"3d\"\n",
            "",
        )
        + "\n[followups.calls]\nchannels = [\"phone\"]\n"
        + "\n[followups.arbitration.budget]\ncount = 1\nwindow = \"1d\"\nchannel = \"phone\"\n";
    let g = guard_of(&text);
    let phone = g.channel("phone").expect("phone");
    let now = wednesday();
    let mut s = ContactState::new(&g, &contact(None));
    s.charge(&g, phone, plus(now, -3600)).expect("in order");
    let d = g.decide(&proposal(&g, "phone", FollowUpKind::Opportunistic), &s, now);
    assert_eq!(d.decision, Verdict::Defer, "{d:?}");
    // Thursday 09:00 in Paris (CET).
    assert_eq!(d.until, Some(utc("2026-03-26T08:00:00Z")));
    assert!(
        matches!(d.reasons[0], Reason::Budget { count: 1, .. }),
        "{d:?}"
    );
}
