//! What a template sees: the contact, its company, its score and band, the
//! follow-up and the tracking links.
//!
//! The old `{{field}}` names stay at the top level (`first_name`,
//! `company.name`, `score`, a contact attribute by its name …) so existing
//! templates render the same; `contact`, `company`, `followup` and `links`
//! hold the same data structured. Empty and null values are left out, so
//! `default("…")` applies to them.

use minijinja::Value;
use relance_plugin_api::message::{Company, Contact, DeliverRequest};
use std::collections::BTreeMap;

type Map = BTreeMap<String, Value>;

/// A JSON value as a template value; `None` for null.
fn value(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        serde_json::Value::String(s) if s.is_empty() => return None,
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().filter_map(value).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => Value::from(object(o)),
    })
}

fn object(o: &serde_json::Map<String, serde_json::Value>) -> Map {
    o.iter()
        .filter_map(|(k, v)| Some((k.clone(), value(v)?)))
        .collect()
}

fn put(map: &mut Map, key: &str, v: &Option<String>) {
    if let Some(v) = v.as_deref().filter(|v| !v.trim().is_empty()) {
        map.insert(key.to_string(), Value::from(v));
    }
}

fn contact_map(c: &Contact) -> Map {
    let attributes = object(&c.attributes);
    // Attributes first, so a known field of the same name wins.
    let mut m = attributes.clone();
    m.insert("id".into(), Value::from(c.id.as_str()));
    put(&mut m, "email", &c.email);
    put(&mut m, "phone", &c.phone);
    put(&mut m, "first_name", &c.first_name);
    put(&mut m, "last_name", &c.last_name);
    put(&mut m, "owner", &c.owner);
    put(&mut m, "status", &c.status);
    m.insert("attributes".into(), Value::from(attributes));
    m
}

fn company_map(co: &Company) -> Map {
    let attributes = object(&co.attributes);
    let mut m = attributes.clone();
    m.insert("id".into(), Value::from(co.id.as_str()));
    put(&mut m, "name", &co.name);
    m.insert("attributes".into(), Value::from(attributes));
    m
}

/// A score as `{{field}}` templates printed it: `215`, not `215.0`.
fn score_value(score: f64) -> Value {
    if score.fract() == 0.0 && score.abs() < 1e15 {
        Value::from(score as i64)
    } else {
        Value::from(score)
    }
}

/// The follow-up: its rule's `name`, `kind`, `reason` (why it is sent:
/// the rule's name), `step` (1 for a sequence's first step), `deadline`,
/// `signal` (the event or score change that triggered it).
fn followup_map(vars: &serde_json::Map<String, serde_json::Value>) -> Map {
    let mut m = Map::new();
    let text = |k: &str| vars.get(k).and_then(serde_json::Value::as_str);
    if let Some(name) = text("followup") {
        m.insert("name".into(), Value::from(name));
        // Why the message goes out: the send's own reason, else its rule.
        m.insert("reason".into(), Value::from(text("reason").unwrap_or(name)));
    }
    if let Some(kind) = text("kind") {
        m.insert("kind".into(), Value::from(kind));
    }
    if let Some(deadline) = text("deadline") {
        m.insert("deadline".into(), Value::from(deadline));
    }
    if let Some(o) = vars.get("occurrence") {
        match o.get("type").and_then(serde_json::Value::as_str) {
            Some("step") => {
                if let Some(i) = o.get("index").and_then(serde_json::Value::as_u64) {
                    m.insert("step".into(), Value::from(i + 1));
                }
            }
            Some("signal") => {
                if let Some(s) = o.get("signal").and_then(serde_json::Value::as_str) {
                    m.insert("signal".into(), Value::from(s));
                }
            }
            Some("broadcast") => {
                if let Some(id) = o.get("id").and_then(serde_json::Value::as_str) {
                    m.insert("broadcast".into(), Value::from(id));
                }
            }
            _ => {}
        }
    }
    m
}

/// The follow-up: prints as its name (as `{{followup}}` did), with its
/// fields as attributes (`followup.kind`, `followup.step` …).
#[derive(Debug)]
struct FollowUp(Map);

impl minijinja::value::Object for FollowUp {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }

    fn get_value(self: &std::sync::Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key.as_str()?).cloned()
    }

    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get("name") {
            Some(name) => write!(f, "{name}"),
            None => Ok(()),
        }
    }
}

/// The context of `request`: what its templates render with.
pub fn build(request: &DeliverRequest) -> Value {
    let c = &request.contact;
    let contact = contact_map(c);
    let followup = followup_map(&request.vars);
    // Top level, lowest priority first: attributes, the request's extra
    // fields, the follow-up's, then the contact's own fields.
    let mut top = object(&c.attributes);
    for (k, v) in object(&request.vars) {
        if k != "followup" && k != "occurrence" {
            top.insert(k, v);
        }
    }
    for key in ["reason", "step", "kind", "deadline"] {
        if let Some(v) = followup.get(key) {
            top.insert(key.into(), v.clone());
        }
    }
    for key in [
        "id",
        "email",
        "phone",
        "first_name",
        "last_name",
        "owner",
        "status",
    ] {
        match contact.get(key) {
            Some(v) => top.insert(key.into(), v.clone()),
            None => top.remove(key),
        };
    }
    if let Some(co) = &c.company {
        top.insert("company".into(), Value::from(company_map(co)));
    } else {
        top.remove("company");
    }
    if let Some(s) = &request.score {
        top.insert("score".into(), score_value(s.score));
        top.insert("band".into(), Value::from(s.band.as_str()));
    }
    let mut links = Map::new();
    if let Some(u) = request.vars.get("unsubscribe_url").and_then(value) {
        links.insert("unsubscribe".into(), u);
    }
    top.insert("links".into(), Value::from(links));
    top.insert("followup".into(), Value::from_object(FollowUp(followup)));
    top.insert("contact".into(), Value::from(contact));
    Value::from(top)
}

/// The contact's language, from its `language` attribute.
pub fn language(contact: &Contact) -> Option<&str> {
    contact
        .attributes
        .get("language")
        .and_then(serde_json::Value::as_str)
}
