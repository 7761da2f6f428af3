//! `[ingest]`: which instants are accepted on the way in (API, imports).
//!
//! An event dated 1900 or 2200 used to be stored and then made every read
//! of its contact fail (the guard keeps sends as 32-bit seconds since
//! 1970), so instants are checked before anything is written.

use super::Incoming;
use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath, Validate};
use crate::core::model::{BusinessSignal, Timestamp};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The configured range, relative to now for its upper end.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Nothing dated before this instant is accepted.
    pub earliest: Timestamp,
    /// Nothing dated more than this after now is accepted (clock skew of
    /// producers; scheduled events).
    pub max_future: Duration,
}

/// The guard counts seconds from 1970 in 32 bits: its last instant.
fn representable_end() -> Timestamp {
    DateTime::<Utc>::from_timestamp(i64::from(u32::MAX), 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The longest `max_future` accepted.
const MAX_FUTURE_DAYS: i64 = 366;

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            earliest: DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default(),
            max_future: Duration(chrono::Duration::days(1)),
        }
    }
}

impl Validate for IngestConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.earliest < DateTime::<Utc>::UNIX_EPOCH || self.earliest >= representable_end() {
            issues.push(
                at.key("earliest"),
                "must lie between 1970-01-01T00:00:00Z and 2106 (fatigue counts seconds from 1970)",
            );
        }
        let s = self.max_future.seconds();
        if !(0..=MAX_FUTURE_DAYS * 86_400).contains(&s) {
            issues.push(
                at.key("max_future"),
                format!("must be between 0s and {MAX_FUTURE_DAYS}d"),
            );
        }
    }
}

impl IngestConfig {
    /// The instants accepted at `now`.
    pub fn range(&self, now: Timestamp) -> InstantRange {
        let latest = now
            .checked_add_signed(self.max_future.0)
            .unwrap_or(now)
            .min(representable_end());
        InstantRange {
            earliest: self.earliest,
            latest,
            max_future: self.max_future,
        }
    }
}

/// Instants accepted now: `earliest ..= latest`.
#[derive(Clone, Copy, Debug)]
pub struct InstantRange {
    pub earliest: Timestamp,
    pub latest: Timestamp,
    max_future: Duration,
}

impl InstantRange {
    /// Refuses `at` outside the range, naming `field`.
    pub fn check(&self, field: &str, at: Timestamp) -> Result<(), String> {
        if at < self.earliest {
            return Err(format!(
                "{field}: {} is before {}, the earliest instant accepted ([ingest] earliest)",
                at.to_rfc3339(),
                self.earliest.to_rfc3339()
            ));
        }
        if at > self.latest {
            return Err(format!(
                "{field}: {} is more than {} in the future, the most accepted ([ingest] max_future)",
                at.to_rfc3339(),
                self.max_future
            ));
        }
        Ok(())
    }

    /// Checks an incoming event's instant.
    pub fn check_incoming(&self, incoming: &Incoming) -> Result<(), String> {
        match incoming {
            Incoming::Contact(e) => self.check("at", e.at),
            Incoming::Company { signal, .. } => self.check("at", signal.at),
        }
    }

    /// Checks the instants of business signals given on a company line.
    pub fn check_signals(&self, signals: &[BusinessSignal]) -> Result<(), String> {
        for (i, s) in signals.iter().enumerate() {
            self.check(&format!("signals[{i}].at"), s.at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn instants_outside_the_range_are_refused_with_the_field_named() {
        let range = IngestConfig::default().range(at("2026-11-17T09:00:00Z"));
        assert!(range.check("at", at("2000-01-01T00:00:00Z")).is_ok());
        assert!(range.check("at", at("2026-11-18T09:00:00Z")).is_ok());
        let e = range.check("at", at("1969-12-31T23:59:59Z")).unwrap_err();
        assert!(
            e.starts_with("at: 1969-12-31") && e.contains("earliest"),
            "{e}"
        );
        let e = range.check("at", at("2026-11-18T09:00:01Z")).unwrap_err();
        assert!(e.starts_with("at: ") && e.contains("max_future"), "{e}");
        assert!(range.check("at", at("2200-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn the_configuration_is_checked() {
        let mut issues = Issues::default();
        let bad = IngestConfig {
            earliest: at("1900-01-01T00:00:00Z"),
            max_future: Duration(chrono::Duration::days(400)),
        };
        bad.validate(&KeyPath::root().key("ingest"), &mut issues);
        let keys: Vec<String> = issues.0.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["ingest.earliest", "ingest.max_future"]);
    }
}
