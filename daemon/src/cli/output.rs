//! Readable tables for people, JSON for programs.

use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A plain aligned table.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", parts.join("  ").trim_end());
        };
        line(&self.header);
        for row in &self.rows {
            line(row);
        }
    }
}

pub fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// A guard reason for people: `{"rule": "cap", "count": 2, …}` as "cap:
/// 2 of 2 email sends in 1w, frees at …". JSON output keeps the object.
pub fn reason(r: &serde_json::Value) -> String {
    let s = |key: &str| match r.get(key) {
        Some(serde_json::Value::String(v)) => v.clone(),
        Some(serde_json::Value::Null) | None => "-".into(),
        Some(v) => v.to_string(),
    };
    let rule = s("rule");
    match rule.as_str() {
        "level" => format!(
            "level {}: fatigue {}, priority {}{}",
            s("level"),
            s("fatigue"),
            s("priority"),
            if r["exempt"] == true { ", exempt" } else { "" }
        ),
        "do_not_contact" => format!("do not contact on {}", s("channel")),
        "consent" => match r["explicit"].as_bool() {
            Some(false) => format!("no consent on {}: refused", s("channel")),
            _ => format!(
                "no consent on {} (opt-in channel, none given)",
                s("channel")
            ),
        },
        "fatigue" => {
            let rule = if r["exempt_only"] == true {
                "only exempt follow-ups pass".to_string()
            } else {
                format!(
                    "priority {} below the level's {}",
                    s("priority"),
                    s("min_priority")
                )
            };
            format!(
                "fatigue {} at level {}: {rule}; passes at {}",
                s("fatigue"),
                s("level"),
                s("passes_at")
            )
        }
        "cap" => format!(
            "cap: {} of {} sends{} in {}; frees at {}",
            s("count"),
            s("limit"),
            r["channel"]
                .as_str()
                .map_or(" on all channels".into(), |c| format!(" on {c}")),
            s("window"),
            s("frees_at")
        ),
        "budget" => format!(
            "budget: {} of {} solicitations{} over {} day(s) to {} in {}; frees at {}",
            s("count"),
            s("limit"),
            r["channel"]
                .as_str()
                .map_or(" on all channels".into(), |c| format!(" on {c}")),
            s("days"),
            s("day"),
            s("timezone"),
            s("frees_at")
        ),
        "send_window" => format!(
            "outside the {} send window ({} in {}); opens at {} ({})",
            s("channel"),
            s("local"),
            s("timezone"),
            s("opens_local"),
            s("opens_at")
        ),
        "max_deferral" => format!(
            "deferred beyond {} after {}; would pass at {}",
            s("max_deferral"),
            s("first_proposed"),
            s("until")
        ),
        _ => match r.as_object() {
            Some(fields) => {
                let rest: Vec<String> = fields
                    .iter()
                    .filter(|(k, _)| *k != "rule")
                    .map(|(k, v)| format!("{k} {}", v.as_str().map_or(v.to_string(), String::from)))
                    .collect();
                if rest.is_empty() {
                    rule
                } else {
                    format!("{rule}: {}", rest.join(", "))
                }
            }
            None => r.as_str().map_or(r.to_string(), String::from),
        },
    }
}

/// An outbox row's error: the guard's reasons (stored as JSON) as
/// sentences, a delivery error as it came.
pub fn error(e: &Option<String>) -> String {
    match e.as_deref().map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)))) => reasons(&v),
        _ => opt(e),
    }
}

/// Several reasons (a JSON array, or one), joined with "; ".
pub fn reasons(v: &serde_json::Value) -> String {
    match v.as_array() {
        Some(list) if list.is_empty() => "-".into(),
        Some(list) => list.iter().map(reason).collect::<Vec<_>>().join("; "),
        None => reason(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_read_as_sentences() {
        let r = json!([
            {"rule": "cap", "channel": "phone", "count": 1, "limit": 1, "window": "3d",
             "at": "2026-11-20T12:00:00Z", "frees_at": "2026-11-22T12:00:00Z"},
            {"rule": "consent", "channel": "sms", "explicit": null, "default": "opt_in"},
            {"rule": "new_rule", "why": "because"}
        ]);
        assert_eq!(
            reasons(&r),
            "cap: 1 of 1 sends on phone in 3d; frees at 2026-11-22T12:00:00Z; \
             no consent on sms (opt-in channel, none given); new_rule: why because"
        );
        assert_eq!(reasons(&json!([])), "-");
        let budget = json!({"rule": "budget", "channel": null, "count": 1, "limit": 1,
            "days": 1, "day": "2026-12-05", "timezone": "Europe/Paris",
            "at": "2026-12-05T04:21:29Z", "frees_at": "2026-12-05T23:00:00Z"});
        assert_eq!(
            reason(&budget),
            "budget: 1 of 1 solicitations on all channels over 1 day(s) to 2026-12-05 \
             in Europe/Paris; frees at 2026-12-05T23:00:00Z"
        );
    }
}
