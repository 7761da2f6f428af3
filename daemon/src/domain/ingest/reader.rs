//! Line readers for CSV (with a header row) and JSONL files.

use super::patch::{Kind, Patch};
use super::{Incoming, parse_event};
use serde_json::{Map, Value};
use std::io::{BufRead, Read};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// From the file name, else from the first byte (`{` means JSONL).
    pub fn detect(path: &Path, first_bytes: &[u8]) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Format::Csv,
            Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
            _ => match first_bytes.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => Format::Jsonl,
                _ => Format::Csv,
            },
        }
    }
}

/// One line of input, numbered from 1 as an editor shows it.
#[derive(Debug)]
pub struct Line<T> {
    pub number: u64,
    pub item: Result<T, String>,
}

/// A rejected line and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    pub line: u64,
    pub reason: String,
}

/// Reads contacts, companies or deals. Fails as a whole only when the file
/// cannot be understood at all (a CSV header without `id`).
pub fn read_lines<'r, R: Read + 'r>(
    reader: R,
    format: Format,
    kind: Kind,
) -> Result<Box<dyn Iterator<Item = Line<Patch>> + 'r>, String> {
    match format {
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(reader);
            let header: Vec<String> = csv
                .headers()
                .map_err(|e| format!("cannot read the CSV header: {e}"))?
                .iter()
                .map(|h| h.trim_start_matches('\u{feff}').to_string())
                .collect();
            if !header.iter().any(|h| h == "id") {
                return Err(format!(
                    "the CSV header has no `id` column (found: {})",
                    header.join(", ")
                ));
            }
            let width = header.len();
            Ok(Box::new(csv.into_records().map(move |rec| match rec {
                Err(e) => Line {
                    number: e.position().map_or(0, |p| p.line()),
                    item: Err(format!("unreadable CSV line: {e}")),
                },
                Ok(rec) => {
                    let number = rec.position().map_or(0, |p| p.line());
                    let item = if rec.len() != width {
                        Err(format!("has {} fields, the header has {width}", rec.len()))
                    } else {
                        csv_patch(&header, &rec, kind)
                    };
                    Line { number, item }
                }
            })))
        }
        Format::Jsonl => Ok(Box::new(json_lines(reader).map(move |(number, value)| {
            Line {
                number,
                item: value.and_then(|v| parse_patch(v, kind)),
            }
        }))),
    }
}

/// Reads events (JSONL).
pub fn read_event_lines<'r, R: Read + 'r>(reader: R) -> impl Iterator<Item = Line<Incoming>> + 'r {
    json_lines(reader).map(|(number, value)| Line {
        number,
        item: value.and_then(parse_event),
    })
}

fn json_lines<'r, R: Read + 'r>(
    reader: R,
) -> impl Iterator<Item = (u64, Result<Value, String>)> + 'r {
    std::io::BufReader::new(reader)
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let number = i as u64 + 1;
            match line {
                Err(e) => Some((number, Err(format!("unreadable line: {e}")))),
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some((
                    number,
                    serde_json::from_str(&l).map_err(|e| format!("invalid JSON: {e}")),
                )),
            }
        })
}

fn csv_patch(header: &[String], rec: &csv::StringRecord, kind: Kind) -> Result<Patch, String> {
    let mut patch = Patch::default();
    for (col, cell) in header.iter().zip(rec.iter()) {
        if cell.is_empty() {
            continue;
        }
        if col == "id" {
            patch.id = cell.to_string();
        } else if kind.known_fields().contains(&col.as_str()) {
            let value = if kind.is_numeric(col) {
                number(cell).ok_or_else(|| format!("{col}: `{cell}` is not a number"))?
            } else {
                Value::String(cell.to_string())
            };
            patch.fields.insert(col.clone(), value);
        } else if let (Kind::Contact, Some(channel)) = (kind, col.strip_prefix("consent_")) {
            patch
                .consent
                .insert(channel.to_string(), boolean(col, cell)?);
        } else if let (Kind::Contact, Some(channel)) = (kind, col.strip_prefix("dnc_")) {
            patch
                .do_not_contact
                .insert(channel.to_string(), boolean(col, cell)?);
        } else {
            patch.attributes.insert(col.clone(), typed(cell));
        }
    }
    finish(patch, kind)
}

/// Validates one JSON object describing a contact, company or deal.
pub fn parse_patch(value: Value, kind: Kind) -> Result<Patch, String> {
    let Value::Object(obj) = value else {
        return Err(format!("a {} must be a JSON object", kind.noun()));
    };
    let mut patch = Patch::default();
    for (key, value) in obj {
        match key.as_str() {
            "id" => match value {
                Value::String(s) => patch.id = s,
                Value::Number(n) => patch.id = n.to_string(),
                _ => return Err("id: must be a string".into()),
            },
            k if kind.known_fields().contains(&k) => {
                patch.fields.insert(key, value);
            }
            "attributes" => patch.attributes.extend(object(&key, value)?),
            "consent" if kind == Kind::Contact => {
                for (channel, v) in object(&key, value)? {
                    let on = v
                        .as_bool()
                        .ok_or_else(|| format!("consent.{channel}: must be true or false"))?;
                    patch.consent.insert(channel, on);
                }
            }
            "do_not_contact" if kind == Kind::Contact => match value {
                Value::Array(list) => {
                    for v in list {
                        let ch = v
                            .as_str()
                            .ok_or("do_not_contact: must list channel names")?;
                        patch.do_not_contact.insert(ch.to_string(), true);
                    }
                }
                Value::Object(map) => {
                    for (channel, v) in map {
                        let on = v.as_bool().ok_or_else(|| {
                            format!("do_not_contact.{channel}: must be true or false")
                        })?;
                        patch.do_not_contact.insert(channel, on);
                    }
                }
                _ => return Err("do_not_contact: must be a list of channels".into()),
            },
            "signals" if kind == Kind::Company => {
                patch.signals = serde_path_to_error::deserialize(value)
                    .map_err(|e| format!("signals{}: {}", e.path(), e.inner()))?;
            }
            _ => {
                patch.attributes.insert(key, value);
            }
        }
    }
    finish(patch, kind)
}

fn finish(patch: Patch, kind: Kind) -> Result<Patch, String> {
    if patch.id.trim().is_empty() {
        return Err(format!("id: missing, every {} needs its id", kind.noun()));
    }
    check_lengths(&patch)?;
    Ok(patch)
}

/// The limits of [`crate::core::limits`] on everything a line says.
fn check_lengths(patch: &Patch) -> Result<(), String> {
    use crate::core::limits::{
        ID_MAX, SIGNALS_MAX, TEXT_MAX, check, check_entries, check_key, check_object,
    };
    check("id", &patch.id, ID_MAX)?;
    for (field, value) in &patch.fields {
        let max = if matches!(field.as_str(), "company" | "contact") {
            ID_MAX
        } else {
            TEXT_MAX
        };
        crate::core::limits::check_value(field, Some(value), max)?;
    }
    for channel in patch.consent.keys() {
        check_key("consent", channel)?;
    }
    for channel in patch.do_not_contact.keys() {
        check_key("do_not_contact", channel)?;
    }
    check_entries("attributes", patch.attributes.iter())?;
    if patch.signals.len() > SIGNALS_MAX {
        return Err(format!(
            "signals: {} given, at most {SIGNALS_MAX} a line",
            patch.signals.len()
        ));
    }
    for (i, s) in patch.signals.iter().enumerate() {
        check(&format!("signals[{i}].kind"), &s.kind, ID_MAX)?;
        check_object(&format!("signals[{i}].props"), &s.props)?;
    }
    Ok(())
}

fn object(key: &str, value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(format!("{key}: must be an object")),
    }
}

fn boolean(col: &str, cell: &str) -> Result<bool, String> {
    match cell.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "y" | "oui" => Ok(true),
        "false" | "no" | "0" | "n" | "non" => Ok(false),
        _ => Err(format!("{col}: `{cell}` is not true or false")),
    }
}

fn number(cell: &str) -> Option<Value> {
    if let Ok(i) = cell.parse::<i64>() {
        return Some(Value::from(i));
    }
    cell.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

/// CSV attributes are typed so that numeric conditions work on them:
/// numbers and booleans become JSON numbers and booleans.
fn typed(cell: &str) -> Value {
    if let Some(n) =
        number(cell).filter(|_| !cell.starts_with('0') || cell == "0" || cell.starts_with("0."))
    {
        return n;
    }
    match cell {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(cell.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_columns_become_fields_consent_and_attributes() {
        let csv = "id,email,status,consent_sms,dnc_email,headcount,zip,industry\n\
                   c1,a@b.fr,prospect,yes,false,120,06100,construction\n\
                   c2,,,maybe,,,,\n\
                   ,x@y.fr,,,,,,\n";
        let lines: Vec<_> = read_lines(csv.as_bytes(), Format::Csv, Kind::Contact)
            .expect("header")
            .collect();
        assert_eq!(lines.len(), 3);
        let p = lines[0].item.as_ref().expect("valid");
        assert_eq!(lines[0].number, 2);
        assert_eq!(p.fields["email"], json!("a@b.fr"));
        assert!(p.consent["sms"]);
        assert!(!p.do_not_contact["email"]);
        assert_eq!(p.attributes["headcount"], json!(120));
        assert_eq!(
            p.attributes["zip"],
            json!("06100"),
            "leading zeros stay text"
        );
        assert!(
            lines[1]
                .item
                .as_ref()
                .unwrap_err()
                .starts_with("consent_sms:")
        );
        assert_eq!(lines[2].number, 4);
        assert!(lines[2].item.as_ref().unwrap_err().starts_with("id:"));
    }

    #[test]
    fn csv_without_id_column_is_refused_whole() {
        let err = read_lines("email\na@b.fr\n".as_bytes(), Format::Csv, Kind::Contact)
            .err()
            .expect("refused");
        assert!(err.contains("no `id` column"));
    }

    #[test]
    fn jsonl_lines_are_numbered_and_typed() {
        let text =
            "{\"id\": \"c1\", \"do_not_contact\": [\"phone\"], \"job\": \"DRH\"}\n\n{not json}\n";
        let lines: Vec<_> = read_lines(text.as_bytes(), Format::Jsonl, Kind::Contact)
            .expect("ok")
            .collect();
        assert_eq!(lines.len(), 2);
        let p = lines[0].item.as_ref().expect("valid");
        assert!(p.do_not_contact["phone"]);
        assert_eq!(p.attributes["job"], json!("DRH"));
        assert_eq!(lines[1].number, 3);
        assert!(
            lines[1]
                .item
                .as_ref()
                .unwrap_err()
                .starts_with("invalid JSON")
        );
    }
}
