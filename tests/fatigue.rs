//! End-to-end: fatigue and guard commands of the real binary, at exact
//! instants given with --now.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_relance");
/// The demo's reference instant (Friday 2026-11-20 13:00 in Paris).
const REF: &str = "2026-11-20T12:00:00Z";
/// Tuesday 2026-11-17, 10:00 in Paris: inside the call and email windows.
const T0: &str = "2026-11-17T09:00:00Z";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::copy(
            repo().join("config/relance.toml"),
            dir.path().join("relance.toml"),
        )
        .expect("config");
        Self { dir }
    }

    fn run(&self, now: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.dir.path().join("relance.toml"))
            .args(["--now", now])
            .args(args)
            .env("RELANCE_DB", self.dir.path().join("store.db"))
            .env_remove("RELANCE_CONFIG")
            .output()
            .expect("run relance")
    }

    fn json(&self, now: &str, args: &[&str]) -> Value {
        let out = self.run(now, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    fn import(&self, what: &str, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = self.run(REF, &["import", what, path.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn import_demo(&self) {
        for (what, file) in [
            ("companies", "companies.csv"),
            ("contacts", "contacts.csv"),
            ("events", "events.jsonl"),
        ] {
            let path = repo().join("config/demo").join(file);
            let out = self.run(REF, &["import", what, path.to_str().expect("utf-8")]);
            assert!(out.status.success(), "{what}");
        }
    }
}

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("valid")
        .with_timezone(&chrono::Utc)
}

fn plus(s: &str, d: chrono::Duration) -> String {
    (at(s) + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn fatigue(v: &Value) -> f64 {
    v["fatigue"].as_f64().expect("fatigue")
}

#[test]
fn the_seed_example_p_12_call_17_six_days_later_11() {
    let env = Env::new();
    env.import_demo();
    let p = env.json(REF, &["fatigue", "p", "--json"]);
    assert_eq!(
        (p["contact"].as_str(), fatigue(&p), p["level"].as_str()),
        (Some("p"), 12.0, Some("normal"))
    );
    assert_eq!(p["charges"].as_array().expect("charges").len(), 3);

    env.import("events", "call.jsonl", &format!("{{\"contact\": \"p\", \"type\": \"call\", \"at\": \"{REF}\", \"props\": {{\"outcome\": \"RAPP\"}}}}\n"));
    assert_eq!(fatigue(&env.json(REF, &["fatigue", "p", "--json"])), 17.0);
    assert_eq!(
        fatigue(&env.json(
            &plus(REF, chrono::Duration::days(6)),
            &["fatigue", "p", "--json"]
        )),
        11.0
    );
    // Fractional days: 36 hours later, 1.5 points have gone.
    assert_eq!(
        fatigue(&env.json(
            &plus(REF, chrono::Duration::hours(36)),
            &["fatigue", "p", "--json"]
        )),
        15.5
    );
}

/// Five SMS `days` before T0: 35 points minus one a day, none in the caps' windows.
fn contact_at(env: &Env, id: &str, days: i64) {
    env.import(
        "contacts",
        &format!("{id}.csv"),
        &format!("id,timezone,consent_sms\n{id},Europe/Paris,true\n"),
    );
    let sent = plus(T0, -chrono::Duration::days(days));
    let lines: String = (0..5)
        .map(|i| format!("{{\"id\": \"{id}-{i}\", \"contact\": \"{id}\", \"type\": \"sms_sent\", \"channel\": \"sms\", \"at\": \"{sent}\"}}\n"))
        .collect();
    env.import("events", &format!("{id}.jsonl"), &lines);
}

#[test]
fn at_21_a_systematic_email_waits_for_20_and_an_opportunistic_call_passes() {
    let env = Env::new();
    contact_at(&env, "z21", 14);
    let f = env.json(T0, &["fatigue", "z21", "--json"]);
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

    let email = env.json(
        T0,
        &[
            "guard",
            "z21",
            "--channel",
            "email",
            "--kind",
            "systematic",
            "--json",
        ],
    );
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
    let later = env.json(
        &until,
        &[
            "guard",
            "z21",
            "--channel",
            "email",
            "--kind",
            "systematic",
            "--json",
        ],
    );
    assert_eq!(
        later["decision"], "allow",
        "allowed exactly at the instant given"
    );

    let call = env.json(
        T0,
        &[
            "guard",
            "z21",
            "--channel",
            "phone",
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
    assert_eq!(
        (call["decision"].as_str(), &call["until"]),
        (Some("allow"), &Value::Null)
    );
}

#[test]
fn at_26_both_wait_and_past_the_maximum_deferral_they_are_blocked() {
    let env = Env::new();
    contact_at(&env, "z26", 9);
    assert_eq!(fatigue(&env.json(T0, &["fatigue", "z26", "--json"])), 26.0);
    let call = env.json(
        T0,
        &[
            "guard",
            "z26",
            "--channel",
            "phone",
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
    assert_eq!(call["decision"], "defer");
    // `stop` is above 25: the call passes once fatigue is back at 25, Wednesday 10:00.
    assert_eq!(
        at(call["until"].as_str().expect("until")),
        at(&plus(T0, chrono::Duration::days(1)))
    );
    let email = env.json(
        T0,
        &[
            "guard",
            "z26",
            "--channel",
            "email",
            "--kind",
            "systematic",
            "--json",
        ],
    );
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
    assert_eq!(fatigue(&env.json(T0, &["fatigue", "z35", "--json"])), 35.0);
    let blocked = env.json(
        T0,
        &[
            "guard",
            "z35",
            "--channel",
            "email",
            "--kind",
            "systematic",
            "--json",
        ],
    );
    assert_eq!(blocked["decision"], "block");
    assert!(
        blocked["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["rule"] == "max_deferral"),
        "{blocked}"
    );
    let text = env.run(T0, &["guard", "z35", "--channel", "nowhere"]);
    assert_eq!(text.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&text.stderr).contains("unknown channel `nowhere`"));
}

#[test]
fn unsubscribe_blocks_the_channel_at_once_and_sms_needs_consent() {
    let env = Env::new();
    env.import("contacts", "u.csv", "id,timezone\nu,Europe/Paris\n");
    let sms = env.json(
        T0,
        &[
            "guard",
            "u",
            "--channel",
            "sms",
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
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
    let email = env.json(
        T0,
        &[
            "guard",
            "u",
            "--channel",
            "email",
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
    assert_eq!(email["decision"], "allow");
    env.import("events", "unsub.jsonl", &format!("{{\"contact\": \"u\", \"type\": \"unsubscribe\", \"channel\": \"email\", \"at\": \"{}\"}}\n", plus(T0, -chrono::Duration::minutes(1))));
    let email = env.json(
        T0,
        &[
            "guard",
            "u",
            "--channel",
            "email",
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
    assert_eq!(email["decision"], "block");
    assert!(
        email["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["rule"] == "do_not_contact")
    );
    let call = env.json(
        T0,
        &[
            "guard",
            "u",
            "--channel",
            "phone",
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
    assert_eq!(call["decision"], "allow", "only email was unsubscribed");
}

#[test]
fn pressure_matrix_counts_every_customer_once() {
    let env = Env::new();
    env.import_demo();
    let m = env.json(REF, &["pressure", "--json"]);
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
    let customers = env.json(REF, &["customers", "--json"]);
    assert_eq!(total as usize, customers.as_array().expect("array").len());
    for m in m["over_pressured"].as_array().expect("list") {
        assert!(m["gap"].as_i64().expect("gap") > 0);
    }
}
