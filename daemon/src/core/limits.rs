//! Every length limit on text that comes in (HTTP API, imports, the
//! command line), in one place. A value over its limit is refused with a
//! message that starts with the field's name (`name: …`), which the API
//! turns into `field` and the imports print with the line number.
//!
//! Without limits one 100 KB broadcast name, copied into every planned send,
//! grew the store by megabytes per contact and the payloads with it.

use serde_json::{Map, Value};

/// Ids and names that other records point at: contact, company, deal,
/// event and broadcast ids, event types, channel and template names, the
/// keys of attributes, props, consent and do-not-contact.
pub const ID_MAX: usize = 256;
/// Free text a person reads: broadcast and deal names, a contact's names,
/// email, phone, owner, tier, a deal's stage, a company's name.
pub const TEXT_MAX: usize = 1_024;
/// An event's `props`, a record's attributes (each, as compact JSON), a
/// broadcast's segment.
pub const JSON_MAX: usize = 16 * 1_024;
/// Business signals given on one company line.
pub const SIGNALS_MAX: usize = 100;
/// How much of a refused value a message repeats.
const SHOWN: usize = 64;

/// Refuses `value` when longer than `max` bytes, naming `field`.
pub fn check(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!(
            "{field}: {} bytes, at most {max} are accepted",
            value.len()
        ))
    } else {
        Ok(())
    }
}

/// Refuses a key of `field` (an attribute, a prop, a channel) longer than
/// [`ID_MAX`].
pub fn check_key(field: &str, key: &str) -> Result<(), String> {
    if key.len() > ID_MAX {
        Err(format!(
            "{field}: a key of {} bytes, at most {ID_MAX} are accepted",
            key.len()
        ))
    } else {
        Ok(())
    }
}

/// [`check`] on an optional JSON string (other types are left to the
/// field's own validation).
pub fn check_value(field: &str, value: Option<&Value>, max: usize) -> Result<(), String> {
    match value {
        Some(Value::String(s)) => check(field, s, max),
        _ => Ok(()),
    }
}

/// Refuses an object whose compact JSON is over [`JSON_MAX`] or whose keys
/// are over [`ID_MAX`], naming the key at fault when one is.
pub fn check_object(field: &str, map: &Map<String, Value>) -> Result<(), String> {
    check_entries(field, map.iter())
}

/// [`check_object`] over any map's entries.
pub fn check_entries<'a>(
    field: &str,
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
) -> Result<(), String> {
    let mut total = 2;
    for (k, v) in entries {
        check_key(field, k)?;
        let size = json_len(v);
        if size > JSON_MAX {
            return Err(format!(
                "{field}.{}: {size} bytes of JSON, at most {JSON_MAX} are accepted",
                shown(k)
            ));
        }
        total += k.len() + size + 4;
    }
    if total > JSON_MAX {
        return Err(format!(
            "{field}: {total} bytes of JSON, at most {JSON_MAX} are accepted"
        ));
    }
    Ok(())
}

/// What a new broadcast says, by field, before anything else is checked:
/// the API and `relance broadcast create` refuse the same things with the
/// same messages. `segment_len` is the size of the segment as written.
pub fn check_broadcast(
    id: &str,
    name: &str,
    channel: &str,
    template: &str,
    segment_len: usize,
) -> Result<(), String> {
    check("id", id, ID_MAX)?;
    check("name", name, TEXT_MAX)?;
    check("channel", channel, ID_MAX)?;
    check("template", template, ID_MAX)?;
    if segment_len > JSON_MAX {
        return Err(format!(
            "segment: {segment_len} bytes, at most {JSON_MAX} are accepted"
        ));
    }
    Ok(())
}

/// The size of `v` as compact JSON.
pub fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// At most the first [`SHOWN`] characters of `s`, for messages that quote
/// what they refuse.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_name_the_field_and_never_repeat_a_long_value() {
        assert!(check("name", &"x".repeat(TEXT_MAX), TEXT_MAX).is_ok());
        let e = check("name", &"x".repeat(TEXT_MAX + 1), TEXT_MAX).unwrap_err();
        assert!(e.starts_with("name: 1025 bytes"), "{e}");
        let Value::Object(big) = json!({"url": "y".repeat(JSON_MAX)}) else {
            panic!()
        };
        let e = check_object("props", &big).unwrap_err();
        assert!(e.starts_with("props.url: "), "{e}");
        let Value::Object(many) = json!(
            (0..20)
                .map(|i| (format!("k{i}"), json!("z".repeat(1_000))))
                .collect::<Map<_, _>>()
        ) else {
            panic!()
        };
        assert!(
            check_object("props", &many)
                .unwrap_err()
                .starts_with("props: ")
        );
        assert_eq!(shown(&"é".repeat(100)).chars().count(), SHOWN + 1);
    }
}
