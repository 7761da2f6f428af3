//! End-to-end: the real `relance` binary against a real SQLite file.

mod common;

use common::{Env, code, repo, stderr, stdout};
use serde_json::Value;

#[test]
fn check_accepts_the_shipped_configuration() {
    let env = Env::new();
    let out = env.run(&["--now", "2026-11-20T12:00:00Z", "check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("valid"));
    let summary = env.json(&["--now", "2026-11-20T12:00:00Z", "check", "--json"]);
    assert_eq!(summary["valid"], true);
    assert_eq!(summary["fatigue"]["costs"]["call"], 5.0);
    let nurture = summary["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .find(|s| s["name"] == "nurture")
        .expect("nurture schedule");
    // Friday 2026-11-20 → next Tuesday 09:30 in Paris.
    assert_eq!(nurture["next"], "2026-11-24T09:30:00+01:00");
}

#[test]
fn check_reports_every_error_with_line_and_column() {
    let env = Env::new();
    std::fs::write(
        env.path("relance.toml"),
        "[store]\npath = \"x.db\"\ncolour = \"blue\"\n\n[scoring]\ninactivity_malus_per_month = \"five\"\n\n\
         [[fatigue.levels]]\nname = \"normal\"\n[[fatigue.levels]]\nname = \"stop\"\nabove = 25\n\
         [[fatigue.levels]]\nname = \"reduce\"\nfrom = 20\n",
    )
    .expect("write");
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("3 errors"), "{err}");
    assert!(
        err.contains("relance.toml:3:1: `store.colour`: unknown key"),
        "{err}"
    );
    assert!(
        err.contains("relance.toml:6:30: `scoring.inactivity_malus_per_month`: invalid type"),
        "{err}"
    );
    assert!(
        err.contains(
            "relance.toml:15:8: `fatigue.levels[2].from`: levels must be listed lowest first"
        ),
        "{err}"
    );

    let out = env.run(&["check", "--json"]);
    assert_eq!(code(&out), 2);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let lines: Vec<i64> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_i64().expect("line"))
        .collect();
    assert_eq!(lines, [3, 6, 15]);

    // Any other command refuses to run on an invalid configuration.
    let out = env.run(&["contacts", "list"]);
    assert_eq!(code(&out), 2);
    assert!(!env.path("x.db").exists(), "nothing was created");
}

fn thousand_contacts_with_three_bad_lines() -> String {
    let mut csv = String::from("id,first_name,email,status,timezone,consent_sms,headcount\n");
    for i in 1..=1000 {
        let line = match i {
            100 => format!("c{i},Ann,not-an-email,prospect,Europe/Paris,yes,12\n"),
            500 => format!("c{i},Bob,b{i}@example.com,lead,Europe/Paris,yes,12\n"),
            900 => format!("c{i},Cy,c{i}@example.com,prospect,Mars/Olympus,yes,12\n"),
            _ => format!("c{i},Dee,d{i}@example.com,prospect,Europe/Paris,yes,{i}\n"),
        };
        csv.push_str(&line);
    }
    csv
}

#[test]
fn import_rejects_bad_lines_by_number_and_is_idempotent() {
    let env = Env::new();
    std::fs::write(
        env.path("contacts.csv"),
        thousand_contacts_with_three_bad_lines(),
    )
    .expect("write");
    let file = env.path("contacts.csv");
    let file = file.to_str().expect("utf-8");

    let out = env.run(&["import", "contacts", file, "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(summary["inserted"], 997);
    let rejected = summary["rejected"].as_array().expect("rejected");
    let lines: Vec<i64> = rejected
        .iter()
        .map(|r| r["line"].as_i64().expect("line"))
        .collect();
    // Line numbers count the header as line 1.
    assert_eq!(lines, [101, 501, 901]);
    assert!(
        rejected[0]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("email:")
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("status:")
    );
    assert!(
        rejected[2]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("timezone:")
    );

    let before = env.json(&["contacts", "list", "--json"]);
    assert_eq!(before.as_array().expect("array").len(), 997);
    assert!(
        before
            .as_array()
            .expect("array")
            .iter()
            .all(|c| c["id"].is_string())
    );

    let out = env.run(&["import", "contacts", file]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("0 inserted, 0 updated, 997 unchanged, 3 rejected"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("line 501: status:"),
        "{}",
        stdout(&out)
    );
    let after = env.json(&["contacts", "list", "--json"]);
    assert_eq!(before, after, "re-running the import changes nothing");

    let c7 = env.json(&["contacts", "show", "c7", "--json"]);
    assert_eq!(c7["email"], "d7@example.com");
    assert_eq!(c7["attributes"]["headcount"], 7);
    assert_eq!(c7["consent"]["sms"], true);
    assert_eq!(c7["timezone"], "Europe/Paris");
}

#[test]
fn unreadable_input_exits_2_and_writes_nothing() {
    let env = Env::new();
    let out = env.run(&["import", "contacts", "/nonexistent/contacts.csv"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));

    std::fs::write(env.path("noid.csv"), "email\na@b.fr\n").expect("write");
    let out = env.run(&[
        "import",
        "contacts",
        env.path("noid.csv").to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no `id` column"), "{}", stderr(&out));
    assert_eq!(
        env.json(&["contacts", "list", "--json"]),
        Value::Array(vec![])
    );
}

#[test]
fn events_import_is_idempotent_and_erase_forgets_everything() {
    let env = Env::new();
    std::fs::write(
        env.path("c.csv"),
        "id,first_name,last_name\np,Paul,Perret\nq,Quentin,Q\n",
    )
    .expect("write");
    let out = env.run(&[
        "import",
        "contacts",
        env.path("c.csv").to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events = "\
{\"id\": \"e1\", \"contact\": \"p\", \"type\": \"call\", \"at\": \"2026-11-19T10:00:00+01:00\", \"channel\": \"phone\", \"props\": {\"outcome\": \"RAPP\"}}
{\"contact\": \"p\", \"type\": \"email_open\", \"at\": \"2026-11-18T08:00:00Z\"}
{\"contact\": \"ghost\", \"type\": \"call\", \"at\": \"2026-11-18T08:00:00Z\"}
{\"contact\": \"q\", \"type\": \"call\", \"at\": \"not a date\"}
{\"contact\": \"q\", \"type\": \"email_open\", \"at\": \"2026-11-18T08:00:00Z\"}
";
    std::fs::write(env.path("e.jsonl"), events).expect("write");
    let file = env.path("e.jsonl");
    let file = file.to_str().expect("utf-8");
    let first = env.json_any(&["import", "events", file, "--json"]);
    assert_eq!(first["inserted"], 3);
    let reasons: Vec<String> = first["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| format!("{}:{}", r["line"], r["reason"].as_str().expect("reason")))
        .collect();
    assert!(
        reasons[0].starts_with("3:contact: unknown contact `ghost`"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("4:at:"), "{reasons:?}");
    let again = env.json_any(&["import", "events", file, "--json"]);
    assert_eq!(
        (again["inserted"].as_i64(), again["unchanged"].as_i64()),
        (Some(0), Some(3))
    );

    let p = env.json(&["contacts", "show", "p", "--json"]);
    let kinds: Vec<&str> = p["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(kinds, ["email_open", "call"], "oldest first");

    let out = env.run(&["--log-format", "json", "contacts", "erase", "p"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let log_line = stderr(&out)
        .lines()
        .find(|l| l.contains("contact erased"))
        .map(str::to_string)
        .expect("logged");
    let log: Value = serde_json::from_str(&log_line).expect("JSON log line");
    assert_eq!(log["level"], "INFO");
    let out = env.run(&["contacts", "show", "p"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no contact with id `p`"));
    // Re-importing p's events now fails: p and its history are gone.
    let out = env.run(&["import", "events", file]);
    assert!(
        stdout(&out).contains("unknown contact `p`"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_demo_dataset_imports_cleanly() {
    let env = Env::new();
    for (what, file) in [
        ("companies", "companies.csv"),
        ("contacts", "contacts.csv"),
        ("deals", "deals.csv"),
        ("events", "events.jsonl"),
    ] {
        let path = repo().join("config/demo").join(file);
        let out = env.run(&["import", what, path.to_str().expect("utf-8")]);
        assert_eq!(code(&out), 0, "{what}: {}{}", stdout(&out), stderr(&out));
    }
    let martino = env.json(&["contacts", "show", "martino", "--json"]);
    assert_eq!(martino["company"], "bati-sud");
    assert!(martino["events"].as_array().expect("events").len() >= 8);
}

#[test]
fn now_must_be_an_rfc3339_instant() {
    let env = Env::new();
    let out = env.run(&["--now", "tomorrow", "check"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
}
