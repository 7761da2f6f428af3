//! The CRM plugin, loaded as a shared library, against a real django-crm
//! (BottleCRM) on PostgreSQL and Redis, started by tests/servers/setup.sh
//! (which writes target/crm/env). Every check reads the CRM back over its
//! own API, so nothing here trusts the plugin's word.
// Test harness helpers (outside #[test] fns) may unwrap too.
#![allow(clippy::unwrap_used)]

mod plugins_support;

use plugins_support::{repo, request};
use relance::adapters::plugins::{Action, DeliverRequest, PluginHost, ScoreInfo};
use relance::ports::channels::Delivery;
use serde_json::{Value, json};
use std::path::Path;

struct Crm {
    url: String,
    /// The same CRM and database, with its Celery broker down.
    broker_down_url: String,
    token: String,
    http: reqwest::Client,
}

fn crm() -> Crm {
    let env = repo().join("target/crm/env");
    let text = std::fs::read_to_string(&env).unwrap_or_else(|_| {
        panic!(
            "{} is missing: the CRM is not running; run `bash tests/servers/setup.sh`",
            env.display()
        )
    });
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    Crm {
        url: get("CRM_URL"),
        broker_down_url: get("CRM_BROKER_DOWN_URL"),
        token: get("CRM_TOKEN"),
        http: reqwest::Client::new(),
    }
}

impl Crm {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }

    async fn patch(&self, path: &str, body: Value) {
        let r = self
            .http
            .patch(format!("{}/{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "PATCH {path}");
    }

    /// CRM contacts whose `source_ref` is the relance id `id`.
    async fn contacts_for(&self, id: &str, email: &str) -> Vec<Value> {
        let v = self.get(&format!("api/contacts/?email={email}")).await;
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["source_ref"] == id)
            .cloned()
            .collect()
    }
}

/// A run-unique suffix (the CRM's database outlives test runs).
fn unique(dir: &Path) -> String {
    dir.file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches(".tmp")
        .to_lowercase()
}

fn host(dir: &Path) -> PluginHost {
    plugins_support::dynamic_host(dir, "crm", 150)
}

async fn open(host: &PluginHost, name: &str, settings: serde_json::Value) {
    plugins_support::open_channel(host, name, "crm", "call", settings).await;
}

fn settings(c: &Crm) -> Value {
    json!({"url": c.url, "token": c.token, "allow_networks": ["127.0.0.0/8"], "owners": {"alice": "alice.owner@example.com"}})
}

fn contact_request(key: &str, id: &str, action: Action) -> DeliverRequest {
    let mut r = request(key, json!({}));
    r.channel = "phone".into();
    r.action = action;
    r.contact.id = id.into();
    r.contact.email = Some(format!("{id}@example.com"));
    r.contact.last_name = Some(format!("Rossi-{id}"));
    r.contact.owner = Some("alice".into());
    r.contact.status = Some("prospect".into());
    r
}

fn ok_id(d: Delivery) -> String {
    match d {
        Delivery::Ok {
            remote_id: Some(id),
            ..
        } => id,
        other => panic!("expected ok, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_reach_the_crm_record_without_duplicates() {
    let crm = crm();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("martino-{}", unique(dir.path()));
    let host = host(dir.path());
    open(&host, "phone", settings(&crm)).await;

    let mut r = contact_request("score-1", &id, Action::ScoreUpdate);
    r.score = Some(ScoreInfo {
        score: 215.0,
        band: "hot".into(),
    });
    let crm_id = ok_id(host.deliver("phone", r.clone()).await.unwrap());
    let record = crm.get(&format!("api/contacts/{crm_id}/")).await;
    let record = if record["contact_obj"].is_object() {
        &record["contact_obj"]
    } else {
        &record
    };
    assert_eq!(record["custom_fields"]["relance_score"], json!(215.0));
    assert_eq!(record["custom_fields"]["relance_band"], "hot");
    assert_eq!(record["custom_fields"]["relance_status"], "prospect");
    assert_eq!(record["source_ref"], json!(id));
    let owners: Vec<&str> = record["assigned_to"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["user_details"]["email"].as_str())
        .collect();
    assert_eq!(owners, ["alice.owner@example.com"]);

    // A fresh instance (no cache) pushing a new score finds the same record.
    let other = host_dir_second(&crm).await;
    r.score = Some(ScoreInfo {
        score: 140.0,
        band: "warm".into(),
    });
    assert_eq!(ok_id(other.0.deliver("phone", r).await.unwrap()), crm_id);
    assert_eq!(
        crm.contacts_for(&id, &format!("{id}@example.com"))
            .await
            .len(),
        1
    );
    let record = crm.get(&format!("api/contacts/{crm_id}/")).await;
    let record = if record["contact_obj"].is_object() {
        &record["contact_obj"]
    } else {
        &record
    };
    assert_eq!(record["custom_fields"]["relance_band"], "warm");
}

async fn host_dir_second(crm: &Crm) -> (PluginHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let h = host(dir.path());
    open(&h, "phone", settings(crm)).await;
    (h, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_follow_up_becomes_one_call_task_for_the_owner() {
    let crm = crm();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("rajati-{}", unique(dir.path()));
    let host = host(dir.path());
    open(&host, "phone", settings(&crm)).await;
    let key = format!("call-{id}");
    let mut r = contact_request(&key, &id, Action::CallTask);
    r.message.text = Some("Call {{first_name}}: {{reason}}".into());
    r.vars
        .insert("reason".into(), json!("visited the pricing page twice"));

    let task = ok_id(host.deliver("phone", r.clone()).await.unwrap());
    // Retried (e.g. after a timeout) from a fresh instance: the same task.
    let again = host_dir_second(&crm).await;
    assert_eq!(ok_id(again.0.deliver("phone", r).await.unwrap()), task);

    let v = crm
        .get(&format!("api/tasks/?title=%5Brelance%3A{key}%5D"))
        .await;
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{v}");
    let t = &tasks[0];
    assert!(
        t["title"]
            .as_str()
            .unwrap()
            .starts_with("Call Martino: visited the pricing page twice")
    );
    assert_eq!(t["priority"], "High");
    assert_eq!(t["due_date"], "2026-11-20");
    let assignees: Vec<&str> = t["assigned_to"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["user_details"]["email"].as_str())
        .collect();
    assert_eq!(assignees, ["alice.owner@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_messages_are_logged_once_and_changes_pulled_back() {
    let crm = crm();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("beltrani-{}", unique(dir.path()));
    let host = host(dir.path());
    open(&host, "phone", settings(&crm)).await;
    let key = format!("mail-{id}");
    let mut r = contact_request(&key, &id, Action::Activity);
    r.message.subject = Some("Invitation: our payroll seminar".into());
    r.message.text = Some("Hello {{first_name}}".into());
    let act = ok_id(host.deliver("phone", r.clone()).await.unwrap());
    assert_eq!(ok_id(host.deliver("phone", r).await.unwrap()), act);

    let crm_id = crm.contacts_for(&id, &format!("{id}@example.com")).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = crm
        .get(&format!("api/interactions/?contact={crm_id}"))
        .await;
    let logged: Vec<&Value> = v["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["body"].as_str().unwrap().contains(&key))
        .collect();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["kind"], "email");
    assert_eq!(logged[0]["direction"], "outbound");
    assert_eq!(logged[0]["subject"], "Invitation: our payroll seminar");

    // A sales person marks the contact do-not-call in the CRM...
    crm.patch(
        &format!("api/contacts/{crm_id}/"),
        json!({"do_not_call": true, "phone": "+33 1 23 45 67 89"}),
    )
    .await;
    // ...and relance pulls the change back.
    let mut pull = contact_request(&format!("pull-{id}"), &id, Action::PullChanges);
    pull.vars
        .insert("since".into(), json!("2000-01-01T00:00:00Z"));
    let Delivery::Ok {
        data: Some(data), ..
    } = host.deliver("phone", pull).await.unwrap()
    else {
        panic!("pull failed")
    };
    let mine: Vec<&Value> = data["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["contact"] == json!(id))
        .collect();
    assert_eq!(mine.len(), 1, "{data}");
    assert_eq!(mine[0]["do_not_call"], true);
    assert_eq!(mine[0]["crm_id"], json!(crm_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_permanent_and_an_unreachable_crm_retryable() {
    let crm = crm();
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    open(
        &host,
        "bad-token",
        json!({"url": crm.url, "token": "bcrm_pat_not-a-real-token", "allow_networks": ["127.0.0.0/8"]}),
    )
    .await;
    match host
        .deliver("bad-token", contact_request("k", "x", Action::CallTask))
        .await
        .unwrap()
    {
        Delivery::Permanent { reason, .. } => {
            assert!(reason.contains("refused the token"), "{reason}");
            assert!(!reason.contains("not-a-real-token"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    open(
        &host,
        "down",
        json!({"url": format!("http://127.0.0.1:{port}"), "token": crm.token, "allow_networks": ["127.0.0.0/8"]}),
    )
    .await;
    assert!(matches!(
        host.deliver("down", contact_request("k", "x", Action::CallTask))
            .await
            .unwrap(),
        Delivery::Retryable { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_a_sales_person_already_created_is_reused() {
    let crm = crm();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("nathalie-{}", unique(dir.path()));
    let email = format!("{id}@example.com");
    // Entered by hand in the CRM, under another spelling, with no relance id.
    let r = crm
        .http
        .post(format!("{}/api/contacts/", crm.url))
        .bearer_auth(&crm.token)
        .header("content-type", "application/json")
        .body(
            json!({"first_name": "Nat", "last_name": "Typed-By-Hand", "email": email}).to_string(),
        )
        .send()
        .await
        .unwrap();
    // This CRM may answer 500 although the contact was created.
    assert!(
        r.status() == 201 || r.status() == 200 || r.status() == 500,
        "{}",
        r.status()
    );
    let by_hand = crm.get(&format!("api/contacts/?email={email}")).await["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let host = host(dir.path());
    open(&host, "phone", settings(&crm)).await;
    let mut req = contact_request("score-n", &id, Action::ScoreUpdate);
    req.score = Some(ScoreInfo {
        score: 235.0,
        band: "hot".into(),
    });
    assert_eq!(ok_id(host.deliver("phone", req).await.unwrap()), by_hand);
    let v = crm.get(&format!("api/contacts/?email={email}")).await;
    assert_eq!(v["count"], 1, "no second record: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_committed_before_a_500_are_found_not_repeated() {
    let crm = crm();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("albert-{}", unique(dir.path()));
    let host = host(dir.path());
    // With its broker down, this CRM commits a new contact, then fails to
    // queue its follow-up job and answers 500 (after about 20 s of retries).
    open(
        &host,
        "phone",
        json!({"url": crm.broker_down_url, "token": crm.token, "timeout_secs": 80, "allow_networks": ["127.0.0.0/8"],
               "owners": {"alice": "alice.owner@example.com"}}),
    )
    .await;
    let key = format!("call-{id}");
    let r = contact_request(&key, &id, Action::CallTask);
    let task = ok_id(host.deliver("phone", r).await.unwrap());

    assert_eq!(
        crm.contacts_for(&id, &format!("{id}@example.com"))
            .await
            .len(),
        1
    );
    let v = crm
        .get(&format!("api/tasks/?title=%5Brelance%3A{key}%5D"))
        .await;
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{v}");
    assert_eq!(tasks[0]["id"], json!(task));
    let log = std::fs::read_to_string(repo().join("target/crm/gunicorn-broker-down.access.log"))
        .unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("POST /api/contacts/") && l.contains("\" 500 ")),
        "the CRM did answer 500"
    );
}

/// The CRM URL stands behind the same SSRF guard as webhooks: an internal
/// address, however spelt, or a name resolving to one, is refused without
/// a connection unless `allow_networks` lets it through. Needs no CRM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_an_internal_crm_url_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for (name, url, why) in [
        ("v4", format!("http://127.0.0.1:{port}"), "loopback"),
        ("decimal", format!("http://2130706433:{port}"), "loopback"),
        (
            "mapped",
            format!("http://[::ffff:127.0.0.1]:{port}"),
            "IPv4-mapped",
        ),
        (
            "metadata",
            "http://169.254.169.254".to_string(),
            "cloud metadata",
        ),
        ("name", format!("http://localhost:{port}"), "loopback"),
    ] {
        open(&host, name, json!({"url": url, "token": "bcrm_pat_x"})).await;
        match host
            .deliver(name, contact_request("k", "x", Action::CallTask))
            .await
            .unwrap()
        {
            Delivery::Permanent { reason, .. } => assert!(
                reason.contains("SSRF guard") && reason.contains(why),
                "{name}: {reason}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(listener.accept().is_err(), "nothing connected");
    // Allowed explicitly: the request goes out (and meets a closed door).
    drop(listener);
    open(
        &host,
        "allowed",
        json!({"url": format!("http://127.0.0.1:{port}"), "token": "bcrm_pat_x",
               "allow_networks": ["127.0.0.0/8"]}),
    )
    .await;
    match host
        .deliver("allowed", contact_request("k", "x", Action::CallTask))
        .await
        .unwrap()
    {
        Delivery::Retryable { reason, .. } => assert!(!reason.contains("SSRF"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
