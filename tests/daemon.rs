//! The daemon end to end: the real binary, a real SQLite file and a real
//! HTTP receiver on loopback. Killed with SIGKILL while it dispatches, it
//! loses nothing and never sends a follow-up under two keys; schedules keep
//! local time across DST and apply their misfire policy after downtime.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    BIN, Env, SECRET, once, outbox, receiver, shipped_to_loopback, spawn_daemon, stderr, wait_until,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A configuration with one webhook channel to `port`, no fatigue costs,
/// and `extra` appended.
fn daemon_env(port: u16, extra: &str) -> Env {
    let env = Env::new();
    env.write(
        "relance.toml",
        &format!(
            r#"[store]
path = "${{RELANCE_DB}}"

[log]
level = "info"

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
consent = "opt_out"
settings = {{ url = "http://127.0.0.1:{port}/hook", secret = "{SECRET}", timeout_secs = 5, allow_networks = ["127.0.0.0/8"] }}

[templates.news]
channel = "hook"
text = "news for {{{{first_name}}}}"

[outbox]
lease = "2s"
backoff_base = "1s"
backoff_max = "2s"
batch = 200
shutdown_grace = "5s"
{extra}"#
        ),
    );
    env
}

/// A broadcast of the `news` template on `hook` to every prospect.
fn broadcast_to_prospects(env: &Env, id: &str) {
    let out = env.run(&[
        "broadcast",
        "create",
        "--id",
        id,
        "--name",
        id,
        "--segment",
        r#"{ field = "status", eq = "prospect" }"#,
        "--channel",
        "hook",
        "--template",
        "news",
        "--end",
        "2100-01-01T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn contacts_csv(n: usize) -> String {
    let mut csv = String::from("id,email,first_name,status\n");
    for i in 0..n {
        csv.push_str(&format!("c{i:05},c{i}@example.com,C{i},prospect\n"));
    }
    csv
}

/// Sends `signal` (TERM, HUP …) with the `kill` command: the workspace
/// denies `unsafe`, so no libc call here.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Small deterministic generator for kill moments.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

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
    // the key) but bounded by what was in flight at each kill.
    let resent = got.len() - CONTACTS;
    eprintln!(
        "{kills} kills, {sent_before_last} deliveries before the last start, {resent} re-sent"
    );
    assert!(resent <= kills * 80, "{resent} re-sends for {kills} kills");
}

#[test]
fn sighup_with_an_invalid_file_keeps_the_running_configuration() {
    let (received, port, _rt) = receiver();
    let env = daemon_env(
        port,
        "[schedules.plan]\njob = \"plan\"\ncron = \"* * * * * *\"\n",
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(3));
    let mut child = spawn_daemon(&env, "run.log");
    std::thread::sleep(Duration::from_millis(1500));
    let good = std::fs::read_to_string(env.path("relance.toml")).unwrap();
    std::fs::write(
        env.path("relance.toml"),
        format!("{good}\n[outbox]\nlease = 5\n"),
    )
    .unwrap();
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(800));
    // The file is put back for the command below, without a new SIGHUP: the
    // daemon still runs on the old configuration, and a broadcast created
    // now goes out.
    std::fs::write(env.path("relance.toml"), &good).unwrap();
    broadcast_to_prospects(&env, "b1");
    let started = Instant::now();
    while received.0.lock().unwrap().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no delivery after the refused reload"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.try_wait().unwrap().is_none(), "the daemon stopped");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(env.path("run.log")).unwrap();
    assert!(log.contains("configuration reload refused"), "{log}");
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
    assert!(
        ticks(&env, "nurture").is_empty(),
        "a new schedule does not replay history"
    );
    once(&env, "2026-03-31T12:00:00Z");
    assert_eq!(
        ticks(&env, "nurture"),
        [
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
    once(&env, "2026-05-04T08:00:10Z");
    // Down from 08:00 to 13:30: five hourly ticks missed, none on time.
    once(&env, "2026-05-04T13:30:00Z");
    assert_eq!(ticks(&env, "skip"), Vec::<String>::new());
    assert_eq!(ticks(&env, "once"), ["2026-05-04T13:00:00Z"]);
    assert_eq!(
        ticks(&env, "catchup"),
        ["2026-05-04T12:00:00Z", "2026-05-04T13:00:00Z"]
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
    let runs = ticks(&env, "rescore");
    let distinct: BTreeSet<&String> = runs.iter().collect();
    assert_eq!(runs.len(), 12, "{runs:?}");
    assert_eq!(distinct.len(), 12, "a tick ran twice: {runs:?}");
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
    // pass only records them. The plan job then runs at its next tick.
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

/// A free port on loopback (bound, then released for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const TOKEN: &str = "test-token-0123456789abcdef";

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
    let now = relance::clock::Clock::system().now();
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
    let now = relance::clock::Clock::system().now();
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
