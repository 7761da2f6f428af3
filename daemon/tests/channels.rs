//! Channels end to end, with the real `relance` binary and a real SQLite
//! file: the shipped configuration starts although its channels have no
//! settings, says which ones wait and why, and their follow-ups wait in the
//! outbox; the built-in task channel keeps call tasks whose outcome is
//! recorded once (moving the call status and charging the call's fatigue
//! once); the spool channel writes one signed line per send; broad SSRF
//! allow lists are warned about.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Env, code, free_port, stderr, stdout};
use relance::adapters::plugins::PluginHost;
use relance::core::config::ChannelConfig;
use relance::core::config::PluginsConfig;
use relance::ports::channels::Delivery;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789abcdef";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A daemon this test started; stopped (by its PID) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn spawn_daemon(env: &Env) -> Daemon {
    Daemon(
        Command::new(BIN)
            .arg("--config")
            .arg(env.path("relance.toml"))
            .arg("run")
            .env("RELANCE_DB", env.path("store.db"))
            .env("RELANCE_API_TOKEN", TOKEN)
            .env("RELANCE_TRACKING_SECRET", "tracking-secret-0123456789")
            .env_remove("RELANCE_CONFIG")
            .env_remove("RELANCE_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(env.path("run.log")).unwrap())
            .spawn()
            .expect("start relance run"),
    )
}

/// The binary with the API's secrets in its environment.
fn cli(env: &Env, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(env.path("relance.toml"))
        .args(args)
        .env("RELANCE_DB", env.path("store.db"))
        .env("RELANCE_API_TOKEN", TOKEN)
        .env("RELANCE_TRACKING_SECRET", "tracking-secret-0123456789")
        .env_remove("RELANCE_CONFIG")
        .env_remove("RELANCE_LOG")
        .output()
        .expect("run relance")
}

/// Polls `done` every 100 ms; fails with `what` and the log after `secs`.
fn wait_until(env: &Env, what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what}; log:\n{}",
            std::fs::read_to_string(env.path("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A blocking HTTP client on the daemon's API.
struct Api {
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn up(&self) -> bool {
        let url = format!("{}/readyz", self.base);
        self.rt
            .block_on(async { self.http.get(url).send().await })
            .is_ok()
    }

    fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        self.rt.block_on(async {
            let r = req.bearer_auth(TOKEN).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    relance::core::clock::Clock::system().now()
}

#[test]
fn the_shipped_configuration_starts_says_which_channels_wait_and_their_follow_ups_wait() {
    let env = Env::new();
    let port = free_port();
    // The shipped file with the API on (its tokens come from the
    // environment); the store path comes from RELANCE_DB.
    let text = std::fs::read_to_string(env.path("relance.toml"))
        .unwrap()
        .replace("enabled = false", "enabled = true")
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    env.write("relance.toml", &text);

    // `relance check` lists them, with the keys to set and who waits.
    let out = cli(&env, &["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for (channel, key) in [
        ("email", "`from`"),
        ("phone", "`token`"),
        ("sms", "`secret`"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("channel `{channel}`")) && l.contains("not configured"))
            .unwrap_or_else(|| panic!("{channel} in {text}"));
        assert!(line.contains(key), "{line}");
        assert!(
            line.contains(&format!("[channels.{channel}.settings]")),
            "{line}"
        );
        assert!(line.contains("docs/plugins.md#"), "{line}");
    }
    assert!(
        text.contains("follow-ups that wait for it: nurture prospects_target_1_2 step 2, trigger email_click_call"),
        "{text}"
    );
    let summary: Value = serde_json::from_slice(&cli(&env, &["check", "--json"]).stdout).unwrap();
    let waiting: Vec<&str> = summary["channels_not_configured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, ["email", "phone", "sms"]);

    let _daemon = spawn_daemon(&env);
    let api = Api::new(port);
    wait_until(&env, "the API never came up", 30, || api.up());
    let (status, ready) = api.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    let listed: Vec<(&str, &str)> = ready["channels_not_configured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        ["email", "phone", "sms"]
    );
    assert!(listed[0].1.contains("missing field `from`"), "{listed:?}");
    let phone = &ready["channels_not_configured"][1];
    assert_eq!(phone["plugin"], "crm");
    assert!(
        phone["help"]
            .as_str()
            .unwrap()
            .contains("`url` and `token`"),
        "{phone}"
    );
    assert!(
        phone["followups"]
            .as_array()
            .unwrap()
            .contains(&json!("trigger pricing_visit_call")),
        "{phone}"
    );

    // A pricing visit asks for a call on `phone`: the follow-up waits in
    // the outbox with its reason instead of failing.
    let (s, body) = api.post(
        "/v1/contacts",
        &json!([{"id": "p", "email": "p@example.com", "status": "prospect"}]),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = api.post(
        "/v1/events",
        &json!([{"contact": "p", "type": "page_visit", "at": now() - chrono::Duration::seconds(5),
                 "props": {"url": "https://x.example/pricing"}}]),
    );
    assert_eq!(s, 200, "{body}");
    let phone_row = || -> Option<Value> {
        let (_, rows) = api.get("/v1/outbox");
        rows.as_array()?
            .iter()
            .find(|r| r["channel"] == "phone" && r["followup"] == "pricing_visit_call")
            .cloned()
    };
    wait_until(
        &env,
        "the call follow-up was not noted as waiting",
        30,
        || {
            phone_row().is_some_and(|r| {
                r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not configured"))
            })
        },
    );
    let row = phone_row().unwrap();
    assert!(
        ["planned", "deferred"].contains(&row["state"].as_str().unwrap()),
        "{row}"
    );
    assert_eq!(row["attempts"], 0, "waiting is not an attempt: {row}");
    let listed = stdout(&cli(&env, &["outbox"]));
    assert!(
        listed.contains("pricing_visit_call") && listed.contains("not configured"),
        "{listed}"
    );
}

/// A configuration with the task channel on `phone`, a spool channel, and
/// the API on `port`.
fn task_env(port: u16) -> Env {
    let env = Env::new();
    env.write(
        "relance.toml",
        &format!(
            r#"[store]
path = "${{RELANCE_DB}}"

[fatigue.costs]
call = 5.0

[channels.phone]
plugin = "task"
event = "call_task"

[templates.call_task]
channel = "phone"
text = "Call {{{{first_name}}}} about {{{{followup}}}}"

[followups.calls]
event = "call"
stop_after = 5
won = ["RDV"]
lost = ["REFUS", "HORS CIBLE"]
unsuccessful = ["NRP", "OCC", "REFUS COMM", "ERR"]
channels = ["phone"]

[[followups.triggers]]
name = "pricing_call"
event = "page_visit"
cooldown = "7d"
action = {{ channel = "phone", template = "call_task" }}

[[followups.triggers]]
name = "form_call"
event = "form_submit"
cooldown = "7d"
action = {{ channel = "phone", template = "call_task" }}

[api]
enabled = true
listen = "127.0.0.1:{port}"
tokens = ["${{RELANCE_API_TOKEN}}"]
tracking_secret = "${{RELANCE_TRACKING_SECRET}}"
"#
        ),
    );
    env
}

fn json_of(env: &Env, args: &[&str]) -> Value {
    let out = cli(env, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn calls(env: &Env, contact: &str) -> Vec<Value> {
    json_of(env, &["contacts", "show", contact, "--json"])["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "call")
        .cloned()
        .collect()
}

fn charges(env: &Env, contact: &str) -> usize {
    json_of(env, &["fatigue", contact, "--json"])["charges"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_call_task_outcome_is_recorded_once_and_moves_the_call_status_and_fatigue_once() {
    let port = free_port();
    let env = task_env(port);
    let _daemon = spawn_daemon(&env);
    let api = Api::new(port);
    wait_until(&env, "the API never came up", 30, || api.up());
    let (s, body) = api.post(
        "/v1/contacts",
        &json!([{"id": "won", "first_name": "Wanda", "phone": "+33 1 23 45 67 89", "status": "prospect"},
                {"id": "lost", "first_name": "Luc", "status": "prospect"}]),
    );
    assert_eq!(s, 200, "{body}");
    let visit = |who: &str, kind: &str| {
        json!({"contact": who, "type": kind, "at": now() - chrono::Duration::seconds(5),
               "props": {"url": "https://x.example/pricing"}})
    };
    let (s, body) = api.post(
        "/v1/events",
        &json!([visit("won", "page_visit"), visit("lost", "page_visit")]),
    );
    assert_eq!(s, 200, "{body}");
    let tasks = || {
        api.get("/v1/tasks")
            .1
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_until(&env, "the call tasks were not delivered", 30, || {
        tasks().len() == 2
    });
    let listed = tasks();
    let task_of = |who: &str| listed.iter().find(|t| t["contact"] == who).unwrap().clone();
    let won = task_of("won");
    assert_eq!(won["name"], "Wanda");
    assert_eq!(won["phone"], "+33 1 23 45 67 89");
    assert_eq!(won["text"], "Call Wanda about pricing_call");
    assert!(won["outcome"].is_null());
    let id = won["id"].as_str().unwrap().to_string();
    // A delivered task is not a call: no `call` event, no fatigue.
    assert!(calls(&env, "won").is_empty());
    assert_eq!(charges(&env, "won"), 0);
    let listed_cli = json_of(&env, &["tasks", "list", "--json"]);
    assert_eq!(listed_cli.as_array().unwrap().len(), 2, "{listed_cli}");

    // Bad input changes nothing and says why.
    let (s, body) = api.post(
        &format!("/v1/tasks/{id}/outcome"),
        &json!({"code": "MAYBE"}),
    );
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (400, Some("code")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HORS CIBLE")
    );
    let (s, _) = api.post("/v1/tasks/rl_nope/outcome", &json!({"code": "RDV"}));
    assert_eq!(s, 404);
    let (s, _) = api.post(&format!("/v1/tasks/{id}/outcome"), &json!({"cod": "RDV"}));
    assert_eq!(s, 400);
    assert!(calls(&env, "won").is_empty());

    // The outcome: one `call` event, the call's fatigue, once.
    let (s, body) = api.post(
        &format!("/v1/tasks/{id}/outcome"),
        &json!({"code": "rdv", "note": "Tuesday 10:00"}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["outcome"]["code"], "RDV");
    let recorded = calls(&env, "won");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["props"]["outcome"], "RDV");
    assert_eq!(recorded[0]["channel"], "phone");
    assert_eq!(charges(&env, "won"), 1);
    let (s, body) = api.post(&format!("/v1/tasks/{id}/outcome"), &json!({"code": "NRP"}));
    assert_eq!(s, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("RDV"),
        "{body}"
    );
    let out = cli(&env, &["tasks", "outcome", &id, "NRP"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("already has its outcome `RDV`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(calls(&env, "won").len(), 1);
    assert_eq!(charges(&env, "won"), 1);

    // Two outcomes at once for the other task: exactly one wins.
    let lost_id = task_of("lost")["id"].as_str().unwrap().to_string();
    let (a, b) = api.rt.block_on(async {
        let post = |code: &'static str| {
            api.http
                .post(format!("{}/v1/tasks/{lost_id}/outcome", api.base))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(json!({"code": code}).to_string())
                .send()
        };
        let (a, b) = tokio::join!(post("REFUS"), post("REFUS"));
        (a.unwrap().status().as_u16(), b.unwrap().status().as_u16())
    });
    let mut codes = [a, b];
    codes.sort();
    assert_eq!(codes, [200, 409]);
    assert_eq!(calls(&env, "lost").len(), 1);
    assert_eq!(charges(&env, "lost"), 1);
    assert!(
        api.get("/v1/tasks").1.as_array().unwrap().is_empty(),
        "no open task left"
    );
    assert_eq!(
        api.get("/v1/tasks?status=all").1.as_array().unwrap().len(),
        2
    );

    // The call status moved: a new signal gets the won prospect a call
    // task, the lost one (REFUS) none.
    let (s, body) = api.post(
        "/v1/events",
        &json!([visit("won", "form_submit"), visit("lost", "form_submit")]),
    );
    assert_eq!(s, 200, "{body}");
    wait_until(&env, "the won prospect got no new call task", 30, || {
        tasks().iter().any(|t| t["contact"] == "won")
    });
    let (_, rows) = api.get("/v1/outbox");
    let form_calls: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["followup"] == "form_call")
        .map(|r| r["contact"].as_str().unwrap())
        .collect();
    assert_eq!(form_calls, ["won"], "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_channel_writes_one_signed_line_per_send() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(
        PluginsConfig::default(),
        &dir.path().join("relance.toml"),
        relance::adapters::plugins::builtin_tables(),
    );
    let path = dir.path().join("spool/sends.ndjson");
    let settings: toml::Table = serde_json::from_value(json!({
        "path": path, "secret": SECRET
    }))
    .unwrap();
    let channel = ChannelConfig {
        plugin: "spool".into(),
        event: "webhook_sent".into(),
        consent: Default::default(),
        settings,
        instances: 1,
    };
    host.open_channel("spool", &channel).await.unwrap();
    let request = |key: &str| {
        let mut r = relance::adapters::plugins::DeliverRequest {
            idempotency_key: key.into(),
            now: "2026-11-20T12:00:00Z".parse().unwrap(),
            attempt: 1,
            channel: "spool".into(),
            action: relance::adapters::plugins::Action::Message,
            contact: relance::adapters::plugins::Contact {
                id: "p".into(),
                first_name: Some("P".into()),
                ..Default::default()
            },
            message: Default::default(),
            score: None,
            vars: Default::default(),
        };
        r.message.text = Some("Hello {{first_name}}".into());
        r
    };
    for key in ["k1", "k1", "k2"] {
        let r = host.deliver("spool", request(key)).await.unwrap();
        assert!(matches!(r, Delivery::Ok { .. }), "{r:?}");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per send: {text}");
    let secret = relance_plugin_webhook::sign::Secret::parse(SECRET).unwrap();
    for (line, key) in lines.iter().zip(["k1", "k2"]) {
        assert_eq!(line["id"], key);
        assert_eq!(line["body"]["data"]["message"]["text"], "Hello P");
        let body = serde_json::to_string(&line["body"]).unwrap();
        let ts = line["timestamp"].as_i64().unwrap();
        assert_eq!(line["signature"], secret.sign(key, ts, body.as_bytes()));
    }
    // A restart (a new instance on the same file) does not write a key again.
    host.reopen_channel("spool", &channel).await.unwrap();
    host.deliver("spool", request("k2")).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
}

#[test]
fn a_broad_ssrf_allow_list_is_warned_about_at_load() {
    let env = Env::new();
    env.write(
        "relance.toml",
        &format!(
            r#"[store]
path = "${{RELANCE_DB}}"

[channels.hook]
plugin = "webhook"
event = "webhook_sent"
settings = {{ url = "https://hooks.example.com/x", secret = "{SECRET}", allow_networks = ["0.0.0.0/0", "::/0", "10.2.0.0/16"] }}
"#
        ),
    );
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings[0].contains("`0.0.0.0/0`") && warnings[0].contains("loopback"),
        "{text}"
    );
    assert!(warnings[1].contains("`::/0`"), "{text}");
}
