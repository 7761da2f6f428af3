//! Ingest: turns lines of CSV or JSONL into validated patches and events.
//! Pure: parsing and validation only; the store applies what passes.
//!
//! A patch carries only what the line says: an empty CSV cell or an absent
//! JSON key leaves the stored value as it is, so importing a narrower file
//! later loses nothing.

pub mod patch;
pub mod range;
mod reader;

pub use patch::{Kind, Patch, Record};
pub use range::{IngestConfig, InstantRange};
pub use reader::{Format, Line, LineError, parse_patch, read_event_lines, read_lines};

use crate::core::limits::{self, ID_MAX};
use crate::core::model::{BusinessSignal, Event, Timestamp};
use serde_json::{Map, Value};

/// An accepted event line: either about a contact, or a business signal
/// about a company (`{"company": …, "type": "business_signal"}`).
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Contact(Event),
    Company {
        company: String,
        signal: BusinessSignal,
    },
}

impl Incoming {
    /// The key that makes re-ingesting the same event a no-op: a hash of the
    /// producer's id when there is one, else of the event's content.
    pub fn dedup_key(&self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut part = |p: &str| {
            h.update(p.as_bytes());
            h.update([0]);
        };
        match self {
            Incoming::Contact(e) => match &e.id {
                Some(id) => return id_key(id),
                None => {
                    part("event");
                    part(&e.contact);
                    part(&e.kind);
                    part(&e.at.to_rfc3339());
                    part(e.channel.as_deref().unwrap_or(""));
                    part(&Value::Object(e.props.clone()).to_string());
                }
            },
            Incoming::Company { company, signal } => {
                part("signal");
                part(company);
                part(&signal.kind);
                part(&signal.at.to_rfc3339());
                part(&Value::Object(signal.props.clone()).to_string());
            }
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

/// The de-duplication key of an event with the producer's id `id`: the id
/// alone decides, whatever the event's contact or content.
pub fn id_key(id: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in ["id", id] {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&h.finalize()[..16]);
    key
}

/// Deserializes `value`, naming the field at fault in the error
/// (`at: …`, `status: …`), so that a rejected line says what to fix.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names a missing field only in its message: name it first.
        let missing = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| inner.strip_prefix(p))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name);
        match (path.as_str(), missing) {
            (".", Some(name)) => format!("{name}: {inner}"),
            (_, Some(name)) => format!("{path}.{name}: {inner}"),
            (".", None) => inner,
            _ => format!("{path}: {inner}"),
        }
    })
}

/// Validates one JSON event object.
pub fn parse_event(value: Value) -> Result<Incoming, String> {
    let Value::Object(mut obj) = value else {
        return Err("an event must be a JSON object".into());
    };
    // Lengths first, so that no later message repeats a huge value.
    for field in ["id", "contact", "company", "type", "channel"] {
        limits::check_value(field, obj.get(field), ID_MAX)?;
    }
    if let Some(Value::Object(props)) = obj.get("props") {
        limits::check_object("props", props)?;
    }
    let company = match obj.remove("company") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(_) => return Err("company: must be a non-empty string".into()),
    };
    if let Some(company) = company {
        if obj.contains_key("contact") {
            return Err("give either `contact` or `company`, not both".into());
        }
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind != crate::core::model::event_types::BUSINESS_SIGNAL {
            return Err(format!(
                "type: a company event must be `business_signal`, not `{kind}`"
            ));
        }
        let at = parse_at(obj.get("at"))?;
        let mut props = match obj.remove("props") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err("props: must be an object".into()),
        };
        let signal_kind = match props.remove("kind") {
            Some(Value::String(k)) if !k.trim().is_empty() => k,
            _ => return Err("props.kind: a business signal needs its kind".into()),
        };
        return Ok(Incoming::Company {
            company,
            signal: BusinessSignal {
                kind: signal_kind,
                at,
                props,
            },
        });
    }
    let event: Event = typed(Value::Object(obj))?;
    if event.contact.trim().is_empty() {
        return Err("contact: must not be empty".into());
    }
    if event.kind.trim().is_empty() {
        return Err("type: must not be empty".into());
    }
    if event.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
        return Err("id: must not be empty when given".into());
    }
    Ok(Incoming::Contact(event))
}

fn parse_at(v: Option<&Value>) -> Result<Timestamp, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| "at: missing field, expected an RFC 3339 instant".to_string())?;
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!(
                "at: `{}` is not an RFC 3339 instant ({e})",
                limits::shown(s)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_validated_with_the_field_named() {
        let ok = parse_event(
            json!({"contact": "c1", "type": "call", "at": "2026-01-05T10:00:00+01:00", "props": {"outcome": "RDV"}}),
        );
        let Ok(Incoming::Contact(e)) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(e.at.to_rfc3339(), "2026-01-05T09:00:00+00:00");

        let err =
            parse_event(json!({"contact": "c1", "type": "call", "at": "yesterday"})).unwrap_err();
        assert!(err.starts_with("at:"), "{err}");
        let err = parse_event(json!({"contact": "c1", "at": "2026-01-05T10:00:00Z"})).unwrap_err();
        assert!(err.contains("type"), "{err}");
        let err = parse_event(json!({"contact": "", "type": "call", "at": "2026-01-05T10:00:00Z"}))
            .unwrap_err();
        assert!(err.starts_with("contact:"), "{err}");
    }

    #[test]
    fn company_signals_and_dedup_keys() {
        let s = parse_event(json!({"company": "acme", "type": "business_signal", "at": "2026-01-05T10:00:00Z", "props": {"kind": "new_site"}})).expect("valid");
        assert!(matches!(&s, Incoming::Company { signal, .. } if signal.kind == "new_site"));
        let a = parse_event(json!({"contact": "c1", "type": "call", "at": "2026-01-05T10:00:00Z"}))
            .expect("valid");
        let b = parse_event(
            json!({"contact": "c1", "type": "call", "at": "2026-01-05T11:00:00+01:00"}),
        )
        .expect("valid");
        let c = parse_event(json!({"contact": "c1", "type": "call", "at": "2026-01-05T10:00:01Z"}))
            .expect("valid");
        assert_eq!(a.dedup_key(), b.dedup_key(), "same instant, same event");
        assert_ne!(a.dedup_key(), c.dedup_key());
        let d = parse_event(
            json!({"id": "e-1", "contact": "c1", "type": "call", "at": "2026-01-05T10:00:00Z"}),
        )
        .expect("valid");
        let d2 = parse_event(json!({"id": "e-1", "contact": "c1", "type": "email_open", "at": "2026-01-06T10:00:00Z"})).expect("valid");
        assert_eq!(d.dedup_key(), d2.dedup_key(), "the producer's id decides");
    }
}
