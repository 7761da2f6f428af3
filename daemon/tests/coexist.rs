//! Follow-ups that coexist (issue 14), end to end: the real binary, a real
//! SQLite file and a real webhook receiver on loopback, at exact instants.
//! Call-backs on the agreed date, first scores entering their band, the
//! richer conditions, fatigue at any instant, one call charged once, the
//! pricing-page words, and the daemon reacting to events another process
//! imported.

#![allow(clippy::unwrap_used)]

mod common;

use common::daemon::{
    Received, once, outbox, receiver, shipped_to_loopback, spawn_daemon, wait_until,
};
use common::{BIN, Env, stderr};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

/// The contacts the receiver got a delivery for, in order.
fn delivered(r: &Received) -> Vec<String> {
    r.0.lock().unwrap().iter().map(|(_, c)| c.clone()).collect()
}

/// The shipped rules to the loopback receiver, with a plan job every five
/// minutes.
fn shipped(env: &Env, port: u16) {
    shipped_to_loopback(env, port);
    let text = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    env.write(
        "relance.toml",
        &format!("{text}\n[schedules.react]\njob = \"plan\"\ncron = \"*/5 * * * *\"\n"),
    );
}

/// The shipped rules to the loopback receiver on `port`, and one suspect
/// `p` in Paris.
fn suspect_p(port: u16) -> Env {
    let env = Env::new();
    shipped(&env, port);
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,timezone\np,p@example.com,suspect,Europe/Paris\n",
    );
    env
}

fn row<'a>(rows: &'a [Value], contact: &str, followup: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["contact"] == contact && r["followup"] == followup)
}

fn plan(env: &Env, now: &str) -> Vec<Value> {
    let out = env.run_at(now, &["rescore"]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.json_at(now, &["plan", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn followups_of(lines: &[Value], contact: &str) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l["contact"] == contact)
        .map(|l| l["followup"].as_str().unwrap().to_string())
        .collect()
}

/// Seed 003: a call coded RAPP with an agreed date puts a call task on that
/// date, in the phone window (09:00 Paris); a later call supersedes the
/// call-back of PISTE; PROJET without a date uses its delay (90 days).
#[test]
fn call_backs_land_on_the_agreed_date_in_the_phone_window() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped(&env, port);
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,tier,timezone\nrapp,r@example.com,suspect,,Europe/Paris\npiste,p@example.com,suspect,,Europe/Paris\nprojet,j@example.com,suspect,,Europe/Paris\n",
    );
    env.import_text(
        "events",
        "e.jsonl",
        concat!(
            r#"{"contact":"rapp","type":"call","at":"2026-11-20T10:00:00Z","props":{"outcome":"RAPP","callback_at":"2026-11-26"}}"#, "\n",
            r#"{"contact":"piste","type":"call","at":"2026-11-20T10:00:00Z","props":{"outcome":"PISTE","callback_at":"2026-11-27T14:30:00Z"}}"#, "\n",
            r#"{"contact":"projet","type":"call","at":"2026-11-20T10:00:00Z","props":{"outcome":"PROJET"}}"#, "\n",
        ),
    );
    // The first run only records the schedules; the plan job runs at 10:05.
    once(&env, "2026-11-20T10:01:00Z");
    once(&env, "2026-11-20T10:05:00Z");
    let rows = outbox(&env);
    let rapp = row(&rows, "rapp", "callback").expect("a call-back for RAPP");
    // Thursday 26 November, 09:00 in Paris.
    assert_eq!(rapp["due_at"], "2026-11-26T08:00:00Z", "{rapp}");
    assert_eq!(rapp["channel"], "phone");
    assert!(rapp["priority"].as_i64().unwrap() > 10, "above systematic");
    let piste = row(&rows, "piste", "callback").expect("a call-back for PISTE");
    assert_eq!(piste["due_at"], "2026-11-27T14:30:00Z");
    let projet = row(&rows, "projet", "callback").expect("a call-back for PROJET");
    // 90 days after the call: Thursday 18 February 2027, 11:00 in Paris.
    assert_eq!(projet["due_at"], "2027-02-18T10:00:00Z");

    // PISTE's prospect calls back first and books a meeting: no call-back.
    env.import_text(
        "events",
        "e2.jsonl",
        r#"{"contact":"piste","type":"call","at":"2026-11-23T09:30:00Z","props":{"outcome":"RDV"}}"#,
    );
    once(&env, "2026-11-23T09:35:00Z");
    let rows = outbox(&env);
    assert_eq!(row(&rows, "piste", "callback").unwrap()["state"], "dropped");

    // Nothing before the agreed instant; the task goes at it.
    once(&env, "2026-11-26T07:59:59Z");
    assert!(!delivered(&received).contains(&"rapp".to_string()));
    once(&env, "2026-11-26T08:00:00Z");
    let got = delivered(&received);
    assert!(got.contains(&"rapp".to_string()), "{got:?}");
    assert!(!got.contains(&"piste".to_string()));
    let rows = outbox(&env);
    assert_eq!(row(&rows, "rapp", "callback").unwrap()["state"], "sent");
}

/// A new lead whose first score is already hot gets the hot-lead call,
/// once; a cold one does not. Planned by `relance plan`, then delivered
/// by `relance run` to the loopback receiver, once.
#[test]
fn a_first_score_in_the_hot_band_fires_the_hot_lead_call_once() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped(&env, port);
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,title,timezone\nhot,h@example.com,prospect,DRH,Europe/Paris\ncold,c@example.com,prospect,,Europe/Paris\n",
    );
    let mut events = String::new();
    for (i, kind) in [
        "demo_request",
        "download",
        "download",
        "trade_show_visit",
        "meeting",
    ]
    .iter()
    .enumerate()
    {
        events.push_str(&format!(
            r#"{{"contact":"hot","type":"{kind}","at":"2026-11-19T1{i}:00:00Z"}}"#
        ));
        events.push('\n');
    }
    env.import_text("events", "e.jsonl", &events);
    let lines = plan(&env, "2026-11-20T10:00:00Z");
    let hot = env.json_at("2026-11-20T10:00:00Z", &["score", "hot", "--json"]);
    assert_eq!(hot["band"], "hot", "{hot}");
    assert!(
        followups_of(&lines, "hot").contains("hot_call"),
        "{lines:?}"
    );
    assert!(!followups_of(&lines, "cold").contains("hot_call"));
    // Rescoring again (same score) publishes nothing new: no second call.
    let again = env.json_at("2026-11-20T10:05:00Z", &["rescore", "--json"]);
    assert_eq!(again["changes"], 0, "{again}");
    // The daemon plans it at its first start (Friday 11:05 in Paris,
    // inside the phone window) and delivers it, once, whatever the number
    // of passes.
    once(&env, "2026-11-20T10:05:00Z");
    once(&env, "2026-11-20T10:10:00Z");
    assert_eq!(delivered(&received), ["hot"]);
    once(&env, "2026-11-20T10:15:00Z");
    assert_eq!(delivered(&received), ["hot"]);
    let rows = outbox(&env);
    let call = row(&rows, "hot", "hot_call").expect("the hot-lead call");
    assert_eq!(
        (&call["state"], &call["first_due"]),
        (&Value::from("sent"), &Value::from("2026-11-20T10:05:00Z")),
        "{call}"
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
}

/// Seed 004's "clicked an email, cold prospect, not called for over a
/// year, target 2" and seed 002's "four visits to one product page in two
/// days", as triggers.
const SEED_TRIGGERS: &str = r#"
[[followups.triggers]]
name = "cold_target_2_click"
event = "email_click"
when = { all = [
  { field = "band", eq = "cold" },
  { field = "status", eq = "prospect" },
  { field = "tier", eq = "target_2" },
  { field = "call.status", eq = "open" },
  { any = [ { field = "last.call", older_than = "365d" }, { field = "last.call", exists = false } ] },
] }
action = { channel = "email", template = "nurture_welcome" }

[[followups.triggers]]
name = "product_page_four_times"
event = "page_visit"
when = { count = "page_visit", where = { field = "event.props.url", contains = "/produit" }, within = "2d", gte = 4 }
action = { channel = "phone", template = "call_task" }
"#;

/// Seed 004's rule "clicked an email, cold prospect, not called for over a
/// year, target 2" and seed 002's "four visits to one product page in two
/// days" are written as triggers.
#[test]
fn triggers_read_band_call_status_and_windowed_counts() {
    let env = Env::new();
    let text = std::fs::read_to_string(common::repo().join("config/relance.toml")).unwrap();
    env.write(
        "relance.toml",
        &format!(
            r#"{text}
{SEED_TRIGGERS}
"#
        ),
    );
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,tier,timezone\nold,o@example.com,prospect,target_2,Europe/Paris\nrecent,r@example.com,prospect,target_2,Europe/Paris\nvisitor,v@example.com,prospect,core,Europe/Paris\nthrice,t@example.com,prospect,core,Europe/Paris\n",
    );
    let mut events = String::from(concat!(
        r#"{"contact":"old","type":"call","at":"2025-09-01T10:00:00Z","props":{"outcome":"MAIL"}}"#,
        "\n",
        r#"{"contact":"recent","type":"call","at":"2026-10-01T10:00:00Z","props":{"outcome":"MAIL"}}"#,
        "\n",
        r#"{"contact":"old","type":"email_click","at":"2026-11-20T09:00:00Z"}"#,
        "\n",
        r#"{"contact":"recent","type":"email_click","at":"2026-11-20T09:00:00Z"}"#,
        "\n",
    ));
    for (who, n) in [("visitor", 4), ("thrice", 3)] {
        for i in 0..n {
            events.push_str(&format!(
                r#"{{"contact":"{who}","type":"page_visit","at":"2026-11-19T1{i}:00:00Z","props":{{"url":"https://x.example/produit/paie"}}}}"#
            ));
            events.push('\n');
        }
    }
    env.import_text("events", "e.jsonl", &events);
    let lines = plan(&env, "2026-11-20T10:00:00Z");
    assert!(followups_of(&lines, "old").contains("cold_target_2_click"));
    assert!(!followups_of(&lines, "recent").contains("cold_target_2_click"));
    assert!(followups_of(&lines, "visitor").contains("product_page_four_times"));
    assert!(!followups_of(&lines, "thrice").contains("product_page_four_times"));

    // A scoring rule cannot read the band it computes: a clear error.
    env.write(
        "bad.toml",
        &format!(
            "{text}\n[[scoring.profile]]\nname = \"cold\"\npoints = 1.0\nwhen = {{ field = \"band\", eq = \"cold\" }}\n"
        ),
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(env.path("bad.toml"))
        .arg("check")
        .env("RELANCE_DB", env.path("store.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the score"),
        "{}",
        stderr(&out)
    );
}

/// `relance fatigue` at an instant between two actions counts only the
/// first, like scores do.
#[test]
fn fatigue_at_an_instant_counts_only_what_happened_by_then() {
    let env = Env::new();
    env.import_text("contacts", "c.csv", "id,timezone\np,Europe/Paris\n");
    env.import_text(
        "events",
        "e.jsonl",
        concat!(
            r#"{"contact":"p","type":"email_sent","at":"2026-11-10T10:00:00Z"}"#,
            "\n",
            r#"{"contact":"p","type":"sms_sent","at":"2026-11-12T10:00:00Z"}"#,
            "\n",
        ),
    );
    let before = env.json_at("2026-11-09T10:00:00Z", &["fatigue", "p", "--json"]);
    assert_eq!(before["fatigue"].as_f64(), Some(0.0), "{before}");
    let between = env.json_at("2026-11-11T10:00:00Z", &["fatigue", "p", "--json"]);
    assert_eq!(
        between["fatigue"].as_f64(),
        Some(2.0),
        "3 − 1 day: {between}"
    );
    assert_eq!(between["charges"].as_array().unwrap().len(), 1);
    let after = env.json_at("2026-11-12T10:00:00Z", &["fatigue", "p", "--json"]);
    assert_eq!(after["fatigue"].as_f64(), Some(8.0), "1 + 7: {after}");
}

/// The guard's decision and reasons for one more follow-up to `contact`
/// on `channel` at `now`.
fn guard_at(env: &Env, contact: &str, channel: &str, now: &str) -> (Value, Vec<Value>) {
    let d = env.json_at(
        now,
        &[
            "guard",
            contact,
            "--channel",
            channel,
            "--kind",
            "opportunistic",
            "--json",
        ],
    );
    let reasons = d["reasons"].as_array().unwrap().clone();
    (d, reasons)
}

fn reason<'a>(reasons: &'a [Value], rule: &str) -> Option<&'a Value> {
    reasons.iter().find(|r| r["rule"] == rule)
}

/// One call, one charge: the delivered call task records `call_task`
/// (no fatigue) and holds the phone cap's slot; the salesperson's call,
/// imported before or after it, costs its 5 points once and takes the
/// task's slot from its own instant: caps and the daily budget count the
/// two once. A call without a task counts for the phone cap too.
#[test]
fn a_delivered_call_task_and_the_call_itself_charge_once_in_either_order() {
    let (received, port, _rt) = receiver();
    for call_first in [false, true] {
        let env = Env::new();
        shipped(&env, port);
        env.import_text(
            "contacts",
            "c.csv",
            "id,email,status,timezone\np,p@example.com,suspect,Europe/Paris\n",
        );
        let call = r#"{"contact":"p","type":"call","at":"2026-11-20T10:30:00Z","props":{"outcome":"MAIL"}}"#;
        if call_first {
            env.import_text("events", "call.jsonl", call);
        }
        env.import_text(
            "events",
            "e.jsonl",
            r#"{"contact":"p","type":"page_visit","at":"2026-11-20T09:00:00Z","props":{"url":"https://x.example/tarifs"}}"#,
        );
        let sent = delivered(&received).len();
        once(&env, "2026-11-20T10:01:00Z");
        once(&env, "2026-11-20T10:05:00Z");
        if !call_first {
            // The task went out first; the call comes afterwards.
            assert_eq!(
                delivered(&received).len(),
                sent + 1,
                "the call task was delivered"
            );
            env.import_text("events", "call.jsonl", call);
        }
        let rows = outbox(&env);
        let task = row(&rows, "p", "pricing_visit_call").expect("call task");
        assert_eq!(task["state"], "sent", "{task}");
        let events = env.json(&["contacts", "show", "p", "--json"]);
        let kinds: Vec<&str> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"call_task"), "{kinds:?}");
        let f = env.json_at("2026-11-20T10:30:00Z", &["fatigue", "p", "--json"]);
        assert_eq!(
            f["fatigue"].as_f64(),
            Some(5.0),
            "call first: {call_first}: {f}"
        );
        // Between the task and the call, the task holds the phone cap
        // (three days from the task) and the day's budget.
        let (d, reasons) = guard_at(&env, "p", "phone", "2026-11-20T10:20:00Z");
        let cap = reason(&reasons, "cap").expect("the phone cap");
        assert_eq!(cap["frees_at"], "2026-11-23T10:01:00Z", "{d}");
        let (d, reasons) = guard_at(&env, "p", "email", "2026-11-20T10:20:00Z");
        assert_eq!(reason(&reasons, "budget").unwrap()["count"], 1, "{d}");
        // After the call: one send on the phone cap, freed three days
        // after the call (not the task), and one solicitation that day.
        let (d, reasons) = guard_at(&env, "p", "phone", "2026-11-20T11:00:00Z");
        assert_eq!(d["decision"], "defer", "{d}");
        let cap = reason(&reasons, "cap").expect("the phone cap");
        assert_eq!(
            (&cap["channel"], &cap["count"], &cap["frees_at"]),
            (
                &Value::from("phone"),
                &Value::from(1),
                &Value::from("2026-11-23T10:30:00Z")
            ),
            "call first: {call_first}: {d}"
        );
        assert_eq!(d["until"], "2026-11-23T10:30:00Z", "{d}");
        let (d, reasons) = guard_at(&env, "p", "email", "2026-11-20T11:00:00Z");
        assert_eq!(reason(&reasons, "budget").unwrap()["count"], 1, "{d}");
    }
    // A call made without a task, imported: the phone cap counts it.
    let env = Env::new();
    shipped(&env, port);
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,timezone\nq,q@example.com,suspect,Europe/Paris\n",
    );
    env.import_text(
        "events",
        "call.jsonl",
        r#"{"contact":"q","type":"call","at":"2026-11-20T10:30:00Z","props":{"outcome":"NRP"}}"#,
    );
    let (d, reasons) = guard_at(&env, "q", "phone", "2026-11-20T11:00:00Z");
    let cap = reason(&reasons, "cap").expect("the phone cap");
    assert_eq!(cap["count"], 1, "{d}");
    assert_eq!(cap["frees_at"], "2026-11-23T10:30:00Z", "{d}");
    let f = env.json_at("2026-11-20T11:00:00Z", &["fatigue", "q", "--json"]);
    assert_eq!(f["charges"].as_array().unwrap().len(), 1, "{f}");
}

/// The pricing page's words; contact `u{i}` visits a page named by word
/// `i` at `at`, contact `blog` a blog page whose path contains `prix`.
fn pricing_visitors(env: &Env, at: &str) -> [&'static str; 5] {
    let urls = ["/tarifs", "/tarif", "/tarification", "/pricing", "/prix"];
    let mut contacts = String::from("id,email,status,timezone\n");
    let mut events = String::new();
    for (i, url) in urls.iter().enumerate() {
        contacts.push_str(&format!("u{i},u{i}@example.com,suspect,Europe/Paris\n"));
        events.push_str(&format!(
            r#"{{"contact":"u{i}","type":"page_visit","at":"{at}","props":{{"url":"https://x.example{url}?ref=mail"}}}}"#
        ));
        events.push('\n');
    }
    contacts.push_str("blog,b@example.com,suspect,Europe/Paris\n");
    events.push_str(&format!(
        r#"{{"contact":"blog","type":"page_visit","at":"{at}","props":{{"url":"https://x.example/blog/prixnobel"}}}}"#
    ));
    env.import_text("contacts", "c.csv", &contacts);
    env.import_text("events", "e.jsonl", &events);
    urls
}

/// The pricing-page rule catches every word the articles use.
#[test]
fn the_pricing_page_rule_catches_each_word() {
    let env = Env::new();
    let urls = pricing_visitors(&env, "2026-11-20T09:00:00Z");
    let lines = plan(&env, "2026-11-20T10:00:00Z");
    for (i, url) in urls.iter().enumerate() {
        assert!(
            followups_of(&lines, &format!("u{i}")).contains("pricing_visit_call"),
            "{url}"
        );
        let score = env.json_at(
            "2026-11-20T10:00:00Z",
            &["score", &format!("u{i}"), "--json"],
        );
        assert!(
            score["contributions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["rule"] == "pricing page"),
            "{url}: {score}"
        );
    }
    assert!(followups_of(&lines, "blog").is_empty());
}

/// Events written by another process (`relance import events`) wake the
/// running daemon: no schedule, no API, and the follow-up is planned and
/// delivered within seconds.
#[test]
fn the_running_daemon_plans_events_another_process_imported() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped(&env, port);
    // Only the daemon's own reactions: no schedule at all.
    let text = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    let mut kept = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skip = line.starts_with("[schedules.");
        }
        if !skip {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    env.write("relance.toml", &kept);
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,timezone\np,p@example.com,suspect,UTC\n",
    );
    let mut child = spawn_daemon(&env, "run.log");
    // Any instant of the day: the phone window is weekdays 09:00–18:00, so
    // the test uses the email click trigger on a channel open at all hours.
    let now = relance::core::clock::Clock::system().now();
    let event = format!(
        r#"{{"contact":"p","type":"email_click","at":"{}"}}"#,
        (now - chrono::Duration::seconds(1)).to_rfc3339()
    );
    let started = Instant::now();
    env.import_text("events", "e.jsonl", &event);
    wait_until("the imported click was never planned", 60, || {
        outbox(&env)
            .iter()
            .any(|r| r["contact"] == "p" && r["followup"] == "email_click_call")
    });
    let planned_in = started.elapsed();
    let log = std::fs::read_to_string(env.path("run.log")).unwrap_or_default();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("new events planned"), "{log}");
    eprintln!(
        "planned {planned_in:?} after the import; deliveries: {:?}",
        delivered(&received)
    );
}

/// A wrong budget is refused at load, each mistake at its line.
#[test]
fn budget_mistakes_are_configuration_errors() {
    let env = Env::new();
    let text = std::fs::read_to_string(common::repo().join("config/relance.toml")).unwrap();
    for (budget, says) in [
        ("count = 0\nwindow = \"1d\"", "must be at least 1"),
        ("count = 1\nwindow = \"36h\"", "whole number of days"),
        ("count = 1\nchannel = \"fax\"", "unknown channel `fax`"),
        ("count = 9", "recent sends the guard keeps"),
    ] {
        let bad = text.replace(
            "[followups.arbitration.budget]\ncount = 1\nwindow = \"1d\"",
            &format!("[followups.arbitration.budget]\n{budget}"),
        );
        assert_ne!(bad, text);
        env.write("bad.toml", &bad);
        let out = Command::new(BIN)
            .arg("--config")
            .arg(env.path("bad.toml"))
            .arg("check")
            .env("RELANCE_DB", env.path("store.db"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{budget}");
        let err = stderr(&out);
        assert!(
            err.contains("followups.arbitration.budget") && err.contains(says),
            "{err}"
        );
    }
}

/// A click on Tuesday, planned only by Friday's pass: look-backs count from
/// the previous pass (Monday), so it is still followed up.
#[test]
fn a_signal_between_two_distant_passes_is_not_missed() {
    let (_received, port, _rt) = receiver();
    let env = suspect_p(port);
    once(&env, "2026-11-16T10:01:00Z");
    once(&env, "2026-11-16T10:05:00Z");
    env.import_text(
        "events",
        "e.jsonl",
        r#"{"contact":"p","type":"email_click","at":"2026-11-17T10:00:00Z"}"#,
    );
    once(&env, "2026-11-20T10:05:00Z");
    let rows = outbox(&env);
    let call = row(&rows, "p", "email_click_call").expect("the Tuesday click is followed up");
    assert_eq!(call["state"], "sent", "{call}");
}

/// Exempt follow-ups (issue 14): an acknowledgment of an unsubscribe form
/// is transactional (`exempt_when`), the same acknowledgment of a contact
/// form is not. On a Tuesday with a click (the sales call takes the day's
/// budget), the exempt acknowledgment still goes out that day; the other
/// waits for Wednesday 08:00 in Paris. An exempt send leaves the budget to
/// the next solicitation of the day.
#[test]
fn an_exempt_follow_up_goes_out_the_day_the_budget_is_taken() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped(&env, port);
    let text = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    env.write(
        "relance.toml",
        &format!(
            "{text}\n[templates.form_ack]\nchannel = \"email\"\nsubject = \"Received\"\ntext = \"We got your request.\"\n\n\
             [[followups.triggers]]\nname = \"form_ack\"\nevent = \"form_submit\"\n\
             exempt_when = {{ field = \"event.props.form\", eq = \"unsubscribe\" }}\ncooldown = \"1s\"\n\
             action = {{ channel = \"email\", template = \"form_ack\" }}\n"
        ),
    );
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,timezone\np,p@example.com,suspect,Europe/Paris\nq,q@example.com,suspect,Europe/Paris\n",
    );
    env.import_text(
        "events",
        "e.jsonl",
        concat!(
            r#"{"contact":"p","type":"email_click","at":"2026-11-17T09:00:00Z"}"#, "\n",
            r#"{"id":"p-unsub","contact":"p","type":"form_submit","at":"2026-11-17T09:30:00Z","props":{"form":"unsubscribe"}}"#, "\n",
            r#"{"id":"p-contact","contact":"p","type":"form_submit","at":"2026-11-17T09:40:00Z","props":{"form":"contact"}}"#, "\n",
            r#"{"id":"q-unsub","contact":"q","type":"form_submit","at":"2026-11-17T09:30:00Z","props":{"form":"unsubscribe"}}"#, "\n",
            r#"{"contact":"q","type":"email_click","at":"2026-11-17T09:40:00Z"}"#, "\n",
        ),
    );
    once(&env, "2026-11-17T10:01:00Z");
    once(&env, "2026-11-17T10:05:00Z");
    let rows = outbox(&env);
    let acks = |contact: &str| -> Vec<(bool, String, String)> {
        let mut v: Vec<_> = rows
            .iter()
            .filter(|r| r["contact"] == contact && r["followup"] == "form_ack")
            .map(|r| {
                (
                    r["payload"]["exempt"] == true,
                    r["state"].as_str().unwrap().to_string(),
                    r["due_at"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let call = row(&rows, "p", "email_click_call").expect("p's call");
    assert_eq!(call["state"], "sent", "{call}");
    // Tuesday: the call and the exempt acknowledgment; Wednesday 08:00
    // Paris for the other one.
    let p = acks("p");
    assert_eq!(p.len(), 2, "{rows:#?}");
    assert_eq!((p[0].0, p[0].1.as_str()), (false, "deferred"), "{p:?}");
    assert_eq!(p[0].2, "2026-11-18T07:00:00Z");
    assert_eq!((p[1].0, p[1].1.as_str()), (true, "sent"), "{p:?}");
    // q: the exempt acknowledgment first, then the call, the same day.
    assert_eq!(acks("q")[0].1, "sent");
    assert_eq!(
        row(&rows, "q", "email_click_call").unwrap()["state"],
        "sent"
    );
    assert_eq!(delivered(&received).len(), 4);

    once(&env, "2026-11-18T06:59:59Z");
    assert_eq!(delivered(&received).len(), 4, "not before the slot");
    once(&env, "2026-11-18T07:00:00Z");
    let rows = outbox(&env);
    let p: Vec<_> = rows
        .iter()
        .filter(|r| r["contact"] == "p" && r["followup"] == "form_ack")
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(p, ["sent", "sent"]);
    assert_eq!(delivered(&received).len(), 5);
}

/// `text` without the sections (tables and arrays of tables) whose header
/// starts with one of `prefixes`.
fn without_sections(text: &str, prefixes: &[&str]) -> String {
    let mut kept = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skip = prefixes.iter().any(|p| line.starts_with(p));
        }
        if !skip {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// The state and last update of `contact`'s row of `followup`.
fn state_of(env: &Env, contact: &str, followup: &str) -> (String, String) {
    let rows = outbox(env);
    let r = row(&rows, contact, followup)
        .unwrap_or_else(|| panic!("no {followup} for {contact}: {rows:#?}"));
    (
        r["state"].as_str().unwrap().to_string(),
        r["updated_at"].as_str().unwrap().to_string(),
    )
}

/// The pricing-page rule through `relance run`: a visit at 07:30 in Paris
/// on Friday to a page named by each of the articles' words gives that
/// contact a call task, delivered to the receiver when the phone window
/// opens (09:00 Paris), not a second before; a blog page whose path merely
/// contains `prix` gives nothing.
#[test]
fn each_pricing_word_is_delivered_as_a_call_task_when_the_phone_window_opens() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped(&env, port);
    let urls = pricing_visitors(&env, "2026-11-20T06:30:00Z");
    once(&env, "2026-11-20T06:35:00Z");
    let rows = outbox(&env);
    for (i, url) in urls.iter().enumerate() {
        let call = row(&rows, &format!("u{i}"), "pricing_visit_call")
            .unwrap_or_else(|| panic!("{url}: no call task: {rows:#?}"));
        assert_eq!(call["due_at"], "2026-11-20T08:00:00Z", "{url}: {call}");
        assert_eq!(call["channel"], "phone", "{url}");
    }
    assert!(
        rows.iter().all(|r| r["contact"] != "blog"),
        "the blog page is no pricing page: {rows:#?}"
    );
    once(&env, "2026-11-20T07:59:59Z");
    assert!(delivered(&received).is_empty(), "before the phone window");
    once(&env, "2026-11-20T08:00:00Z");
    let got: BTreeSet<String> = delivered(&received).into_iter().collect();
    let want: BTreeSet<String> = (0..urls.len()).map(|i| format!("u{i}")).collect();
    assert_eq!(got, want, "one call task per word, none for the blog");
    assert_eq!(delivered(&received).len(), urls.len(), "each once");
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(
            state_of(&env, &format!("u{i}"), "pricing_visit_call"),
            ("sent".to_string(), "2026-11-20T08:00:00Z".to_string()),
            "{url}"
        );
    }
    // Later passes plan nothing more for these visits.
    once(&env, "2026-11-20T08:05:00Z");
    assert_eq!(delivered(&received).len(), urls.len());
}

/// The richer conditions through `relance run`, the shipped triggers and
/// nurture set aside so that each contact has one follow-up: seed 004's
/// "clicked an email, cold prospect, not called for over a year, target 2"
/// (band, call status, `last.call`), seed 002's "four visits to one product
/// page in two days" and "three complaints in two weeks" (windowed counts),
/// and a download by a prospect the desk reads as CHAUD with a score of 50
/// or more (`prospect.status`, `score`). Each follow-up is delivered to the
/// right contact when its channel's window opens on Friday 20 November
/// (email 08:00, phone 09:00 in Paris), and only to those contacts.
#[test]
fn band_score_prospect_status_and_windowed_counts_drive_deliveries_at_exact_instants() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped(&env, port);
    let text = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    let text = without_sections(&text, &["[[followups.triggers]]", "[[followups.nurture"]);
    env.write(
        "relance.toml",
        &format!(
            r#"{text}
{SEED_TRIGGERS}

[[followups.triggers]]
name = "three_complaints"
event = "complaint"
when = {{ count = "complaint", within = "14d", gte = 3 }}
action = {{ channel = "phone", template = "call_task" }}

[[followups.triggers]]
name = "hot_prospect_download"
event = "download"
when = {{ all = [ {{ field = "prospect.status", eq = "CHAUD" }}, {{ field = "score", gte = 50 }} ] }}
action = {{ channel = "email", template = "nurture_welcome" }}
"#
        ),
    );
    let mut contacts = String::from("id,email,status,tier,timezone\n");
    for (id, status, tier) in [
        ("old", "prospect", "target_2"),
        ("recent", "prospect", "target_2"),
        ("visitor", "prospect", "core"),
        ("thrice", "prospect", "core"),
        ("grumpy", "customer", ""),
        ("grumbler", "customer", ""),
        ("piste", "prospect", "core"),
        ("mail", "prospect", "core"),
        ("low", "prospect", "core"),
    ] {
        contacts.push_str(&format!(
            "{id},{id}@example.com,{status},{tier},Europe/Paris\n"
        ));
    }
    env.import_text("contacts", "c.csv", &contacts);
    let mut events = Vec::new();
    let mut event = |contact: &str, kind: &str, at: &str, props: &str| {
        events.push(format!(
            r#"{{"contact":"{contact}","type":"{kind}","at":"{at}","props":{{{props}}}}}"#
        ));
    };
    // Seed 004: called 15 months ago, or 7 weeks ago; both click on Friday.
    event("old", "call", "2025-09-01T10:00:00Z", r#""outcome":"MAIL""#);
    event(
        "recent",
        "call",
        "2026-10-01T10:00:00Z",
        r#""outcome":"MAIL""#,
    );
    for who in ["old", "recent"] {
        event(who, "email_click", "2026-11-20T06:00:00Z", "");
    }
    // Seed 002: four visits of a product page within two days, or three
    // (thrice's first is older than two days).
    let produit = r#""url":"https://x.example/produit/paie""#;
    event("visitor", "page_visit", "2026-11-18T08:00:00Z", produit);
    event("thrice", "page_visit", "2026-11-18T05:00:00Z", produit);
    for who in ["visitor", "thrice"] {
        for at in ["05:00", "05:30", "06:20"] {
            event(who, "page_visit", &format!("2026-11-20T{at}:00Z"), produit);
        }
    }
    // Three complaints in two weeks, or in three weeks.
    for (who, first) in [("grumpy", "2026-11-08"), ("grumbler", "2026-11-01")] {
        for day in [first, "2026-11-14", "2026-11-20"] {
            event(who, "complaint", &format!("{day}T06:00:00Z"), "");
        }
    }
    // PISTE leaves the prospect CHAUD, MAIL TIÈDE; the demo request and the
    // download score 65, the download alone 25.
    let later = r#""outcome":"PISTE","callback_at":"2027-03-01""#;
    for (who, props) in [
        ("piste", later),
        ("mail", r#""outcome":"MAIL""#),
        ("low", later),
    ] {
        event(who, "call", "2026-11-10T10:00:00Z", props);
    }
    for who in ["piste", "mail"] {
        event(who, "demo_request", "2026-11-19T15:00:00Z", "");
    }
    for who in ["piste", "mail", "low"] {
        event(who, "download", "2026-11-20T06:10:00Z", "");
    }
    env.import_text("events", "e.jsonl", &(events.join("\n") + "\n"));

    once(&env, "2026-11-20T06:30:00Z");
    let score = |id: &str| env.json_at("2026-11-20T06:30:00Z", &["score", id, "--json"]);
    assert_eq!(score("old")["band"], "cold");
    assert!(score("piste")["score"].as_f64().unwrap() >= 50.0);
    assert!(score("low")["score"].as_f64().unwrap() < 50.0);
    let want = [
        (
            "old",
            "cold_target_2_click",
            "email",
            "2026-11-20T07:00:00Z",
        ),
        (
            "piste",
            "hot_prospect_download",
            "email",
            "2026-11-20T07:00:00Z",
        ),
        (
            "visitor",
            "product_page_four_times",
            "phone",
            "2026-11-20T08:00:00Z",
        ),
        (
            "grumpy",
            "three_complaints",
            "phone",
            "2026-11-20T08:00:00Z",
        ),
    ];
    let rows = outbox(&env);
    let planned: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["contact"].as_str().unwrap().to_string(),
                r["followup"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = want
        .iter()
        .map(|(c, f, _, _)| ((*c).to_string(), (*f).to_string()))
        .collect();
    // Only the call-backs PISTE agreed (for March) besides.
    let others: Vec<_> = planned.difference(&expected).collect();
    assert!(others.iter().all(|(_, f)| f == "callback"), "{others:?}");
    for (contact, followup, channel, due) in want {
        let r = row(&rows, contact, followup).unwrap_or_else(|| panic!("{contact}: {rows:#?}"));
        assert_eq!(
            (r["channel"].as_str(), r["due_at"].as_str()),
            (Some(channel), Some(due)),
            "{r}"
        );
    }

    // Emails at 08:00 in Paris, calls at 09:00, each to its contact only.
    once(&env, "2026-11-20T06:59:59Z");
    assert!(delivered(&received).is_empty());
    once(&env, "2026-11-20T07:00:00Z");
    let mut got = delivered(&received);
    got.sort();
    assert_eq!(got, ["old", "piste"]);
    once(&env, "2026-11-20T07:59:59Z");
    assert_eq!(delivered(&received).len(), 2);
    once(&env, "2026-11-20T08:00:00Z");
    let mut got = delivered(&received);
    got.sort();
    assert_eq!(got, ["grumpy", "old", "piste", "visitor"]);
    for (contact, followup, _, due) in want {
        assert_eq!(
            state_of(&env, contact, followup),
            ("sent".to_string(), due.to_string()),
            "{contact}"
        );
    }
}

/// Fatigue at any instant, through `relance run`: a store already holding
/// five SMS of the following days (31 points by the last, past the stop
/// level, and the weekly cap across channels, had they counted) does not
/// hold back Friday's call task at a pass on Friday: it is delivered at
/// the pass's instant. At Thursday's instant after them the guard holds
/// the same call back.
#[test]
fn sends_stored_after_the_pass_instant_do_not_tire_the_contact_at_that_instant() {
    let (received, port, _rt) = receiver();
    let env = suspect_p(port);
    let mut events = String::from(
        r#"{"contact":"p","type":"page_visit","at":"2026-11-20T09:00:00Z","props":{"url":"https://x.example/pricing"}}"#,
    );
    for day in 22..=26 {
        events.push_str(&format!(
            "\n{{\"contact\":\"p\",\"type\":\"sms_sent\",\"at\":\"2026-11-{day}T10:00:00Z\",\"channel\":\"sms\"}}"
        ));
    }
    env.import_text("events", "e.jsonl", &events);
    let later = env.json_at("2026-11-26T10:00:00Z", &["fatigue", "p", "--json"]);
    assert!(later["fatigue"].as_f64().unwrap() > 25.0, "{later}");
    once(&env, "2026-11-20T10:01:00Z");
    assert_eq!(delivered(&received), ["p"]);
    assert_eq!(
        state_of(&env, "p", "pricing_visit_call"),
        ("sent".to_string(), "2026-11-20T10:01:00Z".to_string())
    );
    let (d, _) = guard_at(&env, "p", "phone", "2026-11-26T10:00:00Z");
    assert_ne!(d["decision"], "allow", "{d}");
}
