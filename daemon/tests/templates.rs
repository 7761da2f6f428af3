//! Templates and metrics end to end, with the real binary: French and
//! English contacts get their language from template files, a missing
//! first name falls back, contact fields are escaped in HTML, a preview is
//! exactly what the email plugin's file transport then writes, a template
//! that reads a file is refused, and a delivery moves its histogram on the
//! running daemon's `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Env, stderr, stdout};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789abcdef";

/// Writes a file of the environment, with its folders.
fn put(env: &Env, name: &str, text: &str) {
    let path = env.path(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The French and English variants of `welcome`, with a partial.
fn template_files(env: &Env) {
    put(
        env,
        "templates/welcome/fr/subject.txt",
        "{{ first_name | default(\"Madame, Monsieur\") }}, le guide de la paie\n",
    );
    put(
        env,
        "templates/welcome/fr/text.txt",
        "Bonjour {{ first_name | default(\"Madame, Monsieur\") }},\n\n{% if company %}\nPour {{ company.name }} : notre guide.\n{% endif %}\nÉtape {{ followup.step | default(1) }} ({{ followup.reason }}).\n{% include \"partials/signature.txt\" %}",
    );
    put(
        env,
        "templates/welcome/fr/html.html",
        "<p>Bonjour {{ first_name | default(\"Madame, Monsieur\") }},</p>\n<p><a href=\"https://payroll.example/offre\">Notre offre</a></p>\n<p><a href=\"{{ links.unsubscribe }}\">Se désinscrire</a></p>\n",
    );
    put(
        env,
        "templates/welcome/en/subject.txt",
        "{{ first_name | default(\"Hello\") }}, the payroll guide\n",
    );
    put(
        env,
        "templates/welcome/en/text.txt",
        "Hello {{ first_name | default(\"there\") }},\n\nYour band: {{ band | default(\"none\") }}.\n{% include \"partials/signature.txt\" %}",
    );
    put(
        env,
        "templates/welcome/en/html.html",
        "<p>Hello {{ first_name | default(\"there\") }},</p>\n<p><a href=\"https://payroll.example/offer\">Our offer</a></p>\n",
    );
    put(env, "templates/partials/signature.txt", "-- Payroll & co\n");
}

/// Email to `.eml` files in `mail`, the API's tracking on, the `welcome`
/// template triggered by a page visit, and `extra` appended.
fn config(env: &Env, api_port: u16, extra: &str) {
    let mail = env.path("mail");
    std::fs::create_dir_all(&mail).unwrap();
    env.write(
        "relance.toml",
        &format!(
            r#"[store]
path = "${{RELANCE_DB}}"

[channels.mail]
plugin = "email"
event = "email_sent"
settings = {{ transport = "file", dir = "{}", from = "Paie <paie@example.com>" }}

[templating]
dir = "templates"
default_language = "en"

[templates.welcome]
channel = "mail"

[api]
enabled = true
listen = "127.0.0.1:{api_port}"
tokens = ["{TOKEN}"]
tracking_secret = "tracking-secret-0123456789"
public_url = "http://127.0.0.1:{api_port}"

[[followups.triggers]]
name = "pricing_visit"
event = "page_visit"
cooldown = "7d"
action = {{ channel = "mail", template = "welcome" }}
{extra}"#,
            mail.display()
        ),
    );
    template_files(env);
}

fn contacts(env: &Env, at: &str) {
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,first_name,last_name,language\nfr,zoe@example.com,Zoé,Martin,fr\nen,en@example.com,,Smith,en\nxss,xss@example.com,<script>alert(1)</script>,,\n",
    );
    let events: String = ["fr", "en", "xss"]
        .iter()
        .map(|c| format!("{{\"contact\":\"{c}\",\"type\":\"page_visit\",\"at\":\"{at}\"}}\n"))
        .collect();
    env.import_text("events", "e.jsonl", &events);
}

/// Every `.eml` of `dir`, decoded by Python's email package: to, subject,
/// text and html.
fn emails(dir: &Path) -> Vec<Value> {
    let script = r#"
import email, email.policy, json, pathlib, sys
out = []
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.eml")):
    m = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
    part = lambda kind: m.get_body((kind,))
    text, html = part("plain"), part("html")
    out.append({
        "to": str(m["To"]),
        "subject": str(m["Subject"]),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "list_unsubscribe": str(m["List-Unsubscribe"]),
    })
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Line ends as Python hands them back.
fn lf(v: &Value) -> Option<String> {
    v.as_str().map(|s| s.replace("\r\n", "\n"))
}

fn once(env: &Env, now: &str) {
    let out = env.run_at(now, &["run", "--once"]);
    assert!(
        out.status.success(),
        "run --once at {now}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn a_preview_is_what_the_contact_then_receives_in_its_language() {
    let env = Env::new();
    // Email goes out from 09:00: a send planned at 06:01 waits in the outbox.
    config(
        &env,
        18999,
        "\n[schedules.react]\njob = \"plan\"\ncron = \"* * * * *\"\n\n[[fatigue.windows]]\nchannel = \"mail\"\nfrom = \"09:00\"\nto = \"18:00\"\n",
    );
    contacts(&env, "2026-11-20T05:59:00Z");
    // The first pass records the schedule's tick; the next one plans.
    once(&env, "2026-11-20T06:00:00Z");
    once(&env, "2026-11-20T06:01:00Z");
    let previews: Vec<Value> = ["fr", "en", "xss"]
        .iter()
        .map(|c| {
            env.json_at(
                "2026-11-20T06:02:00Z",
                &["template", "preview", "welcome", "--contact", c, "--json"],
            )
        })
        .collect();
    for p in &previews {
        assert_eq!(p["pending"], true, "the waiting send is previewed: {p}");
    }
    let fr = &previews[0];
    assert_eq!(fr["language"], "fr");
    assert_eq!(fr["subject"], "Zoé, le guide de la paie");
    assert_eq!(
        fr["text"],
        "Bonjour Zoé,\n\nÉtape 1 (pricing_visit).\n-- Payroll & co\n"
    );
    let html = fr["html"].as_str().unwrap();
    assert!(
        html.contains("href=\"http://127.0.0.1:18999/t/c/"),
        "the link is tracked: {html}"
    );
    let unsubscribe = fr["unsubscribe_url"].as_str().unwrap();
    assert!(
        html.contains(&format!("href=\"{unsubscribe}\"")),
        "the template shows the one-click link as it is: {html}"
    );
    assert!(html.contains("/t/o/"), "an open pixel: {html}");
    let en = &previews[1];
    assert_eq!(en["language"], "en");
    assert_eq!(en["subject"], "Hello, the payroll guide");
    assert!(en["text"].as_str().unwrap().starts_with("Hello there,\n"));
    let xss = &previews[2];
    assert_eq!(xss["language"], "en", "the default language");
    assert!(
        xss["html"]
            .as_str()
            .unwrap()
            .starts_with("<p>Hello &lt;script&gt;alert(1)&lt;/script&gt;,</p>"),
        "{xss}"
    );
    let mail = env.path("mail");
    assert!(emails(&mail).is_empty(), "a preview sends nothing");

    once(&env, "2026-11-20T09:00:30Z");
    let sent = emails(&mail);
    assert_eq!(sent.len(), 3, "{sent:?}");
    for (contact, p) in ["zoe@", "en@", "xss@"].iter().zip(&previews) {
        let eml = sent
            .iter()
            .find(|e| e["to"].as_str().unwrap().contains(contact))
            .unwrap_or_else(|| panic!("no email to {contact}: {sent:?}"));
        assert_eq!(eml["subject"], p["subject"], "{contact}");
        assert_eq!(lf(&eml["text"]), lf(&p["text"]), "{contact}");
        assert_eq!(lf(&eml["html"]), lf(&p["html"]), "{contact}");
        assert_eq!(
            eml["list_unsubscribe"],
            format!("<{}>", p["unsubscribe_url"].as_str().unwrap())
        );
    }
}

#[test]
fn templates_that_read_files_or_fail_to_compile_are_configuration_errors() {
    let env = Env::new();
    config(&env, 18998, "");
    put(
        &env,
        "templates/welcome/en/text.txt",
        "Hello\n  {% include \"/etc/passwd\" %}\n",
    );
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("templates/welcome/en/text.txt:2:6: `templates.welcome`: `include \"/etc/passwd\"` is refused"),
        "{text}"
    );
    put(
        &env,
        "templates/welcome/en/text.txt",
        "Hello {{ first_name\n",
    );
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("templates/welcome/en/text.txt:1:") && text.contains("syntax error"),
        "{text}"
    );
}

#[test]
fn a_template_that_fails_for_a_contact_fails_its_send_for_good_with_the_reason() {
    let env = Env::new();
    config(
        &env,
        18997,
        "\n[schedules.react]\njob = \"plan\"\ncron = \"* * * * *\"\n",
    );
    put(
        &env,
        "templates/welcome/en/text.txt",
        "{{ 1000 // headcount }} euros per employee\n",
    );
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,headcount\nzero,zero@example.com,0\nten,ten@example.com,10\n",
    );
    env.import_text(
        "events",
        "e.jsonl",
        "{\"contact\":\"zero\",\"type\":\"page_visit\",\"at\":\"2026-11-20T05:59:00Z\"}\n{\"contact\":\"ten\",\"type\":\"page_visit\",\"at\":\"2026-11-20T05:59:00Z\"}\n",
    );
    let out = env.run(&["template", "preview", "welcome", "--contact", "zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("welcome/en/text.txt: line 1"),
        "{}",
        stderr(&out)
    );
    once(&env, "2026-11-20T06:00:00Z");
    once(&env, "2026-11-20T06:01:00Z");
    let rows = env.json(&["outbox", "--json"]);
    let state = |contact: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["contact"] == contact)
            .unwrap_or_else(|| panic!("no row for {contact}: {rows}"))
            .clone()
    };
    let zero = state("zero");
    assert_eq!(zero["state"], "dead", "{zero}");
    assert!(
        zero["last_error"]
            .as_str()
            .unwrap()
            .contains("welcome/en/text.txt"),
        "{zero}"
    );
    assert_eq!(state("ten")["state"], "sent");
    let sent = emails(&env.path("mail"));
    assert_eq!(sent.len(), 1);
    assert_eq!(lf(&sent[0]["text"]).unwrap(), "100 euros per employee\n");
}

fn spawn_daemon(env: &Env) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(env.path("relance.toml"))
        .arg("run")
        .env("RELANCE_DB", env.path("store.db"))
        .env_remove("RELANCE_CONFIG")
        .env_remove("RELANCE_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("run.log")).unwrap())
        .spawn()
        .expect("start relance run")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of the sample `name` in a metrics text, if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn a_delivery_moves_its_histogram_on_the_running_daemon_and_the_api_previews() {
    let env = Env::new();
    let port = free_port();
    config(&env, port, "");
    env.import_text(
        "contacts",
        "c.csv",
        "id,email,first_name,language\nfr,zoe@example.com,Zoé,fr\n",
    );
    let mut child = spawn_daemon(&env);
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str| {
        rt.block_on(async {
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(TOKEN)
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        })
    };
    let started = Instant::now();
    while get("/readyz").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the API never came up: {}",
            std::fs::read_to_string(env.path("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent_count = "relance_delivery_duration_seconds_count{channel=\"mail\",outcome=\"sent\"}";
    let (status, before) = get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(sample(&before, sent_count), None, "{before}");
    assert!(sample(&before, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&before, "process_open_fds").unwrap() >= 3.0);

    // The API previews the template in the contact's language.
    let (status, body) = get("/v1/templates/welcome/preview?contact=fr").unwrap();
    assert_eq!(status, 200, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&p["language"], &p["subject"]),
        (&Value::from("fr"), &Value::from("Zoé, le guide de la paie"))
    );
    assert_eq!(get("/v1/templates/nope/preview?contact=fr").unwrap().0, 404);
    assert_eq!(
        get("/v1/templates/welcome/preview?contact=nobody")
            .unwrap()
            .0,
        404
    );
    assert_eq!(get("/v1/templates/welcome/preview").unwrap().0, 400);

    let now = relance::core::clock::Clock::system().now();
    let event = serde_json::json!([{"contact": "fr", "type": "page_visit", "at": now - chrono::Duration::seconds(2)}]);
    let status = rt.block_on(async {
        client
            .post(format!("{base}/v1/events"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(event.to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let started = Instant::now();
    let after = loop {
        let (_, text) = get("/metrics").unwrap();
        if sample(&text, sent_count) == Some(1.0) {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no delivery recorded: {text}\n{}",
            std::fs::read_to_string(env.path("run.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(
            &after,
            "relance_delivery_duration_seconds_bucket{le=\"+Inf\",channel=\"mail\",outcome=\"sent\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "relance_deliveries_total{channel=\"mail\",outcome=\"sent\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "relance_signal_to_send_seconds_count{channel=\"mail\"}"
        ),
        Some(1.0),
        "{after}"
    );
    for pass in ["rescore", "plan", "dispatch"] {
        let n = sample(
            &after,
            &format!("relance_pass_duration_seconds_count{{pass=\"{pass}\"}}"),
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{pass}: {after}");
    }
    for route in [
        "method=\"POST\",route=\"/v1/events\",status=\"200\"",
        "method=\"GET\",route=\"/v1/templates/{name}/preview\",status=\"404\"",
    ] {
        let n = sample(
            &after,
            &format!("relance_api_request_duration_seconds_count{{{route}}}"),
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{route}: {after}");
    }
    assert_eq!(emails(&env.path("mail")).len(), 1);

    // SIGHUP compiles the templates again; a broken one is refused and the
    // running ones stay.
    let subject = || {
        let (_, body) = get("/v1/templates/welcome/preview?contact=fr").unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["subject"].clone()
    };
    let file = "templates/welcome/fr/subject.txt";
    put(&env, file, "{{ first_name }}, votre nouveau guide\n");
    signal(&child, "HUP");
    let started = Instant::now();
    while subject() != "Zoé, votre nouveau guide" {
        assert!(started.elapsed() < Duration::from_secs(30), "not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    put(&env, file, "{{ first_name \n");
    signal(&child, "HUP");
    let started = Instant::now();
    while !std::fs::read_to_string(env.path("run.log"))
        .unwrap()
        .contains("welcome/fr/subject.txt:1:")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the broken template was not reported"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(subject(), "Zoé, votre nouveau guide");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}
