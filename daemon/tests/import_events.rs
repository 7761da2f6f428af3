//! `relance import events` at size: the real binary writes a file of more
//! than two group-commit transactions (50,000 events each) and says so in
//! its final line; repeats within a transaction, across transactions and
//! against the store count once.

mod common;

use common::{Env, code, stderr};

const CONTACTS: usize = 1_000;
/// Events per contact, one a minute from 2026-11-01T00:00Z.
const PER_CONTACT: usize = 120;

fn at(minute: usize) -> String {
    format!(
        "2026-11-{:02}T{:02}:{:02}:00Z",
        1 + minute / 1440,
        minute / 60 % 24,
        minute % 60
    )
}

#[test]
fn a_large_event_file_imports_in_group_commits_with_repeats_counted_once() {
    let env = Env::new();
    let mut contacts = String::from("id,first_name\n");
    for c in 0..CONTACTS {
        contacts.push_str(&format!("c{c},N{c}\n"));
    }
    env.import_text("contacts", "c.csv", &contacts);

    // Contact by contact, so that each transaction holds whole contacts
    // and the repeats below fall in other transactions.
    let mut lines = Vec::with_capacity(CONTACTS * PER_CONTACT + 4);
    for c in 0..CONTACTS {
        for m in 0..PER_CONTACT {
            let kind = ["email_open", "page_visit", "email_click"][m % 3];
            lines.push(format!(
                r#"{{"contact": "c{c}", "type": "{kind}", "at": "{}", "props": {{"url": "/p/{m}"}}}}"#,
                at(m)
            ));
        }
    }
    // Line 120,001: the first event of c0 again (stored two transactions
    // before); 120,002: an id; 120,003: the same id (same transaction);
    // 120,004: the same content as 120,002 without its id, a new event;
    // 120,005: unknown contact; 120,006: the last event of c999 again,
    // in its transaction.
    lines.push(
        r#"{"contact": "c0", "type": "email_open", "at": "2026-11-01T00:00:00Z", "props": {"url": "/p/0"}}"#
            .into(),
    );
    lines.push(
        r#"{"id": "x1", "contact": "c5", "type": "meeting", "at": "2026-11-03T10:00:00Z"}"#.into(),
    );
    lines.push(
        r#"{"id": "x1", "contact": "c6", "type": "meeting", "at": "2026-11-03T11:00:00Z"}"#.into(),
    );
    lines.push(r#"{"contact": "c5", "type": "meeting", "at": "2026-11-03T10:00:00Z"}"#.into());
    lines.push(r#"{"contact": "ghost", "type": "meeting", "at": "2026-11-03T10:00:00Z"}"#.into());
    let last = PER_CONTACT - 1;
    lines.push(format!(
        r#"{{"contact": "c999", "type": "{}", "at": "{}", "props": {{"url": "/p/{last}"}}}}"#,
        ["email_open", "page_visit", "email_click"][last % 3],
        at(last)
    ));
    let file = env.write("e.jsonl", &(lines.join("\n") + "\n"));
    let file = file.to_str().expect("utf-8");

    let out = env.run_at(
        "2026-11-20T12:00:00Z",
        &["import", "events", file, "--json"],
    );
    assert_eq!(code(&out), 1, "one line rejected: {}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(summary["inserted"], CONTACTS * PER_CONTACT + 2);
    assert_eq!(summary["unchanged"], 3);
    assert_eq!(summary["updated"], 0);
    let rejected = summary["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["line"], 120_005);
    assert_eq!(rejected[0]["reason"], "contact: unknown contact `ghost`");

    // Off a terminal, stderr holds one line: the file, the lines, the time
    // and the rate.
    let err = stderr(&out);
    let final_line: Vec<&str> = err.lines().collect();
    assert_eq!(final_line.len(), 1, "{err}");
    let line = final_line[0];
    let prefix = format!("{file}: 120,006 lines in ");
    assert!(line.starts_with(&prefix), "{line}");
    let rest = &line[prefix.len()..];
    let (secs, rate) = rest.split_once(" s (").expect("seconds then rate");
    let secs: f64 = secs.parse().expect("seconds");
    let rate: u64 = rate
        .strip_suffix(" lines/s)")
        .expect("rate")
        .replace(',', "")
        .parse()
        .expect("rate");
    assert!(secs >= 0.0 && rate > 0, "{line}");

    let c5 = env.json(&["contacts", "show", "c5", "--json"]);
    let meetings = c5["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "meeting")
        .count();
    assert_eq!(
        meetings, 2,
        "the meeting with its id and the same meeting without"
    );
    for id in ["c0", "c6", "c999"] {
        let c = env.json(&["contacts", "show", id, "--json"]);
        let n = c["events"].as_array().expect("events").len();
        assert_eq!(n, PER_CONTACT, "{id}");
    }

    // Again: nothing new, every line but the unknown contact's unchanged.
    let out = env.run_at(
        "2026-11-20T12:00:00Z",
        &["import", "events", file, "--json"],
    );
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(again["inserted"], 0);
    assert_eq!(again["unchanged"], CONTACTS * PER_CONTACT + 5);
}
