//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver over HTTP on loopback) against
//! `relance run` on a store of this test's own
//! contacts and events, whose figures are known: scores and bands, the
//! customers' pressure and value, calls per day, the nurture sequence's
//! sends. Every page loads without a console error and its charts carry
//! those figures; the login is required, a form without its CSRF token is
//! refused, a read-only session cannot erase or record. A screenshot of
//! every page goes to target/ui-screenshots/.
#![allow(clippy::unwrap_used)]

mod common;

use common::daemon::{rewrite, stop_daemon, wait_for_log, wait_until};
use common::{Env, free_port, repo};
use serde_json::{Value, json};
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
    import_known_data(&env);
    env
}

/// The test's start: the data is dated from it (`relance run` runs on the
/// real clock).
static START: std::sync::LazyLock<chrono::DateTime<chrono::Utc>> = std::sync::LazyLock::new(|| {
    chrono::DateTime::from_timestamp(relance::core::clock::Clock::system().now().timestamp(), 0)
        .unwrap()
});

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `days` and `minutes` from the start.
fn at(days: i64, minutes: i64) -> String {
    stamp(*START + chrono::Duration::days(days) + chrono::Duration::minutes(minutes))
}

/// 10:00 UTC plus `minutes`, `days` days before the start's day.
fn morning(days: i64, minutes: i64) -> chrono::DateTime<chrono::Utc> {
    (START.date_naive() - chrono::Duration::days(days))
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc()
        + chrono::Duration::minutes(minutes)
}

fn day(days: i64) -> String {
    morning(days, 0).format("%Y-%m-%d").to_string()
}

/// Customers u0–u9: revenue (distinct, so that each has its own rank) and
/// email sends 25 days ago (in the 30-day solicitation window, their
/// fatigue long decayed). Ranks 0–4 as the grid draws them.
/// (id, amount, margin, sends, pressure rank, value rank)
type Customer = (&'static str, u32, Option<i32>, usize, usize, usize);
const CUSTOMERS: [Customer; 10] = [
    // Top 5 % of 10 (one): strategic; next 15 %: very important; to 50 %:
    // important; the rest minor; a negative margin whatever the revenue.
    ("u0", 10_000, None, 0, 0, 4),
    ("u1", 9_000, None, 8, 4, 3),
    ("u2", 8_000, None, 1, 1, 2),
    ("u3", 7_000, None, 3, 2, 2),
    ("u4", 6_000, None, 5, 3, 2),
    ("u5", 5_000, None, 8, 4, 1),
    ("u6", 4_000, None, 0, 0, 1),
    ("u7", 3_000, None, 1, 1, 1),
    ("u8", 2_000, None, 3, 2, 1),
    ("u9", 1_000, Some(-100), 5, 3, 0),
];

/// Every contact's score under the shipped rules now (points):
/// "DRH" is the HR-director profile (40); a demo request 40, a white paper
/// 25 (twice at most), a trade show 30, a pricing page 20; five unanswered
/// solicitations −15.
const SCORES: [(&str, i64); 25] = [
    ("h1", 160),
    ("h2", 160),
    ("w1", 105),
    ("w2", 105),
    ("w3", 105),
    ("pv1", 20),
    ("cb1", 25),
    ("k1", 25),
    ("k2", 25),
    ("k3", 25),
    ("k4", 25),
    ("k5", 25),
    ("n1", 25),
    ("n2", 25),
    ("n3", 25),
    ("u0", 25),
    ("u1", 10),
    ("u2", 25),
    ("u3", 25),
    ("u4", 10),
    ("u5", 10),
    ("u6", 25),
    ("u7", 25),
    ("u8", 25),
    ("u9", 10),
];

/// Contacts and events whose figures the test knows (see [`SCORES`],
/// [`CUSTOMERS`] and the calls below).
fn import_known_data(env: &Env) {
    let mut csv = String::from(
        "id,first_name,last_name,email,phone,company,owner,status,tier,timezone,consent_sms,title\n",
    );
    let mut events = Vec::new();
    let mut ev = |contact: &str, kind: &str, when: String, props: Value| {
        let n = events.len();
        events.push(json!({"id": format!("t-{n}"), "contact": contact, "type": kind, "at": when, "props": props}));
    };
    for (id, _) in SCORES {
        let (status, tier, title) = match id {
            "h1" | "h2" | "w1" | "w2" | "w3" => ("prospect", "core", "DRH"),
            "n1" | "n2" | "n3" => ("prospect", "target_1", ""),
            i if i.starts_with('u') => ("customer", "core", ""),
            _ => ("prospect", "core", ""),
        };
        csv.push_str(&format!(
            "{id},First-{id},Last-{id},{id}@known.example,+33 1 40 00 00 {:02},,claire,{status},{tier},Europe/Paris,,{title}\n",
            csv.lines().count()
        ));
    }
    // h1: a white paper 12 days ago (65, cold), a demo 7 days ago (105,
    // warm), a white paper and a trade show 2 days ago (160, hot).
    ev("h1", "download", at(-12, 0), json!({}));
    ev("h1", "demo_request", at(-7, 0), json!({}));
    ev("h1", "download", at(-2, 0), json!({}));
    ev("h1", "trade_show_visit", at(-2, 60), json!({}));
    for (k, kind) in ["demo_request", "download", "download", "trade_show_visit"]
        .iter()
        .enumerate()
    {
        ev("h2", kind, at(-3, k as i64), json!({}));
    }
    for w in ["w1", "w2", "w3"] {
        ev(w, "demo_request", at(-4, 0), json!({}));
        ev(w, "download", at(-4, 1), json!({}));
    }
    // A pricing page half an hour ago: a call task within 4 hours.
    ev(
        "pv1",
        "page_visit",
        at(0, -30),
        json!({"url": "https://payroll.example/pricing"}),
    );
    for c in ["cb1", "k1", "k2", "k3", "k4", "k5", "n1", "n2", "n3"] {
        ev(c, "download", at(-4, 0), json!({}));
    }
    // Calls: the day before yesterday 4 (2 pitches, 1 meeting, 1 call-back,
    // 1 refusal), yesterday 2 (2 pitches, 1 meeting). cb1 agreed to be
    // called back an hour ago.
    for (c, days, minute, code) in [
        ("k1", 2, 0, "RDV"),
        ("k2", 2, 5, "REFUS"),
        ("k3", 2, 10, "NRP"),
        ("cb1", 2, 15, "RAPP"),
        ("k4", 1, 0, "RDV"),
        ("k5", 1, 5, "PISTE"),
    ] {
        let mut props = json!({"outcome": code, "owner": "claire"});
        if c == "cb1" {
            props["callback_at"] = json!(at(0, -60));
        }
        ev(c, "call", stamp(morning(days, minute)), props);
    }
    for (id, amount, margin, sends, _, _) in CUSTOMERS {
        ev(id, "download", at(-4, 0), json!({}));
        let mut props = json!({"amount": amount});
        if let Some(m) = margin {
            props["margin"] = json!(m);
        }
        ev(id, "purchase", at(-40, 0), props);
        for k in 0..sends {
            ev(id, "email_sent", at(-25, k as i64), json!({}));
        }
    }
    env.import_text("contacts", "contacts.csv", &csv);
    let jsonl: Vec<String> = events.iter().map(Value::to_string).collect();
    env.import_text("events", "events.jsonl", &(jsonl.join("\n") + "\n"));
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

/// The score distribution's bars as the page draws them: buckets of 10
/// points from the lowest score's to the highest's.
fn expected_bars() -> Vec<(String, f64)> {
    let lo = SCORES.iter().map(|s| s.1.div_euclid(10)).min().unwrap();
    let hi = SCORES.iter().map(|s| s.1.div_euclid(10)).max().unwrap();
    (lo..=hi)
        .map(|b| {
            let n = SCORES.iter().filter(|s| s.1.div_euclid(10) == b).count();
            ((b * 10).to_string(), n as f64)
        })
        .collect()
}

impl Browser {
    /// (data-label or data-x, data-value) of the bars under `selector`.
    fn bars(&self, selector: &str) -> Vec<(String, f64)> {
        let v = self.js(&format!(
            "return [...document.querySelectorAll('{selector}')].map(e => [e.dataset.label || e.dataset.x || '', +e.dataset.value]);"
        ));
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
            .collect()
    }

    /// The `data-*` attribute `name` of every element under `selector`.
    fn data(&self, selector: &str, name: &str) -> Vec<String> {
        self.js(&format!(
            "return [...document.querySelectorAll('{selector}')].map(e => e.dataset['{name}'] || '');"
        ))
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
    }

    /// Reloads `path` until `done`, for what the daemon's passes do next.
    fn until(&self, base: &str, path: &str, what: &str, done: impl Fn(&Self) -> bool) {
        wait_until(what, 60, || {
            self.go(&format!("{base}{path}"));
            done(self)
        });
    }
}

#[test]
fn the_dashboard_shows_every_page_in_a_real_browser_behind_a_login() {
    let port = free_port();
    let env = dashboard_env(port);
    let base = format!("http://127.0.0.1:{port}");
    let daemon = env.spawn_daemon("run.log");
    wait_for_log(&env, "run.log", "API listening", 60);
    // The first start runs every schedule once: scores, plans, sends, the
    // pressure grid.
    wait_for_log(&env, "run.log", "pressure grid: 10 customers", 120);
    let http = Http::new(&base);

    // No page without a session: the login, which brings the user back.
    for path in [
        "/ui/",
        "/ui/scores",
        "/ui/contact?id=h1",
        "/ui/calls",
        "/ui/pressure/contacts?p=0&v=4",
    ] {
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
    // The whole address: the login page's own (`…?next=/ui/scores`) ends
    // the same way, and a loaded machine may not have submitted yet.
    let scores = format!("{base}/ui/scores");
    wait_until("the login never led to the scores", 60, || {
        browser.url() == scores
    });
    let session = browser.cookie("relance_ui");

    // Overview: one bar per band, highest first: 2 hot, 3 warm, 20 cold.
    browser.page(&base, "/ui/", "overview");
    assert_eq!(
        browser.bars("#bands rect.bar"),
        [
            ("hot".to_string(), 2.0),
            ("warm".to_string(), 3.0),
            ("cold".to_string(), 20.0)
        ]
    );
    assert!(browser.text("#health").contains("deferred"));

    // Scores: one bar per 10 points from 10 to 160, thresholds drawn; bands
    // over 30 days, each ending on today's count.
    browser.page(&base, "/ui/scores", "scores");
    assert_eq!(browser.bars("#distribution rect.bar"), expected_bars());
    assert_eq!(browser.bars("#distribution rect.bar").len(), 16);
    assert_eq!(
        browser.numbers("#distribution line.marker", "data-at"),
        [150.0, 100.0],
        "hot ≥ 150, warm ≥ 100"
    );
    assert_eq!(
        browser.count("#bands-over-time circle.pt"),
        3 * 30,
        "3 bands × 30 days"
    );
    let last = browser.js(
        "const s = {}; for (const c of document.querySelectorAll('#bands-over-time circle.pt')) s[c.dataset.series] = +c.dataset.value; return s;",
    );
    assert_eq!(last, json!({"hot": 2, "warm": 3, "cold": 20}));
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

    // Contact h1: the explanation's bars sum to its 160 points; the film
    // replays its four events (and now), with the store's snapshot, and
    // circles its two crossings (cold → warm → hot).
    browser.page(&base, "/ui/contact?q=h1", "contact");
    assert_eq!(browser.count("#profile"), 1, "one hit opens the contact");
    let score: f64 = browser
        .js("return document.querySelector('#score').dataset.score;")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(score, 160.0);
    let parts = browser.numbers("#explanation rect.contrib", "data-points");
    assert_eq!(
        parts.len(),
        4,
        "profile, demo, white papers, trade show: {parts:?}"
    );
    assert!(
        (parts.iter().sum::<f64>() - score).abs() < 0.011,
        "{parts:?} sum to {score}"
    );
    // Its four events, then what the daemon sent it since (the call task
    // its crossing into hot asked for), then now.
    let film = browser.numbers("#film circle.pt[data-series^=replayed]", "data-value");
    assert_eq!(film[..4], [65.0, 105.0, 130.0, 160.0], "{film:?}");
    assert!(film[4..].iter().all(|v| *v == 160.0), "{film:?}");
    assert_eq!(browser.count("#film circle.pt[data-series^=stored]"), 1);
    assert_eq!(
        browser.numbers("#film circle.crossing", "data-value"),
        [105.0, 160.0]
    );
    assert_eq!(
        browser.count("#fatigue circle.pt"),
        61,
        "30 days back, today, 30 ahead"
    );
    assert!(
        browser.count("#fatigue line.level") >= 2,
        "the fatigue levels are drawn"
    );
    // A search by email finds the same contact.
    browser.page(
        &base,
        "/ui/contact?q=h1%40known.example",
        "contact-by-email",
    );
    assert_eq!(browser.text("#profile h2 .hint"), "(h1)");
    // By name: a prefix of the last name, of the first, or of both.
    for q in [
        "last-h",
        "LAST-H",
        "first-h",
        "first-h1%20la",
        "last-h2%20first",
    ] {
        browser.page(&base, &format!("/ui/contact?q={q}"), "contact-search");
        let ids = browser.js("return [...document.querySelectorAll('#hits tr td:first-child a')].map(a => a.textContent);");
        let expected = if q.contains("h1") {
            json!([])
        } else {
            json!(["h1", "h2"])
        };
        if q.contains("h1") || q.contains("h2") {
            assert_eq!(
                browser.count("#profile"),
                1,
                "{q}: one hit opens the contact"
            );
        } else {
            assert_eq!(ids, expected, "{q}");
        }
    }

    // Pressure: the 25 cells hold the ten customers where their sends and
    // revenue put them; a cell lists its own; the misfits in gap order.
    browser.page(&base, "/ui/pressure", "pressure");
    let cells = browser.js(
        "return [...document.querySelectorAll('#grid rect.cell')].map(c => [c.closest('a').getAttribute('href'), +c.dataset.count]);",
    );
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), 25);
    for c in cells {
        let href = c[0].as_str().unwrap();
        let expected = CUSTOMERS
            .iter()
            .filter(|u| href.ends_with(&format!("?p={}&v={}", u.4, u.5)))
            .count();
        assert_eq!(c[1].as_u64().unwrap() as usize, expected, "{href}");
    }
    assert_eq!(browser.count("#over tr.misfit"), 5);
    assert_eq!(browser.text("#over h2 a"), "5");
    assert_eq!(browser.text("#under h2 a"), "3");
    browser.click("#grid a[href$='p=4&v=3']");
    wait_until("the cell never opened", 60, || {
        browser.url().contains("/ui/pressure/contacts?p=4&v=3")
    });
    assert_eq!(browser.console_errors(), Vec::<String>::new());
    assert_eq!(browser.text("#cell tr.customer td a"), "u1");
    assert_eq!(browser.text("#total"), "1 customers, 1–1");
    browser.screenshot("pressure-cell");
    // The over-pressured, two a page: u5 and u9 (+3), then u1, u4, u8 (+1).
    browser.page(
        &base,
        "/ui/pressure/contacts?list=over&per=2",
        "pressure-list",
    );
    let page_ids = |b: &Browser| {
        b.js("return [...document.querySelectorAll('#cell tr.customer td:first-child a')].map(a => a.textContent);")
    };
    assert_eq!(page_ids(&browser), json!(["u5", "u9"]));
    browser.click("#next");
    wait_until("page 2 never came", 60, || browser.url().contains("page=2"));
    assert_eq!(page_ids(&browser), json!(["u1", "u4"]));
    browser.page(
        &base,
        "/ui/pressure/contacts?list=over&per=2&page=3",
        "pressure-list-3",
    );
    assert_eq!(page_ids(&browser), json!(["u8"]));
    assert_eq!(browser.count("#next"), 0);
    browser.page(&base, "/ui/pressure/contacts?list=under", "pressure-under");
    assert_eq!(page_ids(&browser), json!(["u0", "u2", "u6"]));

    // Follow-ups: the nurture sequence's welcome email went to n1–n3.
    browser.until(
        &base,
        "/ui/followups",
        "the welcome emails were never sent",
        |b| {
            b.data(
                "#campaigns tr.campaign[data-name=prospects_target_1_2]",
                "sent",
            ) == ["3"]
        },
    );
    assert_eq!(browser.console_errors(), Vec::<String>::new());
    assert_eq!(
        browser.data(
            "#campaigns tr.campaign[data-name=prospects_target_1_2]",
            "contacts"
        ),
        ["3"]
    );
    assert_eq!(
        browser.bars("#campaigns rect.bar[data-x=prospects_target_1_2]"),
        [
            ("prospects_target_1_2".to_string(), 3.0),
            ("prospects_target_1_2".to_string(), 0.0),
            ("prospects_target_1_2".to_string(), 0.0),
            ("prospects_target_1_2".to_string(), 0.0),
            ("prospects_target_1_2".to_string(), 0.0)
        ],
        "reached, opened, clicked in and off target, converted"
    );
    assert!(browser.count("#table tr.followup") >= 4);
    browser.screenshot("followups");

    // Call desk: the hot leads (and the call their crossing asked for),
    // the pricing visit's call task, then the call-back.
    browser.until(
        &base,
        "/ui/calls",
        "the call desk never listed the calls",
        |b| b.data("#today tr.to-call", "contact") == ["h1", "h2", "pv1", "cb1"],
    );
    assert_eq!(browser.console_errors(), Vec::<String>::new());
    let why = |b: &Browser, c: &str| b.text(&format!("#today tr[data-contact={c}] td.why"));
    assert!(
        why(&browser, "h1").contains("hot lead not called lately"),
        "{}",
        why(&browser, "h1")
    );
    assert!(
        why(&browser, "pv1").contains("pricing_visit_call asked for a call"),
        "{}",
        why(&browser, "pv1")
    );
    let callback = (*START - chrono::Duration::hours(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    assert!(
        why(&browser, "cb1").contains(&format!("call-back agreed for {callback}")),
        "{}",
        why(&browser, "cb1")
    );
    // KPIs: the day before yesterday 4 calls, 2 pitches, 1 meeting;
    // yesterday 2 calls, 2 pitches, 1 meeting; the trend against the day
    // before.
    assert_eq!(
        browser.data("#periods tr.period", "label"),
        [day(1), day(2)]
    );
    assert_eq!(browser.data("#periods tr.period", "calls"), ["2", "4"]);
    assert_eq!(browser.text("#appointment-rate"), "50%");
    assert!(
        browser
            .text(&format!("#periods tr.period[data-label=\"{}\"]", day(1)))
            .contains("▼ 50"),
        "refusals 50 % → 0 %"
    );
    assert_eq!(
        browser.count("#kpis svg.kpi-trend circle.pt"),
        3 * 2,
        "3 rates × 2 days"
    );
    assert_eq!(
        browser.numbers(
            "#kpis svg.kpi-calls circle.pt[data-series=calls]",
            "data-value"
        ),
        [4.0, 2.0]
    );
    browser.screenshot("calls");
    // A meeting booked with h1 from the page: a third day, 3 meetings in 5
    // pitches; h1 called, no longer a lead to call.
    browser.js("const f = document.querySelector('#today tr[data-contact=h1] form'); f.querySelector('select').value = 'RDV'; f.submit(); return 1;");
    browser.until(
        &base,
        "/ui/calls",
        "the outcome never reached the KPIs",
        |b| b.data("#periods tr.period", "calls") == ["1", "2", "4"],
    );
    assert_eq!(browser.text("#appointment-rate"), "60%");
    assert!(
        !browser
            .data("#today tr.to-call", "contact")
            .contains(&"h1".to_string())
    );
    browser.screenshot("calls-outcome");

    // CSRF: a form posted without its token is refused, nothing erased.
    let a = http.send(
        "/ui/contact/erase",
        &format!("relance_ui={session}"),
        Some(&[("id", "k5"), ("confirm", "k5")]),
    );
    assert_eq!(a.status, 403);
    let a = http.send(
        "/ui/contact/erase",
        &format!("relance_ui={session}"),
        Some(&[("csrf", "forged"), ("id", "k5"), ("confirm", "k5")]),
    );
    assert_eq!(a.status, 403);
    let a = http.send(
        "/ui/calls/outcome",
        &format!("relance_ui={session}"),
        Some(&[("contact", "k5"), ("code", "RDV")]),
    );
    assert_eq!(a.status, 403);
    assert!(env.run(&["score", "k5"]).status.success(), "still there");

    // Read-only: pages yes, erase and outcome no, even with a good token.
    let (a, reader) = http.login(READER, "/ui/contact?id=k5");
    assert_eq!((a.status, a.location.as_str()), (303, "/ui/contact?id=k5"));
    let page = http.send("/ui/contact?id=k5", &reader, None);
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("erase-form"),
        "no erase form for a reader"
    );
    let calls = http.send("/ui/calls", &reader, None);
    assert_eq!(calls.status, 200);
    assert!(
        !calls.body.contains("class=\"outcome\""),
        "no outcome form for a reader"
    );
    let csrf = csrf_of(&page.body);
    let a = http.send(
        "/ui/contact/erase",
        &reader,
        Some(&[("csrf", &csrf), ("id", "k5"), ("confirm", "k5")]),
    );
    assert_eq!(a.status, 403);
    let a = http.send(
        "/ui/calls/outcome",
        &reader,
        Some(&[("csrf", &csrf), ("contact", "k5"), ("code", "RDV")]),
    );
    assert_eq!(a.status, 403);
    assert!(env.run(&["score", "k5"]).status.success(), "still there");

    // Erase customer u7, confirmed, as admin in the browser: its cell of
    // the pressure grid empties with it.
    browser.page(&base, "/ui/contact?id=u7", "contact-erase");
    browser.fill_and_submit("#confirm", "u7", "#erase-button");
    wait_until("the erasure never finished", 60, || {
        browser.url().contains("erased=1")
    });
    assert_eq!(browser.count("#profile"), 0);
    assert!(!env.run(&["score", "u7"]).status.success(), "erased");
    browser.page(&base, "/ui/pressure", "pressure-after-erase");
    assert_eq!(
        browser.numbers("#grid a[href$=\"p=1&v=1\"] rect.cell", "data-count"),
        [0.0]
    );

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
