//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver over HTTP on loopback) against
//! `relance run` on a store of the demo data. Every page loads without a
//! console error and its charts carry the figures of the data; the login
//! is required, a form without its CSRF token is refused, a read-only
//! session cannot erase. A screenshot of every page goes to
//! target/ui-screenshots/.
#![allow(clippy::unwrap_used)]

mod common;

use common::daemon::{rewrite, stop_daemon, wait_for_log, wait_until};
use common::{Env, free_port, repo, stderr};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The shipped rules with channels that need no external service (email
/// to files, SMS to a spool, calls to relance's call desk), no send
/// windows (calls go out at any hour), passes every minute and the API on.
fn dashboard_env(port: u16) -> Env {
    let env = Env::new();
    let shipped = std::fs::read_to_string(repo().join("config/relance.toml")).unwrap();
    let start = shipped.find("[[fatigue.windows]]").unwrap();
    let end = shipped.find("[fatigue.pressure]").unwrap();
    let text = format!("{}{}", &shipped[..start], &shipped[end..]);
    let api = format!("enabled = true\nlisten = \"127.0.0.1:{port}\"\ntokens = [\"{ADMIN}\"]");
    let mut text_with_ui = text.clone();
    text_with_ui.push_str(&format!("\n[api.ui]\nread_only_tokens = [\"{READER}\"]\n"));
    rewrite(
        &env,
        "relance.toml",
        &text_with_ui,
        &[
            (
                "[channels.email]\nplugin = \"email\"",
                "[channels.email]\nplugin = \"email\"\nsettings = { transport = \"file\", dir = \"mail\", from = \"Payroll <sales@payroll.example>\" }",
            ),
            (
                "plugin = \"webhook\"\nevent = \"sms_sent\"",
                "plugin = \"spool\"\nsettings = { path = \"sms.ndjson\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }\nevent = \"sms_sent\"",
            ),
            (
                "plugin = \"crm\"\nevent = \"call_task\"",
                "plugin = \"task\"\nevent = \"call_task\"",
            ),
            ("cron = \"*/15 * * * *\"", "cron = \"* * * * *\""),
            ("cron = \"30 9 * * TUE\"", "cron = \"* * * * *\""),
            (
                "enabled = false\nlisten = \"127.0.0.1:8080\"\ntokens = [\"${RELANCE_API_TOKEN:-}\"]",
                &api,
            ),
            (
                "tracking_secret = \"${RELANCE_TRACKING_SECRET:-}\"",
                "tracking_secret = \"tracking-secret-0123456789\"",
            ),
        ],
    );
    env.import_demo();
    env
}

/// chromedriver on a free loopback port, stopped (by its PID) on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium-driver; tests/run.sh does)");
    Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// A WebDriver session on headless chromium.
struct Browser {
    http: reqwest::Client,
    session: String,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    fn open(driver: &Driver) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,2000"]
            }
        }}});
        let mut browser = Self {
            http,
            session: String::new(),
            rt,
        };
        let url = format!("{}/session", driver.base);
        let mut answer = Value::Null;
        wait_until("chromedriver never answered", 60, || {
            match browser.raw("POST", &url, Some(&caps)) {
                Ok(v) => {
                    answer = v;
                    true
                }
                Err(_) => false,
            }
        });
        browser.session = format!(
            "{}/session/{}",
            driver.base,
            answer["value"]["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no session: {answer}"))
        );
        browser
    }

    fn raw(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, String> {
        self.rt.block_on(async {
            let req = match method {
                "GET" => self.http.get(url),
                "DELETE" => self.http.delete(url),
                _ => self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.cloned().unwrap_or(json!({})).to_string()),
            };
            let r = req.send().await.map_err(|e| e.to_string())?;
            let text = r.text().await.map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
        })
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let v = self
            .raw(method, &format!("{}{path}", self.session), Some(&body))
            .unwrap();
        assert!(
            v["value"].get("error").is_none(),
            "{method} {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn numbers(&self, selector: &str, attribute: &str) -> Vec<f64> {
        let v = self.js(&format!(
            "return [...document.querySelectorAll('{selector}')].map(e => e.getAttribute('{attribute}'));"
        ));
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().parse::<f64>().unwrap())
            .collect()
    }

    fn count(&self, selector: &str) -> usize {
        self.js(&format!(
            "return document.querySelectorAll('{selector}').length;"
        ))
        .as_u64()
        .unwrap() as usize
    }

    fn text(&self, selector: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector('{selector}'); return e ? e.textContent : '';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    fn element(&self, selector: &str) -> String {
        let e = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": selector}),
        );
        e[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{selector}: {e}"))
            .to_string()
    }

    fn click(&self, selector: &str) {
        let id = self.element(selector);
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Types into a field, then clicks a button.
    fn fill_and_submit(&self, field: &str, value: &str, button: &str) {
        let id = self.element(field);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({"text": value}),
        );
        self.click(button);
    }

    /// Console messages at SEVERE level since the last call.
    fn console_errors(&self) -> Vec<String> {
        self.call("POST", "/se/log", json!({"type": "browser"}))
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["level"] == "SEVERE")
            .map(|m| m["message"].to_string())
            .collect()
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = repo().join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    fn cookie(&self, name: &str) -> String {
        self.call("GET", &format!("/cookie/{name}"), Value::Null)["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Loads `path`, checks it loaded clean, and keeps a screenshot.
    fn page(&self, base: &str, path: &str, shot: &str) {
        self.go(&format!("{base}{path}"));
        assert_eq!(self.count("#error"), 0, "{path}: {}", self.text("main"));
        let errors = self.console_errors();
        assert!(errors.is_empty(), "{path}: console errors {errors:?}");
        self.screenshot(shot);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.raw("DELETE", &self.session.clone(), None);
    }
}

/// Plain HTTP against the dashboard, cookies by hand.
struct Http {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    base: String,
}

struct Answer {
    status: u16,
    location: String,
    cookies: Vec<String>,
    body: String,
}

impl Http {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            rt: tokio::runtime::Runtime::new().unwrap(),
            base: base.to_string(),
        }
    }

    fn send(&self, path: &str, cookie: &str, form: Option<&[(&str, &str)]>) -> Answer {
        self.rt.block_on(async {
            let url = format!("{}{path}", self.base);
            let req = match form {
                Some(f) => self
                    .client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(
                        f.iter()
                            .map(|(k, v)| format!("{k}={}", encode(v)))
                            .collect::<Vec<_>>()
                            .join("&"),
                    ),
                None => self.client.get(url),
            };
            let r = req.header("cookie", cookie).send().await.unwrap();
            let header = |n: &str| {
                r.headers()
                    .get_all(n)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            let location = header("location").pop().unwrap_or_default();
            let cookies = header("set-cookie");
            let status = r.status().as_u16();
            Answer {
                status,
                location,
                cookies,
                body: r.text().await.unwrap(),
            }
        })
    }

    /// Logs in with `token` and returns the session cookie (`name=value`).
    fn login(&self, token: &str, next: &str) -> (Answer, String) {
        let page = self.send("/ui/login", "", None);
        let pre = cookie_pair(&page.cookies, "relance_ui_login");
        let csrf = csrf_of(&page.body);
        let a = self.send(
            "/ui/login",
            &pre,
            Some(&[("token", token), ("csrf", &csrf), ("next", next)]),
        );
        let session = cookie_pair(&a.cookies, "relance_ui");
        (a, session)
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn cookie_pair(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_string())
        .unwrap_or_default()
}

fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    body[at..].split('"').next().unwrap().to_string()
}

/// Contacts of the demo data that bought something: the customers the
/// pressure grid places.
fn demo_customers() -> usize {
    let text = std::fs::read_to_string(repo().join("config/demo/events.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "purchase")
        .map(|e| e["contact"].as_str().unwrap().to_string())
        .collect::<BTreeSet<_>>()
        .len()
}

fn demo_contacts() -> usize {
    std::fs::read_to_string(repo().join("config/demo/contacts.csv"))
        .unwrap()
        .lines()
        .count()
        - 1
}

#[test]
fn the_dashboard_shows_every_page_in_a_real_browser_behind_a_login() {
    let port = free_port();
    let env = dashboard_env(port);
    let base = format!("http://127.0.0.1:{port}");
    // One pass of every job at the real now: scores, plans, sends, tasks.
    let now = relance::core::clock::Clock::system()
        .now()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let out = env.run_at(&now, &["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tasks = env.json(&["tasks", "list", "--all", "--limit", "500", "--json"]);
    let open_tasks = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"].is_null())
        .count();
    assert!(open_tasks > 0, "the demo data plans calls: {tasks}");

    let daemon = env.spawn_daemon("run.log");
    wait_for_log(&env, "run.log", "API listening", 60);
    let http = Http::new(&base);

    // No page without a session: the login, which brings the user back.
    for path in ["/ui/", "/ui/scores", "/ui/contact?id=martino", "/ui/calls"] {
        let a = http.send(path, "", None);
        assert_eq!(a.status, 303, "{path}");
        assert!(
            a.location.starts_with("/ui/login?next="),
            "{path}: {}",
            a.location
        );
    }
    let forged = http.send("/ui/", "relance_ui=eyJyIjoiYWRtaW4ifQ.AAAA", None);
    assert_eq!(forged.status, 303, "a forged cookie opens nothing");
    // A wrong token: 401, no session.
    let (bad, none) = http.login("not-a-token-0123456789", "/ui/");
    assert_eq!(bad.status, 401);
    assert!(none.is_empty());
    // No open redirect: another site in `next` sends to the dashboard.
    for next in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let (a, _) = http.login(ADMIN, next);
        assert_eq!((a.status, a.location.as_str()), (303, "/ui/"), "{next}");
    }
    // A login without its CSRF token is refused.
    let a = http.send("/ui/login", "", Some(&[("token", ADMIN), ("next", "/ui/")]));
    assert_eq!(a.status, 403);

    let driver = start_driver();
    let browser = Browser::open(&driver);

    // The browser is sent to the login, logs in, lands where it asked.
    browser.go(&format!("{base}/ui/scores"));
    assert!(
        browser.url().contains("/ui/login?next=/ui/scores"),
        "{}",
        browser.url()
    );
    browser.screenshot("login");
    browser.fill_and_submit("#token", ADMIN, "#submit");
    wait_until("the login never led to the scores", 60, || {
        browser.url().ends_with("/ui/scores")
    });
    let session = browser.cookie("relance_ui");

    // Overview: one bar per band, the bars sum to every contact.
    browser.page(&base, "/ui/", "overview");
    let bands = browser.numbers("#bands rect.bar", "data-value");
    assert_eq!(bands.len(), 3, "hot, warm, cold");
    assert_eq!(bands.iter().sum::<f64>() as usize, demo_contacts());
    assert!(
        browser.count("#by-state rect.seg") > 0,
        "sends per day are drawn"
    );
    // 29 days by default: today ± 14.
    assert!(browser.text("#health").contains("deferred"));

    // Scores: the distribution holds every contact, thresholds drawn.
    browser.page(&base, "/ui/scores", "scores");
    let bars = browser.numbers("#distribution rect.bar", "data-value");
    assert_eq!(bars.iter().sum::<f64>() as usize, demo_contacts());
    assert_eq!(
        browser.count("#distribution line.marker"),
        2,
        "hot ≥ 150, warm ≥ 100"
    );
    assert_eq!(
        browser.count("#bands-over-time circle.pt"),
        3 * 30,
        "3 bands × 30 days"
    );
    // What-if with the shipped rules: nobody moves.
    std::fs::copy(
        repo().join("config/relance.toml"),
        env.path("same-rules.toml"),
    )
    .unwrap();
    browser.page(&base, "/ui/scores", "scores");
    browser.js("document.querySelector('select[name=file]').value = 'same-rules.toml'; document.querySelector('#whatif-form').submit(); return 1;");
    wait_until("the what-if never answered", 120, || {
        browser.count("#whatif-result") == 1
    });
    assert_eq!(browser.text("#moved"), "0");
    browser.screenshot("scores-whatif");

    // Contact: the explanation's bars sum to the score.
    browser.page(&base, "/ui/contact?q=martino", "contact");
    assert_eq!(browser.count("#profile"), 1, "one hit opens the contact");
    let score: f64 = browser
        .js("return document.querySelector('#score').dataset.score;")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let parts = browser.numbers("#explanation rect.contrib", "data-points");
    assert!(parts.len() >= 2, "{parts:?}");
    assert!(
        (parts.iter().sum::<f64>() - score).abs() < 0.011,
        "{parts:?} sum to {score}"
    );
    assert!(score >= 150.0, "Martino is hot (seed 001)");
    assert_eq!(
        browser.count("#fatigue circle.pt"),
        61,
        "30 days back, today, 30 ahead"
    );
    assert!(
        browser.count("#fatigue line.level") >= 2,
        "the fatigue levels are drawn"
    );
    assert!(browser.count("#film circle.pt") >= 1);
    // A search by email finds the same contact.
    browser.page(
        &base,
        "/ui/contact?q=l.martino%40bati-sud.fr",
        "contact-by-email",
    );
    assert_eq!(browser.text("#profile h2 .hint"), "(martino)");

    // Pressure: 25 cells holding every customer; a cell lists its own.
    browser.page(&base, "/ui/pressure", "pressure");
    let cells = browser.numbers("#grid rect.cell", "data-count");
    assert_eq!(cells.len(), 25);
    assert_eq!(cells.iter().sum::<f64>() as usize, demo_customers());
    let busiest = browser.js(
        "const c = [...document.querySelectorAll('#grid rect.cell')].sort((a, b) => b.dataset.count - a.dataset.count)[0]; \
         return [c.closest('a').getAttribute('href'), +c.dataset.count];",
    );
    browser.page(&base, busiest[0].as_str().unwrap(), "pressure-cell");
    let listed = browser.count("#cell a");
    assert_eq!(listed as u64, busiest[1].as_u64().unwrap().min(200));

    // Follow-ups: a row per configured sequence and trigger at least.
    browser.page(&base, "/ui/followups", "followups");
    assert!(browser.count("#table tr") > 4);

    // Call desk: the open tasks, then one outcome recorded.
    browser.page(&base, "/ui/calls", "calls");
    assert_eq!(browser.count("#open tr.task"), open_tasks);
    browser.js("const f = document.querySelector('#open tr.task form'); f.querySelector('select').value = 'RDV'; f.submit(); return 1;");
    wait_until("the outcome was never recorded", 60, || {
        browser.url().ends_with("/ui/calls") && browser.count("#open tr.task") == open_tasks - 1
    });
    assert_eq!(
        browser.text("#kpis strong"),
        "100%",
        "one call, one meeting"
    );
    assert_eq!(browser.numbers("#kpis rect.bar", "data-value"), [1.0]);
    browser.screenshot("calls-outcome");

    // CSRF: a form posted without its token is refused, nothing erased.
    let a = http.send(
        "/ui/contact/erase",
        &format!("relance_ui={session}"),
        Some(&[("id", "beltrani"), ("confirm", "beltrani")]),
    );
    assert_eq!(a.status, 403);
    let a = http.send(
        "/ui/contact/erase",
        &format!("relance_ui={session}"),
        Some(&[
            ("csrf", "forged"),
            ("id", "beltrani"),
            ("confirm", "beltrani"),
        ]),
    );
    assert_eq!(a.status, 403);
    assert!(
        env.run(&["score", "beltrani"]).status.success(),
        "still there"
    );

    // Read-only: pages yes, erase and outcome no, even with a good token.
    let (a, reader) = http.login(READER, "/ui/contact?id=beltrani");
    assert_eq!(
        (a.status, a.location.as_str()),
        (303, "/ui/contact?id=beltrani")
    );
    let page = http.send("/ui/contact?id=beltrani", &reader, None);
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("erase-form"),
        "no erase form for a reader"
    );
    let csrf = csrf_of(&page.body);
    let a = http.send(
        "/ui/contact/erase",
        &reader,
        Some(&[("csrf", &csrf), ("id", "beltrani"), ("confirm", "beltrani")]),
    );
    assert_eq!(a.status, 403);
    let a = http.send(
        "/ui/calls/outcome",
        &reader,
        Some(&[("csrf", &csrf), ("task", "x"), ("code", "RDV")]),
    );
    assert_eq!(a.status, 403);
    assert!(
        env.run(&["score", "beltrani"]).status.success(),
        "still there"
    );

    // Erase, confirmed, as admin in the browser.
    browser.page(&base, "/ui/contact?id=beltrani", "contact-erase");
    browser.fill_and_submit("#confirm", "beltrani", "#erase-button");
    wait_until("the erasure never finished", 60, || {
        browser.url().contains("erased=1")
    });
    assert_eq!(browser.count("#profile"), 0);
    assert!(!env.run(&["score", "beltrani"]).status.success(), "erased");

    // Logout ends the session in the browser.
    browser.click("#logout");
    wait_until("logout never led to the login", 60, || {
        browser.url().contains("/ui/login")
    });
    browser.go(&format!("{base}/ui/"));
    assert!(browser.url().contains("/ui/login"));

    let log = std::fs::read_to_string(env.path("run.log")).unwrap();
    for line in [
        "dashboard session opened",
        "dashboard form refused: bad or missing CSRF token",
        "dashboard action refused to a read-only session",
        "call outcome recorded from the dashboard",
        "contact erased from the dashboard",
        "dashboard session closed",
    ] {
        assert!(log.contains(line), "logged: {line}");
    }
    drop(browser);
    drop(driver);
    stop_daemon(daemon);
}
