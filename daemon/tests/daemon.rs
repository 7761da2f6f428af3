//! The daemon end to end: the real binary, a real SQLite file and a real
//! HTTP receiver on loopback. Killed with SIGKILL while it dispatches, it
//! loses nothing and never sends a follow-up under two keys; schedules keep
//! local time across DST and apply their misfire policy after downtime.

#![allow(clippy::unwrap_used)]

mod common;

use common::daemon::*;
use common::{BIN, Env, free_port, stderr};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn kill_9_during_dispatch_loses_nothing_and_never_changes_a_key() {
    const CONTACTS: usize = 5000;
    let (received, port, _rt) = receiver();
    let env = daemon_env(
        port,
        "[schedules.plan]\njob = \"plan\"\ncron = \"* * * * * *\"\n",
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(CONTACTS));
    broadcast_to_prospects(&env, "launch");

    // Kill at random moments of the dispatch: after a random number of new
    // deliveries since the start.
    let mut rng = Lcg(0x5EED);
    let mut kills = 0;
    let count = || received.0.lock().unwrap().len();
    for round in 0..8 {
        let mut child = spawn_daemon(&env, &format!("run-{round}.log"));
        let target = count() + 1 + rng.below(CONTACTS as u64 / 10) as usize;
        let started = Instant::now();
        while count() < target && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let sent_before_last = received.0.lock().unwrap().len();
    assert!(sent_before_last > 0, "nothing delivered before the kills");

    // Then let it finish, and stop it gracefully.
    let mut child = spawn_daemon(&env, "run-final.log");
    let started = Instant::now();
    loop {
        let rows = outbox(&env);
        let sent = rows.iter().filter(|r| r["state"] == "sent").count();
        if rows.len() == CONTACTS && sent == CONTACTS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "after {kills} kills: {sent} of {} rows sent, {CONTACTS} expected; log: {}",
            rows.len(),
            std::fs::read_to_string(env.path("run-final.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    // One row per contact, each with its own key; every contact received its
    // follow-up, always under that row's key.
    let rows = outbox(&env);
    let key_of: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r["contact"].as_str().unwrap().to_string(),
                r["idem_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(key_of.len(), CONTACTS);
    let got = received.0.lock().unwrap().clone();
    let mut keys_per_contact: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, contact) in &got {
        keys_per_contact.entry(contact).or_default().insert(key);
    }
    assert_eq!(
        keys_per_contact.len(),
        CONTACTS,
        "every contact received its follow-up"
    );
    for (contact, keys) in &keys_per_contact {
        assert_eq!(
            keys.len(),
            1,
            "{contact} received under several keys: {keys:?}"
        );
        assert_eq!(
            keys.iter().next().copied(),
            key_of.get(*contact).map(String::as_str),
            "{contact} received under a key that is not its row's"
        );
    }
    // Re-sends after a crash are possible (the receiver de-duplicates on
    // the key) but bounded by the round under way at each kill.
    let resent = got.len() - CONTACTS;
    eprintln!(
        "{kills} kills, {sent_before_last} deliveries before the last start, {resent} re-sent"
    );
    assert!(
        resent <= kills * OUTBOX_BATCH,
        "{resent} re-sends for {kills} kills"
    );
}

#[test]
fn sighup_with_an_invalid_file_keeps_the_running_configuration() {
    let (received, port, _rt) = receiver();
    let env = daemon_env(
        port,
        "[schedules.plan]\njob = \"plan\"\ncron = \"* * * * * *\"\n",
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(3));
    // Signals are handled once the daemon says it runs.
    let mut child = start_daemon(&env, "run.log");
    let good = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    std::fs::write(
        env.path("relance.toml"),
        format!("{good}\n[outbox]\nlease = 5\n"),
    )
    .unwrap();
    signal(&child, "HUP");
    let log = wait_for_log(&env, "run.log", "configuration reload refused", 120);
    // The file is put back for the command below, without a new SIGHUP: the
    // daemon still runs on the old configuration, and a broadcast created
    // now goes out.
    std::fs::write(env.path("relance.toml"), &good).unwrap();
    broadcast_to_prospects(&env, "b1");
    wait_until("no delivery after the refused reload", 120, || {
        received.0.lock().unwrap().len() >= 3
    });
    assert!(child.try_wait().unwrap().is_none(), "the daemon stopped");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    // The error names the file, line and column.
    let line = good.lines().count() + 3;
    assert!(
        log.contains(&format!(":{line}:")),
        "no line {line} in: {log}"
    );
}

/// The ticks the scheduler ran for `schedule`, oldest first.
fn ticks(env: &Env, schedule: &str) -> Vec<String> {
    env.json(&["schedules", "--json"])["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["schedule"] == schedule)
        .map(|r| r["tick"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn local_times_stay_right_across_the_dst_change() {
    let env = daemon_env(
        9,
        "[schedules.nurture]\njob = \"plan\"\ncron = \"30 9 * * *\"\ntimezone = \"Europe/Paris\"\nmisfire = \"catch_up\"\ncatch_up_limit = 10\n",
    );
    // Paris moves to summer time on Sunday 29 March 2026.
    once(&env, "2026-03-27T12:00:00Z");
    assert_eq!(
        ticks(&env, "nurture"),
        ["2026-03-27T12:00:00Z"],
        "a new schedule runs once at its first start and does not replay history"
    );
    once(&env, "2026-03-31T12:00:00Z");
    assert_eq!(
        ticks(&env, "nurture"),
        [
            "2026-03-27T12:00:00Z",
            "2026-03-28T08:30:00Z",
            "2026-03-29T07:30:00Z",
            "2026-03-30T07:30:00Z",
            "2026-03-31T07:30:00Z"
        ]
    );
    // Back to winter time on Sunday 25 October 2026.
    once(&env, "2026-10-24T12:00:00Z");
    once(&env, "2026-10-26T12:00:00Z");
    let all = ticks(&env, "nurture");
    assert_eq!(
        all[all.len() - 2..],
        ["2026-10-25T08:30:00Z", "2026-10-26T08:30:00Z"]
    );
}

#[test]
fn each_misfire_policy_after_five_hours_down() {
    let env = daemon_env(
        9,
        r#"
[schedules.skip]
job = "rescore"
cron = "0 * * * *"
misfire = "skip"

[schedules.once]
job = "rescore"
cron = "0 * * * *"
misfire = "run_once"

[schedules.catchup]
job = "rescore"
cron = "0 * * * *"
misfire = "catch_up"
catch_up_limit = 2
"#,
    );
    // The first start runs every schedule once, whatever its policy.
    once(&env, "2026-05-04T08:00:10Z");
    // Down from 08:00 to 13:30: five hourly ticks missed, none on time.
    once(&env, "2026-05-04T13:30:00Z");
    let first = "2026-05-04T08:00:10Z";
    assert_eq!(ticks(&env, "skip"), [first]);
    assert_eq!(ticks(&env, "once"), [first, "2026-05-04T13:00:00Z"]);
    assert_eq!(
        ticks(&env, "catchup"),
        [first, "2026-05-04T12:00:00Z", "2026-05-04T13:00:00Z"]
    );
    // On time again: every policy runs the 14:00 tick, once.
    once(&env, "2026-05-04T14:00:20Z");
    once(&env, "2026-05-04T14:00:40Z");
    for s in ["skip", "once", "catchup"] {
        assert_eq!(
            ticks(&env, s)
                .iter()
                .filter(|t| *t == "2026-05-04T14:00:00Z")
                .count(),
            1,
            "{s}"
        );
    }
}

#[test]
fn two_daemons_never_run_the_same_tick_twice() {
    let env = daemon_env(
        9,
        "[schedules.rescore]\njob = \"rescore\"\ncron = \"*/5 * * * *\"\nmisfire = \"catch_up\"\ncatch_up_limit = 50\n",
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(2000));
    once(&env, "2026-05-04T08:00:10Z");
    // Two processes at once, each wanting the 12 ticks of the hour.
    let spawn = || {
        Command::new(BIN)
            .args(["--config"])
            .arg(env.path("relance.toml"))
            .args(["--now", "2026-05-04T09:00:10Z", "run", "--once"])
            .env("RELANCE_DB", env.path("store.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The first start's run, then the 12 ticks of the hour, each once.
    let runs = ticks(&env, "rescore");
    let distinct: BTreeSet<&String> = runs.iter().collect();
    assert_eq!(runs.len(), 13, "{runs:?}");
    assert_eq!(distinct.len(), 13, "a tick ran twice: {runs:?}");
}

/// Seed 004: a prospect at fatigue 12 is due a sales call (pricing page
/// visit), a seminar invitation and the monthly nurture email on Friday
/// 20 November. Ranked call > invitation > nurture; the shipped budget (one
/// solicitation a day in the contact's time zone) lets the call through
/// today, the invitation on Saturday when the email window opens (08:00
/// Paris), and the newsletter when the 7-day cap across channels frees
/// (the SMS of the 18th leaves it on the 25th at 10:00Z).
fn seminar_day(env: &Env) {
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,first_name,status,tier,timezone\np,p@example.com,P,prospect,target_1,Europe/Paris\n",
    );
    env.import_text(
        "events",
        "e.jsonl",
        concat!(
            r#"{"contact":"p","type":"sms_sent","at":"2026-11-18T10:00:00Z","channel":"sms"}"#, "\n",
            r#"{"contact":"p","type":"sms_sent","at":"2026-11-19T10:00:00Z","channel":"sms"}"#, "\n",
            r#"{"contact":"p","type":"page_visit","at":"2026-11-20T09:00:00Z","props":{"url":"https://x.example/pricing"}}"#, "\n",
        ),
    );
    let out = env.run_at(
        "2026-11-20T10:00:00Z",
        &[
            "broadcast",
            "create",
            "--id",
            "seminar",
            "--name",
            "seminar",
            "--segment",
            r#"{ field = "status", eq = "prospect" }"#,
            "--channel",
            "email",
            "--template",
            "nurture_welcome",
            "--end",
            "2026-12-01T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Nurture enrols cold and warm prospects: the plan reads stored bands.
    let out = env.run_at("2026-11-20T10:00:00Z", &["rescore"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_seminar_day_is_arbitrated_call_first_and_the_newsletter_waits() {
    let env = Env::new();
    seminar_day(&env);
    let plan = env.json_at("2026-11-20T10:00:00Z", &["plan", "--json"]);
    let lines = plan.as_array().unwrap();
    let got: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["followup"].as_str().unwrap(),
                l["kind"].as_str().unwrap(),
                l["channel"].as_str().unwrap(),
                l["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("pricing_visit_call", "opportunistic", "phone", "allow"),
            ("seminar", "event", "email", "defer"),
            ("prospects_target_1_2", "systematic", "email", "defer"),
        ]
    );
    assert_eq!(lines[0]["reasons"][0]["fatigue"].as_f64(), Some(12.0));
    let seminar = &lines[1];
    assert_eq!(seminar["reasons"][0]["rule"], "budget", "{seminar}");
    assert_eq!(seminar["reasons"][0]["day"], "2026-11-20");
    assert_eq!(seminar["until"], "2026-11-21T07:00:00Z");
    let newsletter = &lines[2];
    let rules: Vec<&str> = newsletter["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"budget") && rules.contains(&"cap"),
        "{newsletter}"
    );
    assert_eq!(newsletter["until"], "2026-11-25T10:00:00Z");
    // A dry run writes nothing.
    assert_eq!(outbox(&env).len(), 0);
}

#[test]
fn a_plan_pass_writes_the_arbitration_and_dispatch_sends_what_passed() {
    let (received, port, _rt) = receiver();
    let env = Env::new();
    shipped_to_loopback(&env, port);
    seminar_day(&env);
    // The shipped schedules have not ticked for this store yet: the first
    // start runs each once (the weekly plan included), then their ticks.
    once(&env, "2026-11-20T10:00:00Z");
    env.write(
        "relance.toml",
        &(std::fs::read_to_string(env.path("relance.toml")).unwrap()
            + "\n[schedules.react]\njob = \"plan\"\ncron = \"*/5 * * * *\"\n"),
    );
    once(&env, "2026-11-20T10:00:00Z");
    once(&env, "2026-11-20T10:05:00Z");
    let rows = outbox(&env);
    let states: BTreeMap<&str, (&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["followup"].as_str().unwrap(),
                (r["state"].as_str().unwrap(), r["due_at"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(states["pricing_visit_call"].0, "sent");
    assert_eq!(states["seminar"], ("deferred", "2026-11-21T07:00:00Z"));
    assert_eq!(
        states["prospects_target_1_2"],
        ("deferred", "2026-11-25T10:00:00Z")
    );
    let got = received.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the call today: {got:?}");
    // Planning again changes nothing: rows are keyed.
    once(&env, "2026-11-20T10:10:00Z");
    assert_eq!(outbox(&env).len(), 3);
    assert_eq!(received.0.lock().unwrap().len(), 1);
    // A second before Saturday's email window: nothing more.
    once(&env, "2026-11-21T06:59:59Z");
    assert_eq!(received.0.lock().unwrap().len(), 1);
    // The invitation goes when the window opens, the newsletter on the 25th.
    once(&env, "2026-11-21T07:00:00Z");
    assert_eq!(received.0.lock().unwrap().len(), 2);
    once(&env, "2026-11-25T09:59:59Z");
    assert_eq!(received.0.lock().unwrap().len(), 2);
    once(&env, "2026-11-25T10:00:00Z");
    let sent: BTreeMap<String, String> = outbox(&env)
        .iter()
        .map(|r| {
            (
                r["followup"].as_str().unwrap().to_string(),
                format!(
                    "{} {}",
                    r["state"].as_str().unwrap(),
                    r["due_at"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        sent.values().filter(|v| v.starts_with("sent")).count(),
        3,
        "{sent:?}"
    );
    assert_eq!(received.0.lock().unwrap().len(), 3);
}

#[test]
fn a_booked_meeting_takes_the_prospect_out_of_nurture_and_stopped_ones_get_no_calls() {
    let env = Env::new();
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,status,tier,timezone\nwon,w@example.com,prospect,target_1,Europe/Paris\nstopped,s@example.com,prospect,target_1,Europe/Paris\nopen,o@example.com,prospect,target_1,Europe/Paris\n",
    );
    let mut events = String::new();
    events.push_str(
        r#"{"contact":"won","type":"call","at":"2026-11-10T10:00:00Z","props":{"outcome":"RDV"}}"#,
    );
    events.push('\n');
    for day in 1..=5 {
        events.push_str(&format!(
            r#"{{"contact":"stopped","type":"call","at":"2026-10-{day:02}T10:00:00Z","props":{{"outcome":"NRP"}}}}"#
        ));
        events.push('\n');
    }
    for who in ["won", "stopped", "open"] {
        events.push_str(&format!(
            r#"{{"contact":"{who}","type":"page_visit","at":"2026-11-20T09:00:00Z","props":{{"url":"https://x.example/pricing"}}}}"#
        ));
        events.push('\n');
    }
    env.import_text("events", "e.jsonl", &events);
    assert!(
        env.run_at("2026-11-20T10:00:00Z", &["rescore"])
            .status
            .success()
    );
    let plan = env.json_at("2026-11-20T10:00:00Z", &["plan", "--json"]);
    let of = |who: &str| -> BTreeSet<String> {
        plan.as_array()
            .unwrap()
            .iter()
            .filter(|l| l["contact"] == who)
            .map(|l| l["followup"].as_str().unwrap().to_string())
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        of("open"),
        set(&["pricing_visit_call", "prospects_target_1_2"])
    );
    assert_eq!(
        of("won"),
        set(&["pricing_visit_call"]),
        "GAGNÉ: out of nurture, still called"
    );
    assert_eq!(
        of("stopped"),
        set(&["prospects_target_1_2"]),
        "ARRÊTÉ: no more calls"
    );
}

#[test]
fn the_running_daemon_serves_the_api_and_turns_a_pricing_visit_into_a_delivery_at_once() {
    let (received, port, rt) = receiver();
    let api_port = free_port();
    let env = daemon_env(
        port,
        &format!(
            r#"
[api]
enabled = true
listen = "127.0.0.1:{api_port}"
tokens = ["{TOKEN}"]
tracking_secret = "tracking-secret-0123456789"
public_url = "http://127.0.0.1:{api_port}"

[[followups.triggers]]
name = "pricing_visit"
event = "page_visit"
when = {{ field = "event.props.url", contains = "/pricing" }}
cooldown = "7d"
action = {{ channel = "hook", template = "news" }}
"#
        ),
    );
    let mut child = spawn_daemon(&env, "run.log");
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    let call = |req: reqwest::RequestBuilder| rt.block_on(async { req.send().await });
    wait_until("the API never came up", 20, || {
        call(client.get(format!("{base}/readyz"))).is_ok()
    });
    // Unauthenticated: 401, nothing written.
    let r = call(
        client
            .post(format!("{base}/v1/contacts"))
            .header("content-type", "application/json")
            .body(r#"[{"id": "x"}]"#),
    )
    .unwrap();
    assert_eq!(r.status(), 401);

    let post = |path: &str, body: Value| {
        let r = call(
            client
                .post(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .unwrap();
        let status = r.status().as_u16();
        let text = rt.block_on(r.text()).unwrap();
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
        )
    };
    let (status, body) = post(
        "/v1/contacts",
        serde_json::json!([{"id": "p", "email": "p@example.com", "first_name": "P", "status": "prospect"},
                           {"id": "q", "email": "q@example.com", "first_name": "Q", "status": "prospect"}]),
    );
    assert_eq!(status, 200, "{body}");
    let now = relance::core::clock::Clock::system().now();
    let (status, body) = post(
        "/v1/events",
        serde_json::json!([{"id": "v1", "contact": "p", "type": "page_visit", "at": now - chrono::Duration::seconds(5),
                            "props": {"url": "https://x.example/pricing"}}]),
    );
    assert_eq!(status, 200, "{body}");
    // No schedule here: the event alone wakes rescoring and planning.
    wait_until("the pricing visit was not followed up", 20, || {
        !(received.0.lock().unwrap().iter().all(|(_, c)| c != "p"))
    });

    // A broadcast through the API reaches both contacts; a bad one names its field.
    let (status, body) = post(
        "/v1/broadcasts",
        serde_json::json!({"id": "b", "name": "launch", "segment": {"field": "status", "eq": "prospect"},
                           "channel": "nope", "template": "news", "end": "2100-01-01T00:00:00Z"}),
    );
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("channel")),
        "{body}"
    );
    let (status, body) = post(
        "/v1/broadcasts",
        serde_json::json!({"id": "b", "name": "launch", "segment": {"field": "status", "eq": "prospect"},
                           "channel": "hook", "template": "news", "end": "2100-01-01T00:00:00Z"}),
    );
    assert_eq!(
        (status, &body["created"]),
        (201, &Value::Bool(true)),
        "{body}"
    );
    wait_until("the broadcast did not go out", 20, || {
        received.0.lock().unwrap().len() >= 3
    });
    // The plan of one contact: both follow-ups are in the outbox already.
    let r = call(
        client
            .get(format!("{base}/v1/plan?contact=q"))
            .bearer_auth(TOKEN),
    )
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = call(client.get(format!("{base}/v1/plan")).bearer_auth(TOKEN)).unwrap();
    assert_eq!(r.status(), 400);
    // Metrics count the deliveries.
    let r = call(client.get(format!("{base}/metrics")).bearer_auth(TOKEN)).unwrap();
    let text = rt.block_on(r.text()).unwrap();
    assert!(
        text.lines().any(|l| l.contains("channel=\"hook\"")
            && l.contains("outcome=\"sent\"")
            && l.ends_with(" 3")),
        "{text}"
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let _ = &mut child;
}

/// The first `PREFIX<token>` in a MIME text (quoted-printable undone).
fn token_after(eml: &str, prefix: &str) -> Option<String> {
    let text = eml
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = text.find(prefix)? + prefix.len();
    Some(
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
            .collect(),
    )
}

#[test]
fn emails_sent_by_the_daemon_carry_signed_links_that_record_opens_clicks_and_unsubscribes() {
    let (_received, port, rt) = receiver();
    let api_port = free_port();
    let env = daemon_env(port, "");
    let mail = env.path("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let base = format!("http://127.0.0.1:{api_port}");
    env.write(
        "relance.toml",
        &(std::fs::read_to_string(env.path("relance.toml")).unwrap()
            + &format!(
                r#"
[channels.mail]
plugin = "email"
event = "email_sent"
settings = {{ transport = "file", dir = "{}", from = "relance@example.com" }}

[templates.hello]
channel = "mail"
subject = "Hello {{{{first_name}}}}"
html = "<p>See <a href=\"https://payroll.example/offer\">our offer</a></p>"

[api]
enabled = true
listen = "127.0.0.1:{api_port}"
tokens = ["{TOKEN}"]
tracking_secret = "tracking-secret-0123456789"
public_url = "{base}"

[[followups.triggers]]
name = "pricing_visit"
event = "page_visit"
cooldown = "7d"
action = {{ channel = "mail", template = "hello" }}
"#,
                mail.display()
            )),
    );
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,first_name\np,p@example.com,P\n",
    );
    let mut child = spawn_daemon(&env, "run.log");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let call = |req: reqwest::RequestBuilder| rt.block_on(async { req.send().await });
    wait_until("the API never came up", 20, || {
        call(client.get(format!("{base}/readyz"))).is_ok()
    });
    let now = relance::core::clock::Clock::system().now();
    let event = serde_json::json!([{"contact": "p", "type": "page_visit", "at": now - chrono::Duration::seconds(5)}]);
    let r = call(
        client
            .post(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(event.to_string()),
    )
    .unwrap();
    assert_eq!(r.status(), 200);
    let started = Instant::now();
    let eml = loop {
        let found = std::fs::read_dir(&mail)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"));
        if let Some(f) = found {
            break std::fs::read_to_string(f.path()).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no email written; log: {}",
            std::fs::read_to_string(env.path("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let open = token_after(&eml, "/t/o/").expect("an open pixel");
    let click = token_after(&eml, "/t/c/").expect("a signed click link");
    let unsubscribe = token_after(&eml, "/u/").expect("a one-click unsubscribe URL");
    // The file transport gets the same headers as SMTP: RFC 8058 one-click.
    let unfolded = eml.replace("\r\n ", " ");
    let header = |name: &str| {
        unfolded
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_string))
    };
    assert_eq!(
        header("List-Unsubscribe:"),
        Some(format!("<{base}/u/{unsubscribe}>")),
        "{eml}"
    );
    assert_eq!(
        header("List-Unsubscribe-Post:").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        !eml.contains("href=\"https://payroll.example/offer\""),
        "the link was not rewritten"
    );

    assert_eq!(
        call(client.get(format!("{base}/t/o/{open}")))
            .unwrap()
            .status(),
        200
    );
    let r = call(client.get(format!("{base}/t/c/{click}"))).unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "https://payroll.example/offer");
    // An altered token records nothing.
    let mut forged = click.clone();
    forged.pop();
    forged.push(if click.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        call(client.get(format!("{base}/t/c/{forged}")))
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        call(client.post(format!("{base}/u/{unsubscribe}")))
            .unwrap()
            .status(),
        200
    );

    let shown = env.json(&["contacts", "show", "p", "--json"]);
    let types: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in ["email_sent", "email_open", "email_click", "unsubscribe"] {
        assert_eq!(
            types.iter().filter(|x| **x == t).count(),
            1,
            "{t} in {types:?}"
        );
    }
    // Unsubscribed: the guard blocks the next email on that channel.
    let guard = env.json(&["guard", "p", "--channel", "mail", "--json"]);
    assert_eq!(guard["decision"], "block", "{guard}");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let _ = &mut child;
}

#[test]
fn sigterm_releases_a_send_still_in_flight_after_the_grace_and_the_next_start_sends_it_again() {
    let (received, port, _rt) = receiver();
    received.1.store(30_000, Ordering::Relaxed); // a receiver that hangs
    let env = daemon_env(
        port,
        "[schedules.plan]\njob = \"plan\"\ncron = \"* * * * * *\"\n",
    );
    let text = std::fs::read_to_string(env.path("relance.toml"))
        .unwrap()
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"1s\"")
        .replace("lease = \"2s\"", "lease = \"10m\"");
    env.write("relance.toml", &text);
    env.import_text("contacts", "c.csv", &contacts_csv(1));
    broadcast_to_prospects(&env, "launch");
    let mut child = spawn_daemon(&env, "run.log");
    wait_until("the send never left", 20, || {
        !received.0.lock().unwrap().is_empty()
    });
    let stopping = Instant::now();
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(4), "stopped after {took:?}");
    let rows = outbox(&env);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "retrying", "{}", rows[0]);
    assert_eq!(rows[0]["last_error"], "released at shutdown");

    // Not held for the ten-minute lease: the next start sends it at once,
    // under the same key.
    received.1.store(0, Ordering::Relaxed);
    let mut child = spawn_daemon(&env, "run-2.log");
    wait_until("the released send was not sent again", 20, || {
        outbox(&env)[0]["state"] == "sent"
    });
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let _ = &mut child;
    let got = received.0.lock().unwrap().clone();
    assert!(
        got.len() >= 2 && got.iter().all(|(k, _)| *k == got[0].0),
        "{got:?}"
    );
}

const EVERY_SECOND_PLAN: &str = "[schedules.plan]\njob = \"plan\"\ncron = \"* * * * * *\"\n";

#[test]
fn a_refused_sighup_changes_no_channel_not_even_one_that_opened() {
    let (received, port, _rt) = receiver();
    let (elsewhere, other, _rt2) = receiver();
    // Two channels; a reload opens them in name order: `hook`, then `zz`.
    let env = daemon_env(
        port,
        &format!(
            "{EVERY_SECOND_PLAN}\n[channels.zz]\nplugin = \"webhook\"\nevent = \"webhook_sent\"\nsettings = {{ url = \"http://127.0.0.1:{port}/zz\", secret = \"{SECRET}\", allow_networks = [\"127.0.0.0/8\"] }}\n"
        ),
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(3));
    let child = start_daemon(&env, "run.log");
    let good = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    // `hook` moves to another receiver (its plugin accepts that), `zz`
    // gets a secret its plugin refuses: the reload is refused as a whole.
    rewrite(
        &env,
        "relance.toml",
        &good,
        &[
            (
                &format!("127.0.0.1:{port}/hook"),
                &format!("127.0.0.1:{other}/hook"),
            ),
            (
                &format!("/zz\", secret = \"{SECRET}\""),
                "/zz\", secret = \"not-a-secret\"",
            ),
        ],
    );
    signal(&child, "HUP");
    let log = wait_for_log(&env, "run.log", "configuration reload refused", 30);
    assert!(log.contains("channel=zz"), "{log}");
    // The file is put back for the command below, without a new SIGHUP.
    std::fs::write(env.path("relance.toml"), &good).unwrap();
    broadcast_to_prospects(&env, "b1");
    wait_until("no delivery to the running channel's URL", 30, || {
        received.0.lock().unwrap().len() >= 3
    });
    assert!(
        elsewhere.0.lock().unwrap().is_empty(),
        "a refused reload moved `hook` to the refused file's URL"
    );
    stop_daemon(child);
}

#[test]
fn a_sighup_changing_the_store_or_the_api_address_is_refused_as_a_whole_and_names_the_keys() {
    let (received, port, rt) = receiver();
    let (elsewhere, other, _rt2) = receiver();
    let (api_port, new_api_port) = (free_port(), free_port());
    let env = daemon_env(
        port,
        &format!(
            r#"{EVERY_SECOND_PLAN}
[api]
enabled = true
listen = "127.0.0.1:{api_port}"
tokens = ["{TOKEN}"]
tracking_secret = "tracking-secret-0123456789"
public_url = "http://127.0.0.1:{api_port}"
"#
        ),
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(3));
    let child = start_daemon(&env, "run.log");
    let good = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    let moved = env.path("moved.db");
    rewrite(
        &env,
        "relance.toml",
        &good,
        &[
            (
                "path = \"${RELANCE_DB}\"",
                &format!("path = \"{}\"", moved.display()),
            ),
            (
                &format!("listen = \"127.0.0.1:{api_port}\""),
                &format!("listen = \"127.0.0.1:{new_api_port}\""),
            ),
            (
                &format!("127.0.0.1:{port}/hook"),
                &format!("127.0.0.1:{other}/hook"),
            ),
        ],
    );
    signal(&child, "HUP");
    let log = wait_for_log(&env, "run.log", "configuration reload refused", 30);
    let line = log
        .lines()
        .find(|l| l.contains("configuration reload refused"))
        .unwrap();
    assert!(
        line.contains("store.path") && line.contains("api.listen") && line.contains("restart"),
        "{line}"
    );
    std::fs::write(env.path("relance.toml"), &good).unwrap();
    // Everything stays as it was: planning on the same store as the API,
    // the channel on its URL, the API on its address.
    broadcast_to_prospects(&env, "b1");
    wait_until(
        "the broadcast was not planned on the running store",
        30,
        || received.0.lock().unwrap().len() >= 3,
    );
    assert!(elsewhere.0.lock().unwrap().is_empty());
    assert!(!moved.exists(), "a store was opened at the refused path");
    let health =
        rt.block_on(async { reqwest::get(format!("http://127.0.0.1:{api_port}/healthz")).await });
    assert_eq!(health.unwrap().status(), 200);
    stop_daemon(child);
}

#[test]
fn a_broadcast_accepted_but_not_planned_before_a_crash_goes_out_at_the_next_start() {
    let (received, port, _rt) = receiver();
    // Planning only on Tuesdays at 09:30 in Paris: nothing else plans.
    let env = daemon_env(
        port,
        "[schedules.nurture]\njob = \"plan\"\ncron = \"30 9 * * TUE\"\ntimezone = \"Europe/Paris\"\n",
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(3));
    // An earlier start ran the schedule (its tick is stored).
    let out = env.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The write `POST /v1/broadcasts` makes before answering 201, with no
    // planning pass after it: what a crash right after the 201 leaves.
    broadcast_to_prospects(&env, "b1");
    let child = spawn_daemon(&env, "run.log");
    wait_until(
        "the accepted broadcast waited for the next schedule",
        30,
        || received.0.lock().unwrap().len() >= 3,
    );
    let log = log_text(&env, "run.log");
    assert!(
        log.contains("planning left undone at the last stop"),
        "{log}"
    );
    stop_daemon(child);
    // Done: the next start has nothing to resume.
    stop_daemon(start_daemon(&env, "run-2.log"));
    assert!(!log_text(&env, "run-2.log").contains("planning left undone"));
    assert_eq!(received.0.lock().unwrap().len(), 3);
}

#[test]
fn kill_9_during_a_scheduled_job_holds_its_schedule_for_less_than_a_minute() {
    let (_received, port, _rt) = receiver();
    // A plan every two seconds over enough contacts that a pass takes a
    // while; the schedule lease is the default.
    let env = daemon_env(
        port,
        "[schedules.plan]\njob = \"plan\"\ncron = \"*/2 * * * * *\"\n",
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(5000));
    broadcast_to_prospects(&env, "b1");
    let mut child = spawn_daemon(&env, "run.log");
    let owner = owner_of(&child);
    wait_until("the scheduled job never started", 60, || {
        let (started, finished) = job_runs_of(&env, "plan", &owner);
        started > finished
    });
    child.kill().unwrap(); // SIGKILL while the job holds its lease
    child.wait().unwrap();
    let killed = owner;

    let restarted = Instant::now();
    let child = spawn_daemon(&env, "run-2.log");
    let owner = owner_of(&child);
    wait_until(
        "the schedule stayed blocked by the killed process's lease",
        120,
        || job_runs_of(&env, "plan", &owner).0 > 0,
    );
    let took = restarted.elapsed();
    eprintln!("the schedule ran again {took:?} after the restart");
    assert!(took < Duration::from_secs(60), "blocked for {took:?}");
    // The killed run is closed as interrupted, not left running forever.
    let (started, finished) = job_runs_of(&env, "plan", &killed);
    assert_eq!(
        started, finished,
        "a run of the killed process is still open"
    );
    stop_daemon(child);
}

#[test]
fn the_first_start_runs_every_schedule_at_once_and_the_log_says_when_each_runs_next() {
    let env = daemon_env(
        9,
        r#"
[schedules.nurture]
job = "plan"
cron = "30 9 * * TUE"
timezone = "Europe/Paris"

[schedules.rescore]
job = "rescore"
cron = "*/15 * * * *"
"#,
    );
    let child = spawn_daemon(&env, "run.log");
    let owner = owner_of(&child);
    wait_until("the first start did not run every schedule", 30, || {
        job_runs_of(&env, "nurture", &owner).1 == 1 && job_runs_of(&env, "rescore", &owner).1 == 1
    });
    // The process runs on 4 KiB pages (src/process.rs).
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    assert!(status.contains("THP_enabled:\t0"), "{status}");
    let next = |schedule: &str| {
        log_text(&env, "run.log")
            .lines()
            .rfind(|l| l.contains("next run") && l.contains(&format!("schedule={schedule} ")))
            .map(str::to_string)
    };
    wait_until("no next run logged for every schedule", 30, || {
        next("nurture").is_some() && next("rescore").is_some()
    });
    let next = |schedule: &str| next(schedule).unwrap();
    let nurture = next("nurture");
    assert!(nurture.contains("job=plan"), "{nurture}");
    // 09:30 local, whatever the season.
    assert!(nurture.contains("T09:30:00+0"), "{nurture}");
    assert!(nurture.contains("timezone=Europe/Paris"), "{nurture}");
    let rescore = next("rescore");
    assert!(
        rescore.contains("job=rescore") && rescore.contains("timezone=UTC"),
        "{rescore}"
    );
    stop_daemon(child);
    // The next start does not run them again: their ticks are stored.
    let child = spawn_daemon(&env, "run-2.log");
    let owner = owner_of(&child);
    wait_for_log(&env, "run-2.log", "next run", 30);
    stop_daemon(child);
    assert_eq!(job_runs_of(&env, "nurture", &owner).0, 0);
}
