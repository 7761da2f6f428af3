//! The `[fatigue]` section.
//!
//! Points are written as decimals for people but computed in fixed point
//! (milli-points), so every amount must have at most three decimals.

use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath, Validate};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// How many recent sends a contact state keeps in memory for the caps. Fixed
/// so that a contact state has no heap allocation (1,000,000 contacts in
/// memory); the caps' limits must add up to at most this.
pub const RECENT_SENDS: usize = 12;

/// How many channels the guard tells apart (one bit each per contact).
pub const MAX_CHANNELS: usize = 32;

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
    /// Default priority of each follow-up kind; a follow-up may carry its own.
    pub priorities: Priorities,
    /// At most `limit` sends per rolling `window`, on one channel or on all.
    pub caps: Vec<CapConfig>,
    /// When a channel may be used, in the contact's local time. A channel
    /// with no window may be used at any time; several windows add up.
    pub windows: Vec<WindowConfig>,
    /// Contacts without a time zone are assumed to live in this one.
    pub default_timezone: Tz,
    /// A follow-up that cannot pass within this long after it was first
    /// proposed is blocked instead of deferred again.
    pub max_deferral: Duration,
    /// Cut-offs of the marketing pressure categories (seed 002).
    pub pressure: PressureConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LevelConfig {
    pub name: String,
    #[serde(default)]
    pub from: Option<f64>,
    #[serde(default)]
    pub above: Option<f64>,
    /// In this level only follow-ups with at least this priority pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_priority: Option<u32>,
    /// In this level only exempt (transactional) follow-ups pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exempt_only: bool,
}

impl LevelConfig {
    /// Threshold and whether it is strict, for ordering.
    pub(crate) fn threshold(&self) -> Option<(f64, bool)> {
        match (self.from, self.above) {
            (Some(v), None) => Some((v, false)),
            (None, Some(v)) => Some((v, true)),
            _ => None,
        }
    }

    /// How strict the level is, to check that strictness grows with fatigue.
    fn strictness(&self) -> (bool, u32) {
        (self.exempt_only, self.min_priority.unwrap_or(0))
    }
}

/// Default priorities: opportunistic > event-driven > systematic (seed 004:
/// a weak signal calls for a call now, nurturing can wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Priorities {
    pub systematic: u32,
    pub event: u32,
    pub opportunistic: u32,
}

impl Default for Priorities {
    fn default() -> Self {
        Self {
            systematic: 10,
            event: 20,
            opportunistic: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CapConfig {
    /// The channel counted; absent, sends on every channel count together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub limit: u32,
    pub window: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct WindowConfig {
    pub channel: String,
    /// Local days on which the window opens; every day when absent.
    #[serde(default = "every_day")]
    pub days: Vec<Day>,
    /// Local opening time, included.
    pub from: TimeOfDay,
    /// Local closing time, excluded; `24:00` is midnight at the end of day.
    pub to: TimeOfDay,
}

fn every_day() -> Vec<Day> {
    Day::ALL.to_vec()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub const ALL: [Day; 7] = [
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    /// Bit of this day in a week mask (Monday is bit 0, as chrono counts).
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A local time of day at one-second resolution; `24:00` is allowed as the
/// end of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub u32);

impl TimeOfDay {
    pub fn seconds(self) -> u32 {
        self.0
    }
}

impl FromStr for TimeOfDay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a time of day (expected HH:MM or HH:MM:SS)");
        let parts: Vec<&str> = s.trim().split(':').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        let mut n = [0u32; 3];
        for (slot, p) in n.iter_mut().zip(&parts) {
            *slot = p.parse().map_err(|_| bad())?;
        }
        let [h, m, sec] = n;
        if m > 59 || sec > 59 || h > 24 || (h == 24 && (m, sec) != (0, 0)) {
            return Err(bad());
        }
        Ok(TimeOfDay(h * 3600 + m * 60 + sec))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Marketing pressure categories (seed 002): a contact's category is the
/// stronger of the one its fatigue reaches and the one its recent
/// solicitations reach.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PressureConfig {
    /// Solicitations are counted over this window before the instant.
    pub solicitation_window: Duration,
    /// Fatigue points from which (≥) each category starts.
    pub fatigue: Cutoffs<f64>,
    /// Solicitation counts from which (≥) each category starts.
    pub solicitations: Cutoffs<u32>,
    /// How many categories pressure may stray from value before a contact is
    /// listed as over- or under-pressured.
    pub tolerance: u8,
}

/// Lower bounds (≥) of the four categories above "very weak".
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
pub struct Cutoffs<T> {
    pub very_strong: T,
    pub strong: T,
    pub neutral: T,
    pub weak: T,
}

impl<T: Copy> Cutoffs<T> {
    /// Weak first.
    pub fn ascending(&self) -> [T; 4] {
        [self.weak, self.neutral, self.strong, self.very_strong]
    }
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            solicitation_window: Duration(chrono::Duration::days(30)),
            fatigue: Cutoffs {
                very_strong: 25.0,
                strong: 15.0,
                neutral: 8.0,
                weak: 2.0,
            },
            solicitations: Cutoffs {
                very_strong: 8,
                strong: 5,
                neutral: 3,
                weak: 1,
            },
            tolerance: 0,
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
                min_priority: None,
                exempt_only: false,
            }],
            priorities: Priorities::default(),
            caps: Vec::new(),
            windows: Vec::new(),
            default_timezone: Tz::UTC,
            max_deferral: Duration(chrono::Duration::days(14)),
            pressure: PressureConfig::default(),
        }
    }
}

/// Whether `points` is a non-negative amount with at most three decimals,
/// i.e. exactly representable in milli-points.
pub(crate) fn to_milli(points: f64) -> Option<i64> {
    if !(0.0..=1e12).contains(&points) {
        return None;
    }
    let milli = (points * 1000.0).round();
    ((milli - points * 1000.0).abs() < 1e-6).then_some(milli as i64)
}

const AMOUNT: &str = "must be zero or a positive number of points with at most three decimals";

impl Validate for FatigueConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if to_milli(self.decay_per_day).is_none() {
            issues.push(at.key("decay_per_day"), AMOUNT);
        }
        for (section, map) in [("costs", &self.costs), ("relief", &self.relief)] {
            for (event, points) in map {
                if to_milli(*points).is_none() {
                    issues.push(at.key(section).key(event), AMOUNT);
                }
            }
        }
        for event in self.costs.keys() {
            if self.relief.contains_key(event) {
                issues.push(
                    at.key("relief").key(event),
                    format!("`{event}` is already a cost; an event either adds or relieves"),
                );
            }
        }
        self.validate_levels(at, issues);
        self.validate_caps(at, issues);
        self.validate_windows(at, issues);
        if self.max_deferral.seconds() <= 0 {
            issues.push(at.key("max_deferral"), "must be positive");
        }
        self.validate_pressure(&at.key("pressure"), issues);
    }
}

impl FatigueConfig {
    fn validate_levels(&self, at: &KeyPath, issues: &mut Issues) {
        let levels = at.key("levels");
        if self.levels.is_empty() {
            issues.push(levels.clone(), "at least one level is required");
        }
        let mut names = BTreeSet::new();
        let mut previous: Option<(f64, bool, &str)> = None;
        let mut strictest: Option<&LevelConfig> = None;
        for (i, level) in self.levels.iter().enumerate() {
            let here = levels.index(i);
            if !names.insert(level.name.as_str()) {
                issues.push(
                    here.key("name"),
                    format!("level `{}` is defined twice", level.name),
                );
            }
            if level.exempt_only && level.min_priority.is_some() {
                issues.push(
                    here.key("min_priority"),
                    "useless with `exempt_only`: only exempt follow-ups pass",
                );
            }
            if let Some(prev) = strictest
                && level.strictness() < prev.strictness()
            {
                issues.push(
                    here.clone(),
                    format!(
                        "level `{}` lets through follow-ups that the lower level `{}` holds back; higher levels must be at least as strict",
                        level.name, prev.name
                    ),
                );
            }
            if strictest.is_none_or(|p| level.strictness() >= p.strictness()) {
                strictest = Some(level);
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
            if to_milli(value).is_none_or(|m| m == 0) {
                issues.push(
                    here.key(key),
                    "must be a positive number of points with at most three decimals",
                );
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

    fn validate_caps(&self, at: &KeyPath, issues: &mut Issues) {
        let caps = at.key("caps");
        let mut total: u64 = 0;
        for (i, cap) in self.caps.iter().enumerate() {
            let here = caps.index(i);
            if cap.limit == 0 {
                issues.push(
                    here.key("limit"),
                    "must be at least 1 (use do-not-contact to close a channel)",
                );
            }
            if cap.window.seconds() <= 0 {
                issues.push(here.key("window"), "must be positive");
            }
            total += u64::from(cap.limit);
        }
        if total > RECENT_SENDS as u64 {
            issues.push(
                caps,
                format!(
                    "the caps' limits add up to {total}; the guard keeps at most {RECENT_SENDS} recent sends per contact"
                ),
            );
        }
    }

    fn validate_windows(&self, at: &KeyPath, issues: &mut Issues) {
        for (i, window) in self.windows.iter().enumerate() {
            let here = at.key("windows").index(i);
            if window.days.is_empty() {
                issues.push(here.key("days"), "at least one day is required");
            }
            if window.from.seconds() >= 86_400 {
                issues.push(here.key("from"), "must be before 24:00");
            }
            if window.to <= window.from {
                issues.push(
                    here.key("to"),
                    format!(
                        "must be after `from` ({}); split a window across midnight in two",
                        window.from
                    ),
                );
            }
        }
    }

    fn validate_pressure(&self, at: &KeyPath, issues: &mut Issues) {
        if self.pressure.solicitation_window.seconds() <= 0 {
            issues.push(at.key("solicitation_window"), "must be positive");
        }
        let f = self.pressure.fatigue.ascending();
        if f.iter().any(|v| to_milli(*v).is_none()) {
            issues.push(at.key("fatigue"), AMOUNT);
        } else if f.windows(2).any(|w| w[0] > w[1]) {
            issues.push(
                at.key("fatigue"),
                "cut-offs must not decrease from weak to very_strong",
            );
        }
        let s = self.pressure.solicitations.ascending();
        if s.windows(2).any(|w| w[0] > w[1]) {
            issues.push(
                at.key("solicitations"),
                "cut-offs must not decrease from weak to very_strong",
            );
        }
        if self.pressure.tolerance > 4 {
            issues.push(at.key("tolerance"), "at most 4 (there are five categories)");
        }
    }
}

/// The per-contact solicitation budget (seed 004: not the newsletter, a
/// seminar invitation and a sales call on the same day).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct BudgetConfig {
    /// Sends allowed per window.
    pub count: u32,
    /// Whole calendar days in the contact's time zone (`1d`: per day).
    #[serde(default = "one_day")]
    pub window: Duration,
    /// Only this channel's sends count and are held; all channels when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

fn one_day() -> Duration {
    Duration(chrono::Duration::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse() {
        assert_eq!("09:00".parse::<TimeOfDay>(), Ok(TimeOfDay(32_400)));
        assert_eq!("24:00".parse::<TimeOfDay>(), Ok(TimeOfDay(86_400)));
        assert_eq!("08:30:15".parse::<TimeOfDay>(), Ok(TimeOfDay(30_615)));
        assert!("24:01".parse::<TimeOfDay>().is_err());
        assert!("9:00".parse::<TimeOfDay>().is_err());
        assert_eq!(TimeOfDay(30_600).to_string(), "08:30");
    }

    #[test]
    fn amounts_must_be_exact_in_milli_points() {
        assert_eq!(to_milli(2.5), Some(2500));
        assert_eq!(to_milli(0.001), Some(1));
        assert_eq!(to_milli(0.0005), None);
        assert_eq!(to_milli(-1.0), None);
    }

    fn issues(config: &FatigueConfig) -> Vec<String> {
        let mut issues = Issues::default();
        config.validate(&KeyPath::root().key("fatigue"), &mut issues);
        issues
            .0
            .into_iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect()
    }

    #[test]
    fn looser_higher_levels_and_oversized_caps_are_reported() {
        let config = FatigueConfig {
            levels: vec![
                LevelConfig {
                    name: "normal".into(),
                    from: None,
                    above: None,
                    min_priority: Some(20),
                    exempt_only: false,
                },
                LevelConfig {
                    name: "loose".into(),
                    from: Some(20.0),
                    above: None,
                    min_priority: None,
                    exempt_only: false,
                },
            ],
            caps: vec![CapConfig {
                channel: None,
                limit: 13,
                window: "7d".parse().expect("valid"),
            }],
            ..FatigueConfig::default()
        };
        let found = issues(&config);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("fatigue.levels[1]: level `loose`"));
        assert!(found[1].contains("add up to 13"));
    }
}
