//! The CRM channel, for BottleCRM (django-crm): pushes score, band and
//! status to the contact's record, turns a phone follow-up into a call task
//! for the contact's owner, logs sent messages as activities, and pulls
//! contact changes back.
//!
//! The CRM's API ignores client-side ids, so the plugin de-duplicates by
//! itself: it looks up before creating (contacts by `source_ref` = the
//! relance id, tasks and activities by a `[relance:KEY]` marker), treats
//! "already exists" as success, and after a 5xx or a lost answer looks up
//! again, since the write may have committed.

use relance_plugin_api::net::{Guard, GuardedResolver, refusal_in};
use relance_plugin_api::template::{Part, part};
use relance_plugin_api::{
    Action, Cancel, DeliverRequest, Health, HealthcheckRequest, Manifest, Outcome, PROTOCOL,
    Plugin, SettingDoc,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// The channel's `settings`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Base URL of the CRM (e.g. `https://crm.example.com`).
    url: String,
    /// A personal access token (`bcrm_pat_…`), from the environment.
    token: String,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// relance owner → CRM user email, when they differ.
    #[serde(default)]
    owners: BTreeMap<String, String>,
    /// Networks the SSRF guard lets through (an on-premises CRM, e.g.
    /// `["10.2.0.0/16"]`); nothing internal is reachable otherwise.
    #[serde(default)]
    allow_networks: Vec<String>,
}

fn default_timeout() -> u64 {
    15
}

/// Why a CRM step stopped, already classified.
type Step<T> = Result<T, Outcome>;

pub struct Crm {
    base: url::Url,
    token: String,
    owners: BTreeMap<String, String>,
    guard: std::sync::Arc<Guard>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// relance contact id → CRM contact id.
    contacts: Mutex<HashMap<String, String>>,
    /// CRM user email → profile id.
    profiles: Mutex<Option<HashMap<String, String>>>,
    fields_ready: Mutex<bool>,
}

impl std::fmt::Debug for Crm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crm")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

const SCORE_FIELDS: [(&str, &str, &str); 3] = [
    ("relance_score", "relance score", "number"),
    ("relance_band", "relance band", "text"),
    ("relance_status", "relance status", "text"),
];

fn marker(key: &str) -> String {
    format!("[relance:{key}]")
}

impl Plugin for Crm {
    fn manifest() -> Manifest {
        let doc = SettingDoc::new;
        Manifest {
            name: "crm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL,
            description: "BottleCRM (django-crm): scores, call tasks, activities, pull".into(),
            actions: vec![
                Action::Message,
                Action::CallTask,
                Action::ScoreUpdate,
                Action::Activity,
                Action::PullChanges,
            ],
            settings: vec![
                doc("url", true, false, "base URL of the CRM"),
                doc("token", true, true, "personal access token (bcrm_pat_…)"),
                doc(
                    "timeout_secs",
                    false,
                    false,
                    "per-request timeout (default 15)",
                ),
                doc("owners", false, false, "relance owner → CRM user email"),
                doc(
                    "allow_networks",
                    false,
                    false,
                    "networks the SSRF guard lets through, e.g. [\"10.2.0.0/16\"]",
                ),
            ],
            max_batch: 0,
        }
    }

    fn create(settings: Value) -> Result<Self, String> {
        let s: Settings =
            serde_json::from_value(settings).map_err(|e| format!("crm settings: {e}"))?;
        let mut base = url::Url::parse(&s.url).map_err(|e| format!("`url`: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("`url` must be http or https".into());
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        if s.token.trim().is_empty() {
            return Err("`token` is empty".into());
        }
        if base.host().is_none() {
            return Err("`url` must name a host".into());
        }
        let guard = std::sync::Arc::new(Guard::from_allow(&s.allow_networks)?);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(s.timeout_secs.max(1)))
            .dns_resolver(std::sync::Arc::new(GuardedResolver(guard.clone())))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        Ok(Self {
            base,
            token: s.token,
            owners: s.owners,
            guard,
            client,
            runtime,
            contacts: Mutex::new(HashMap::new()),
            profiles: Mutex::new(None),
            fields_ready: Mutex::new(false),
        })
    }

    fn deliver(&self, request: DeliverRequest, cancel: &Cancel) -> Outcome {
        let _entered = self.runtime.enter();
        self.runtime.block_on(async {
            let work = async {
                let step = match request.action {
                    Action::Message | Action::CallTask => self.call_task(&request).await,
                    Action::ScoreUpdate => self.score_update(&request).await,
                    Action::Activity => self.activity(&request).await,
                    Action::PullChanges => self.pull(&request).await,
                };
                step.unwrap_or_else(|o| o)
            };
            tokio::select! {
                _ = cancel.cancelled() => Outcome::retryable("cancelled by the host"),
                o = work => o,
            }
        })
    }

    fn healthcheck(&self, _request: HealthcheckRequest, _cancel: &Cancel) -> Health {
        let _entered = self.runtime.enter();
        match self
            .runtime
            .block_on(self.api(reqwest::Method::GET, "api/profile/", None))
        {
            Ok((200, _)) => Health {
                healthy: true,
                detail: "CRM answers and accepts the token".into(),
            },
            Ok((code, _)) => Health {
                healthy: false,
                detail: format!("CRM answered HTTP {code}"),
            },
            Err(o) => Health {
                healthy: false,
                detail: format!("{o:?}"),
            },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The classification of an unexpected HTTP status.
fn unexpected(code: u16, body: &Value, what: &str) -> Outcome {
    let detail = body.get("errors").unwrap_or(body).to_string();
    let detail: String = detail.chars().take(300).collect();
    match code {
        401 | 403 => Outcome::permanent(format!("{what}: the CRM refused the token (HTTP {code})")),
        408 | 429 | 500..=599 => Outcome::retryable(format!("{what}: HTTP {code}")),
        _ => Outcome::permanent(format!("{what}: HTTP {code}: {detail}")),
    }
}

fn already_exists(body: &Value) -> bool {
    body.to_string().to_lowercase().contains("already exists")
}

impl Crm {
    /// One API call. Transport failures are retryable; 429 carries its
    /// Retry-After; every other status is returned for the caller to judge.
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Step<(u16, Value)> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Outcome::permanent(format!("bad CRM path {path}: {e}")))?;
        // IP literals never reach the resolver: checked here.
        if let Some(host) = url.host_str() {
            self.guard
                .check_host(host)
                .map_err(|e| Outcome::permanent(e.to_string()))?;
        }
        let mut req = self
            .client
            .request(method, url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| match refusal_in(&e) {
            Some(refused) => Outcome::permanent(refused.to_string()),
            None => Outcome::retryable(format!("CRM unreachable: {e}")),
        })?;
        let code = resp.status().as_u16();
        if code == 429 {
            // A date is read against the answer's own `Date` (RFC 9110):
            // API calls carry no instant of the host's.
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
            let sent = header("date")
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            let retry_after_secs =
                header("retry-after").and_then(|v| relance_plugin_api::parse_retry_after(v, sent));
            return Err(Outcome::Retryable {
                retry_after_secs,
                reason: "CRM rate limit (HTTP 429)".into(),
            });
        }
        let text = resp
            .text()
            .await
            .map_err(|e| Outcome::retryable(format!("CRM answer lost: {e}")))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, value))
    }

    async fn get(&self, path: &str) -> Step<Value> {
        match self.api(reqwest::Method::GET, path, None).await? {
            (200, v) => Ok(v),
            (code, v) => Err(unexpected(code, &v, path)),
        }
    }

    /// The CRM profile id of the contact's owner, if the CRM knows them.
    async fn owner_profile(&self, r: &DeliverRequest) -> Step<Option<String>> {
        let Some(owner) = r.contact.owner.as_deref() else {
            return Ok(None);
        };
        let email = self.owners.get(owner).map(String::as_str).unwrap_or(owner);
        if lock(&self.profiles).is_none() {
            let v = self.get("api/users/").await?;
            let mut map = HashMap::new();
            for u in v["active_users"]["active_users"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let (Some(id), Some(e)) = (u["id"].as_str(), u["user_details"]["email"].as_str())
                {
                    map.insert(e.to_lowercase(), id.to_owned());
                }
            }
            *lock(&self.profiles) = Some(map);
        }
        Ok(lock(&self.profiles)
            .as_ref()
            .and_then(|m| m.get(&email.to_lowercase()).cloned()))
    }

    /// Finds the CRM contact of a relance contact: by `source_ref` (the
    /// relance id) among those with the same email or name, else by email.
    async fn find_contact(&self, r: &DeliverRequest) -> Step<Option<String>> {
        let c = &r.contact;
        let mut candidates = Vec::new();
        if let Some(email) = c.email.as_deref() {
            let v = self
                .get(&format!("api/contacts/?email={}", urlencode(email)))
                .await?;
            candidates.extend(v["results"].as_array().cloned().unwrap_or_default());
        }
        let name = c.last_name.as_deref().or(c.first_name.as_deref());
        if let Some(name) = name {
            let v = self
                .get(&format!("api/contacts/?name={}", urlencode(name)))
                .await?;
            candidates.extend(v["results"].as_array().cloned().unwrap_or_default());
        }
        let by_ref = candidates
            .iter()
            .find(|x| x["source_ref"].as_str() == Some(c.id.as_str()));
        let by_email = || {
            let email = c.email.as_deref()?.to_lowercase();
            candidates
                .iter()
                .find(|x| x["email"].as_str().map(str::to_lowercase).as_deref() == Some(&email))
        };
        Ok(by_ref
            .or_else(by_email)
            .and_then(|x| x["id"].as_str())
            .map(str::to_owned))
    }

    async fn ensure_contact(&self, r: &DeliverRequest) -> Step<String> {
        if let Some(id) = lock(&self.contacts).get(&r.contact.id) {
            return Ok(id.clone());
        }
        let found = match self.find_contact(r).await? {
            Some(id) => id,
            None => self.create_contact(r).await?,
        };
        lock(&self.contacts).insert(r.contact.id.clone(), found.clone());
        Ok(found)
    }

    async fn create_contact(&self, r: &DeliverRequest) -> Step<String> {
        let c = &r.contact;
        let mut body = json!({
            "first_name": c.first_name.clone().unwrap_or_else(|| "-".into()),
            "last_name": c.last_name.clone().unwrap_or_else(|| c.id.clone()),
            "email": c.email,
            "phone": c.phone,
            "organization": c.company.as_ref().and_then(|co| co.name.clone()),
            "source_ref": c.id,
        });
        if let Some(p) = self.owner_profile(r).await? {
            body["assigned_to"] = json!([p]);
        }
        let answer = self
            .api(reqwest::Method::POST, "api/contacts/", Some(body))
            .await;
        match &answer {
            Ok((200 | 201, v)) if v["id"].is_string() => {
                return Ok(v["id"].as_str().unwrap_or_default().to_owned());
            }
            Ok((200 | 201, _)) => {}
            Ok((400 | 409, v)) if already_exists(v) => {}
            Ok((code, v)) if *code < 500 => return Err(unexpected(*code, v, "create contact")),
            // 5xx or a lost answer: the insert may have committed.
            Ok(_) | Err(Outcome::Retryable { .. }) => {}
            Err(other) => return Err(other.clone()),
        }
        match self.find_contact(r).await? {
            Some(id) => Ok(id),
            None => match answer {
                Ok((code, v)) => Err(unexpected(code, &v, "create contact")),
                Err(o) => Err(o),
            },
        }
    }

    async fn ensure_fields(&self) -> Step<()> {
        if *lock(&self.fields_ready) {
            return Ok(());
        }
        let v = self.get("api/custom-fields/").await?;
        let list = v
            .as_array()
            .or_else(|| v["definitions"].as_array())
            .or_else(|| v["results"].as_array())
            .cloned()
            .unwrap_or_default();
        for (key, label, kind) in SCORE_FIELDS {
            let exists = list
                .iter()
                .any(|f| f["key"] == key && f["target_model"] == "Contact");
            if exists {
                continue;
            }
            let body =
                json!({"target_model": "Contact", "key": key, "label": label, "field_type": kind});
            match self
                .api(reqwest::Method::POST, "api/custom-fields/", Some(body))
                .await?
            {
                (200 | 201, _) => {}
                (400 | 409, v) if already_exists(&v) => {}
                (code, v) => return Err(unexpected(code, &v, "create custom field")),
            }
        }
        *lock(&self.fields_ready) = true;
        Ok(())
    }

    async fn score_update(&self, r: &DeliverRequest) -> Step<Outcome> {
        let score = r
            .score
            .as_ref()
            .ok_or_else(|| Outcome::permanent("a score update without a score"))?;
        self.ensure_fields().await?;
        let id = self.ensure_contact(r).await?;
        let body = json!({"custom_fields": {
            "relance_score": score.score,
            "relance_band": score.band,
            "relance_status": r.contact.status.clone().unwrap_or_default(),
        }});
        // Setting the same values twice is harmless: no de-duplication needed.
        match self
            .api(
                reqwest::Method::PATCH,
                &format!("api/contacts/{id}/"),
                Some(body),
            )
            .await?
        {
            (200 | 204, _) => Ok(Outcome::ok(id)),
            (404, _) => {
                lock(&self.contacts).remove(&r.contact.id);
                Err(Outcome::retryable(
                    "the CRM contact vanished; it is looked up again",
                ))
            }
            (code, v) => Err(unexpected(code, &v, "update contact")),
        }
    }

    async fn find_task(&self, key: &str) -> Step<Option<String>> {
        let m = marker(key);
        let v = self
            .get(&format!("api/tasks/?title={}", urlencode(&m)))
            .await?;
        Ok(v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["title"].as_str().is_some_and(|s| s.contains(&m)))
            .and_then(|t| t["id"].as_str())
            .map(str::to_owned))
    }

    async fn call_task(&self, r: &DeliverRequest) -> Step<Outcome> {
        if let Some(id) = self.find_task(&r.idempotency_key).await? {
            return Ok(Outcome::ok(id));
        }
        let contact = self.ensure_contact(r).await?;
        let owner = self.owner_profile(r).await?;
        let text = part(r, Part::Text).unwrap_or_else(|| {
            format!(
                "Call {} {}",
                r.contact.first_name.as_deref().unwrap_or_default(),
                r.contact.last_name.as_deref().unwrap_or_default()
            )
        });
        let short: String = text.chars().take(150).collect();
        let body = json!({
            "title": format!("{short} {}", marker(&r.idempotency_key)),
            "status": "New",
            "priority": "High",
            "due_date": r.now.date_naive().to_string(),
            "description": text,
            "contacts": [contact],
            "assigned_to": owner.into_iter().collect::<Vec<_>>(),
            "teams": [],
        });
        let answer = self
            .api(reqwest::Method::POST, "api/tasks/", Some(body))
            .await;
        match &answer {
            Ok((200 | 201, _)) | Ok((500..=599, _)) | Err(Outcome::Retryable { .. }) => {}
            Ok((400 | 409, v)) if already_exists(v) => {}
            Ok((code, v)) => return Err(unexpected(*code, v, "create task")),
            Err(other) => return Err(other.clone()),
        }
        // The API answers without the new id, and a 5xx may have committed.
        match self.find_task(&r.idempotency_key).await? {
            Some(id) => Ok(Outcome::ok(id)),
            None => match answer {
                Ok((code, v)) => Err(unexpected(code, &v, "create task")),
                Err(o) => Err(o),
            },
        }
    }

    async fn find_activity(&self, contact: &str, key: &str) -> Step<Option<String>> {
        let m = marker(key);
        let v = self
            .get(&format!("api/interactions/?contact={contact}&limit=200"))
            .await?;
        Ok(v["interactions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["body"].as_str().is_some_and(|b| b.contains(&m)))
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned))
    }

    async fn activity(&self, r: &DeliverRequest) -> Step<Outcome> {
        let contact = self.ensure_contact(r).await?;
        if let Some(id) = self.find_activity(&contact, &r.idempotency_key).await? {
            return Ok(Outcome::ok(id));
        }
        let kind = r
            .vars
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("email");
        let text = part(r, Part::Text);
        let body = json!({
            "kind": kind,
            "direction": "outbound",
            "occurred_at": r.now,
            "subject": part(r, Part::Subject).unwrap_or_default(),
            "body": format!("{}\n\n{}", text.unwrap_or_default(), marker(&r.idempotency_key)),
            "contact": contact,
        });
        let answer = self
            .api(reqwest::Method::POST, "api/interactions/", Some(body))
            .await;
        match &answer {
            Ok((200 | 201, v)) if v["id"].is_string() => {
                return Ok(Outcome::ok(v["id"].as_str().unwrap_or_default()));
            }
            Ok((200 | 201, _)) | Ok((500..=599, _)) | Err(Outcome::Retryable { .. }) => {}
            Ok((code, v)) => return Err(unexpected(*code, v, "log activity")),
            Err(other) => return Err(other.clone()),
        }
        match self.find_activity(&contact, &r.idempotency_key).await? {
            Some(id) => Ok(Outcome::ok(id)),
            None => match answer {
                Ok((code, v)) => Err(unexpected(code, &v, "log activity")),
                Err(o) => Err(o),
            },
        }
    }

    /// Contacts known to relance (with a `source_ref`) changed since
    /// `vars.since` (RFC 3339), as `data.contacts`.
    async fn pull(&self, r: &DeliverRequest) -> Step<Outcome> {
        let since = r
            .vars
            .get("since")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        let mut out = Vec::new();
        let mut offset = 0usize;
        for _ in 0..1000 {
            let v = self.get(&format!("api/contacts/?offset={offset}")).await?;
            let page = v["results"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            offset += page.len();
            for c in page {
                let Some(rid) = c["source_ref"].as_str().filter(|s| !s.is_empty()) else {
                    continue;
                };
                let updated = c["updated_at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                if let (Some(s), Some(u)) = (since, updated)
                    && u <= s
                {
                    continue;
                }
                out.push(json!({
                    "contact": rid,
                    "crm_id": c["id"],
                    "email": c["email"],
                    "phone": c["phone"],
                    "first_name": c["first_name"],
                    "last_name": c["last_name"],
                    "do_not_call": c["do_not_call"],
                    "is_active": c["is_active"],
                    "updated_at": c["updated_at"],
                    "custom_fields": c["custom_fields"],
                }));
            }
            if v["count"].as_u64().is_some_and(|n| offset as u64 >= n) {
                break;
            }
        }
        Ok(Outcome::Ok {
            remote_id: None,
            data: Some(json!({ "contacts": out })),
        })
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

relance_plugin_api::export_plugin!(Crm);
