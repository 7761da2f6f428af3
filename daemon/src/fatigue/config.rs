//! The `[fatigue]` section.

use crate::config::{Issues, KeyPath, Validate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct FatigueConfig {
    /// Points lost per day, linearly, never below zero.
    pub decay_per_day: f64,
    /// Points added per action, keyed by event type.
    pub costs: BTreeMap<String, f64>,
    /// Points removed when the contact reaches out (inbound call, reply …).
    pub relief: BTreeMap<String, f64>,
    /// Milestones, lowest first. The first level starts at 0; each later one
    /// starts `from` (≥) or `above` (>) a threshold.
    pub levels: Vec<LevelConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LevelConfig {
    pub name: String,
    #[serde(default)]
    pub from: Option<f64>,
    #[serde(default)]
    pub above: Option<f64>,
}

impl LevelConfig {
    /// Threshold and whether it is strict, for ordering.
    fn threshold(&self) -> Option<(f64, bool)> {
        match (self.from, self.above) {
            (Some(v), None) => Some((v, false)),
            (None, Some(v)) => Some((v, true)),
            _ => None,
        }
    }
}

impl Default for FatigueConfig {
    fn default() -> Self {
        Self {
            decay_per_day: 1.0,
            costs: BTreeMap::new(),
            relief: BTreeMap::new(),
            levels: vec![LevelConfig {
                name: "normal".into(),
                from: None,
                above: None,
            }],
        }
    }
}

impl Validate for FatigueConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if !self.decay_per_day.is_finite() || self.decay_per_day < 0.0 {
            issues.push(at.key("decay_per_day"), "must be zero or a positive number");
        }
        for (section, map) in [("costs", &self.costs), ("relief", &self.relief)] {
            for (event, points) in map {
                if !points.is_finite() || *points < 0.0 {
                    issues.push(
                        at.key(section).key(event),
                        "must be zero or a positive number of points",
                    );
                }
            }
        }
        let levels = at.key("levels");
        if self.levels.is_empty() {
            issues.push(levels.clone(), "at least one level is required");
        }
        let mut names = BTreeSet::new();
        let mut previous: Option<(f64, bool, &str)> = None;
        for (i, level) in self.levels.iter().enumerate() {
            let here = levels.index(i);
            if !names.insert(level.name.as_str()) {
                issues.push(
                    here.key("name"),
                    format!("level `{}` is defined twice", level.name),
                );
            }
            if i == 0 {
                if level.from.is_some() || level.above.is_some() {
                    issues.push(
                        here,
                        "the first level starts at 0 and takes no `from` or `above`",
                    );
                }
                continue;
            }
            let Some((value, strict)) = level.threshold() else {
                issues.push(here, "give exactly one of `from` (≥) or `above` (>)");
                continue;
            };
            let key = if strict { "above" } else { "from" };
            if !value.is_finite() || value <= 0.0 {
                issues.push(here.key(key), "must be a positive number of points");
            }
            if let Some((prev, prev_strict, prev_name)) = previous
                && (value < prev || (value == prev && (prev_strict || !strict)))
            {
                issues.push(
                    here.key(key),
                    format!(
                        "levels must be listed lowest first: `{}` starts at {value}, not after `{prev_name}` at {prev}",
                        level.name
                    ),
                );
            }
            previous = Some((value, strict, level.name.as_str()));
        }
    }
}
