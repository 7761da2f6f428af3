//! End-to-end: fatigue and guard commands of the real binary, at exact
//! instants given with --now.

mod common;

use common::Env;
use serde_json::Value;

/// The demo's reference instant (Friday 2026-11-20 13:00 in Paris).
const REF: &str = "2026-11-20T12:00:00Z";
/// Tuesday 2026-11-17, 10:00 in Paris: inside the call and email windows.
const T0: &str = "2026-11-17T09:00:00Z";

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("valid")
        .with_timezone(&chrono::Utc)
}

fn plus(s: &str, d: chrono::Duration) -> String {
    (at(s) + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The guard's decision, as JSON, for a follow-up proposed at `now`.
fn guard(env: &Env, now: &str, id: &str, channel: &str, kind: &str) -> Value {
    env.json_at(
        now,
        &["guard", id, "--channel", channel, "--kind", kind, "--json"],
    )
}

fn fatigue(v: &Value) -> f64 {
    v["fatigue"].as_f64().expect("fatigue")
}

#[test]
fn the_seed_example_p_12_call_17_six_days_later_11() {
    let env = Env::new();
    env.import_demo();
    let p = env.json_at(REF, &["fatigue", "p", "--json"]);
    assert_eq!(
        (p["contact"].as_str(), fatigue(&p), p["level"].as_str()),
        (Some("p"), 12.0, Some("normal"))
    );
    assert_eq!(p["charges"].as_array().expect("charges").len(), 3);

    env.import_text("events", "call.jsonl", &format!("{{\"contact\": \"p\", \"type\": \"call\", \"at\": \"{REF}\", \"props\": {{\"outcome\": \"RAPP\"}}}}\n"));
    assert_eq!(
        fatigue(&env.json_at(REF, &["fatigue", "p", "--json"])),
        17.0
    );
    assert_eq!(
        fatigue(&env.json_at(
            &plus(REF, chrono::Duration::days(6)),
            &["fatigue", "p", "--json"]
        )),
        11.0
    );
    // Fractional days: 36 hours later, 1.5 points have gone.
    assert_eq!(
        fatigue(&env.json_at(
            &plus(REF, chrono::Duration::hours(36)),
            &["fatigue", "p", "--json"]
        )),
        15.5
    );
}

/// Five SMS `days` before T0: 35 points minus one a day, none in the caps' windows.
fn contact_at(env: &Env, id: &str, days: i64) {
    env.import_text(
        "contacts",
        &format!("{id}.csv"),
        &format!("id,timezone,consent_sms\n{id},Europe/Paris,true\n"),
    );
    let sent = plus(T0, -chrono::Duration::days(days));
    let lines: String = (0..5)
        .map(|i| format!("{{\"id\": \"{id}-{i}\", \"contact\": \"{id}\", \"type\": \"sms_sent\", \"channel\": \"sms\", \"at\": \"{sent}\"}}\n"))
        .collect();
    env.import_text("events", &format!("{id}.jsonl"), &lines);
}

#[test]
fn at_21_a_systematic_email_waits_for_20_and_an_opportunistic_call_passes() {
    let env = Env::new();
    contact_at(&env, "z21", 14);
    let f = env.json_at(T0, &["fatigue", "z21", "--json"]);
    assert_eq!((fatigue(&f), f["level"].as_str()), (21.0, Some("reduce")));
    let left = f["leaves"].as_array().expect("leaves");
    assert_eq!(left[0]["level"], "reduce");
    assert_eq!(
        at(left[0]["left_at"].as_str().expect("instant")),
        at(&plus(
            T0,
            chrono::Duration::days(1) + chrono::Duration::seconds(1)
        ))
    );

    let email = guard(&env, T0, "z21", "email", "systematic");
    assert_eq!(email["decision"], "defer");
    // Fatigue reaches 20 one day later; `reduce` starts from 20 (≥), so the
    // email passes the second after.
    let until = plus(T0, chrono::Duration::days(1) + chrono::Duration::seconds(1));
    assert_eq!(at(email["until"].as_str().expect("until")), at(&until));
    assert!(
        email["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["rule"] == "fatigue")
    );
    let later = guard(&env, &until, "z21", "email", "systematic");
    assert_eq!(
        later["decision"], "allow",
        "allowed exactly at the instant given"
    );

    let call = guard(&env, T0, "z21", "phone", "opportunistic");
    assert_eq!(
        (call["decision"].as_str(), &call["until"]),
        (Some("allow"), &Value::Null)
    );
}

#[test]
fn at_26_both_wait_and_past_the_maximum_deferral_they_are_blocked() {
    let env = Env::new();
    contact_at(&env, "z26", 9);
    assert_eq!(
        fatigue(&env.json_at(T0, &["fatigue", "z26", "--json"])),
        26.0
    );
    let call = guard(&env, T0, "z26", "phone", "opportunistic");
    assert_eq!(call["decision"], "defer");
    // `stop` is above 25: the call passes once fatigue is back at 25, Wednesday 10:00.
    assert_eq!(
        at(call["until"].as_str().expect("until")),
        at(&plus(T0, chrono::Duration::days(1)))
    );
    let email = guard(&env, T0, "z26", "email", "systematic");
    assert_eq!(email["decision"], "defer");
    assert_eq!(
        at(email["until"].as_str().expect("until")),
        at(&plus(
            T0,
            chrono::Duration::days(6) + chrono::Duration::seconds(1)
        ))
    );

    // At 35 points the email would pass in 15 days and a second: beyond the
    // 14 days of maximum deferral, it is blocked.
    contact_at(&env, "z35", 0);
    assert_eq!(
        fatigue(&env.json_at(T0, &["fatigue", "z35", "--json"])),
        35.0
    );
    let blocked = guard(&env, T0, "z35", "email", "systematic");
    assert_eq!(blocked["decision"], "block");
    assert!(
        blocked["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["rule"] == "max_deferral"),
        "{blocked}"
    );
    let text = env.run_at(T0, &["guard", "z35", "--channel", "nowhere"]);
    assert_eq!(text.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&text.stderr).contains("unknown channel `nowhere`"));
}

#[test]
fn unsubscribe_blocks_the_channel_at_once_and_sms_needs_consent() {
    let env = Env::new();
    env.import_text("contacts", "u.csv", "id,timezone\nu,Europe/Paris\n");
    let sms = guard(&env, T0, "u", "sms", "opportunistic");
    assert_eq!(
        sms["decision"], "block",
        "SMS is opt-in and u gave no consent"
    );
    assert!(
        sms["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["rule"] == "consent")
    );
    let email = guard(&env, T0, "u", "email", "opportunistic");
    assert_eq!(email["decision"], "allow");
    env.import_text("events", "unsub.jsonl", &format!("{{\"contact\": \"u\", \"type\": \"unsubscribe\", \"channel\": \"email\", \"at\": \"{}\"}}\n", plus(T0, -chrono::Duration::minutes(1))));
    let email = guard(&env, T0, "u", "email", "opportunistic");
    assert_eq!(email["decision"], "block");
    assert!(
        email["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["rule"] == "do_not_contact")
    );
    let call = guard(&env, T0, "u", "phone", "opportunistic");
    assert_eq!(call["decision"], "allow", "only email was unsubscribed");
}

#[test]
fn pressure_matrix_counts_every_customer_once() {
    let env = Env::new();
    env.import_demo();
    let m = env.json_at(REF, &["pressure", "--json"]);
    let total: u64 = m["counts"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("cells")
                .iter()
                .map(|c| c.as_u64().expect("n"))
        })
        .sum();
    let customers = env.json_at(REF, &["customers", "--json"]);
    assert_eq!(total as usize, customers.as_array().expect("array").len());
    for m in m["over_pressured"].as_array().expect("list") {
        assert!(m["gap"].as_i64().expect("gap") > 0);
    }
}
