//! A contact's fatigue as people read it: value, level, recent charges and
//! when each milestone will be left. Shared by `relance fatigue` and the
//! API's contact view so both say the same thing.

use super::{ContactState, FatigueConfig, FatiguePoints, Guard};
use crate::core::model::{Event, Timestamp};
use serde::Serialize;

/// How far back recent charges are listed.
pub const CHARGES_SHOWN_DAYS: i64 = 60;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FatigueReport {
    pub contact: String,
    pub at: Timestamp,
    pub fatigue: FatiguePoints,
    pub level: String,
    pub charges: Vec<Charge>,
    pub leaves: Vec<Leave>,
}

/// One event that cost (or relieved) fatigue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Charge {
    pub at: Timestamp,
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Option<String>,
    pub points: f64,
}

/// When fatigue falls below a milestone it is at or above (`None`: never).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Leave {
    pub level: String,
    pub left_at: Option<Timestamp>,
}

fn points(v: f64) -> FatiguePoints {
    FatiguePoints::from_milli((v * 1000.0).round() as i64)
}

/// The report at `now` for a contact whose state was replayed from `weighs`.
pub fn report(
    config: &FatigueConfig,
    guard: &Guard,
    contact: &str,
    state: &ContactState,
    weighs: &[Event],
    now: Timestamp,
) -> FatigueReport {
    let value = state.fatigue_at(guard, now);
    let since = now - chrono::Duration::days(CHARGES_SHOWN_DAYS);
    let charges = weighs
        .iter()
        .filter(|e| e.at >= since && e.at <= now)
        .filter_map(|e| {
            let delta = config
                .costs
                .get(&e.kind)
                .copied()
                .or_else(|| config.relief.get(&e.kind).map(|r| -r))?;
            Some(Charge {
                at: e.at,
                kind: e.kind.clone(),
                channel: e.channel.clone(),
                points: delta,
            })
        })
        .collect();
    let leaves = config
        .levels
        .iter()
        .filter_map(|l| {
            let (threshold, strict) = match (l.from, l.above) {
                (Some(v), _) => (v, false),
                (_, Some(v)) => (v, true),
                _ => return None,
            };
            let reached = if strict {
                value > points(threshold)
            } else {
                value >= points(threshold)
            };
            reached.then(|| {
                let at = state.when_at_most(guard, points(threshold));
                // A `from` level still holds at its threshold: it is left just after.
                let left_at = at.map(|t| {
                    if strict {
                        t
                    } else {
                        t + chrono::Duration::seconds(1)
                    }
                });
                Leave {
                    level: l.name.clone(),
                    left_at,
                }
            })
        })
        .collect();
    FatigueReport {
        contact: contact.to_string(),
        at: now,
        fatigue: value,
        level: guard.level_name(value).to_string(),
        charges,
        leaves,
    }
}
