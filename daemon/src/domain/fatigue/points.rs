//! Fatigue as exact fixed-point numbers.
//!
//! Amounts are configured in milli-points and decay is a whole number of
//! milli-points per day. Storing fatigue in units of 1/86,400 milli-point
//! makes a decay of `r` milli-points per day exactly `r` units per second, so
//! the value at any second — including fractional days — is an exact integer
//! and the instant a threshold is reached is an exact division. No floats
//! anywhere in the arithmetic: results are reproducible across machines.

use crate::core::model::Timestamp;
use chrono::DateTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Units per milli-point: one per second of a day.
pub const UNITS_PER_MILLI: i64 = 86_400;
/// Units per point.
pub const UNITS_PER_POINT: i64 = 1000 * UNITS_PER_MILLI;

/// An exact amount of fatigue. Serialized as a decimal number of points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FatiguePoints(i64);

impl FatiguePoints {
    pub const ZERO: Self = Self(0);

    pub fn from_units(units: i64) -> Self {
        Self(units)
    }

    pub fn from_milli(milli: i64) -> Self {
        Self(milli.saturating_mul(UNITS_PER_MILLI))
    }

    /// Whole points, for tests and hand-built states.
    pub fn from_points(points: i64) -> Self {
        Self(points.saturating_mul(UNITS_PER_POINT))
    }

    pub fn units(self) -> i64 {
        self.0
    }

    /// For display and JSON only; comparisons use the exact units.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / UNITS_PER_POINT as f64
    }
}

impl fmt::Display for FatiguePoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exact to the milli-point, truncated below.
        let milli = self.0.div_euclid(UNITS_PER_MILLI);
        let (whole, frac) = (milli.div_euclid(1000), milli.rem_euclid(1000));
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

impl Serialize for FatiguePoints {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for FatiguePoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let points = f64::deserialize(d)?;
        if !points.is_finite() || points.abs() > 1e10 {
            return Err(serde::de::Error::custom("fatigue out of range"));
        }
        // Nearest unit: exact for every value the engine itself writes.
        Ok(Self((points * UNITS_PER_POINT as f64).round() as i64))
    }
}

/// Linear decay, in milli-points per day (= units per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DecayRate(pub i64);

impl DecayRate {
    pub fn per_second(self) -> i64 {
        self.0
    }
}

/// Seconds since the Unix epoch: instants are taken at one-second
/// resolution (sub-second parts are dropped), like the store keeps them.
pub(crate) fn secs(at: Timestamp) -> i64 {
    at.timestamp()
}

pub(crate) fn instant(secs: i64) -> Timestamp {
    DateTime::from_timestamp(secs, 0).unwrap_or(if secs < 0 {
        DateTime::<chrono::Utc>::MIN_UTC
    } else {
        DateTime::<chrono::Utc>::MAX_UTC
    })
}

/// Fatigue of one contact: the exact value at the instant of its last
/// update. Reading it at a later instant is O(1), and so is folding a new
/// event in; 16 bytes per contact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fatigue {
    value: FatiguePoints,
    at: i64,
}

/// Events must be folded in time order: the clamp at zero makes the result
/// depend on order, so a late event needs a replay of the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "event at {at} is older than the state's last update at {last}; replay the history in order"
)]
pub struct OutOfOrder {
    pub at: Timestamp,
    pub last: Timestamp,
}

impl Fatigue {
    /// A known value at a known instant (e.g. read back from a snapshot).
    pub fn new(value: FatiguePoints, at: Timestamp) -> Self {
        Self {
            value: FatiguePoints(value.0.max(0)),
            at: secs(at),
        }
    }

    /// The stored value and the instant it was taken at.
    pub fn snapshot(&self) -> (FatiguePoints, Timestamp) {
        (self.value, instant(self.at))
    }

    pub fn last_update(&self) -> Timestamp {
        instant(self.at)
    }

    /// The value at `at`. Before the last update the state knows nothing
    /// better than its stored value.
    pub fn value_at(&self, decay: DecayRate, at: Timestamp) -> FatiguePoints {
        FatiguePoints(self.units_at(decay, secs(at)))
    }

    pub(crate) fn units_at(&self, decay: DecayRate, t: i64) -> i64 {
        let elapsed = t.saturating_sub(self.at).max(0);
        self.value
            .0
            .saturating_sub(decay.per_second().saturating_mul(elapsed))
            .max(0)
    }

    /// Adds `amount` (a cost) at `at`.
    pub fn add(
        &mut self,
        decay: DecayRate,
        at: Timestamp,
        amount: FatiguePoints,
    ) -> Result<(), OutOfOrder> {
        self.fold(decay, at, amount.0)
    }

    /// Removes `amount` (a relief) at `at`, never below zero.
    pub fn relieve(
        &mut self,
        decay: DecayRate,
        at: Timestamp,
        amount: FatiguePoints,
    ) -> Result<(), OutOfOrder> {
        self.fold(decay, at, amount.0.saturating_neg())
    }

    fn fold(&mut self, decay: DecayRate, at: Timestamp, delta: i64) -> Result<(), OutOfOrder> {
        let t = secs(at);
        if t < self.at {
            return Err(OutOfOrder {
                at,
                last: instant(self.at),
            });
        }
        self.add_secs(decay, t, delta);
        Ok(())
    }

    pub(crate) fn add_secs(&mut self, decay: DecayRate, t: i64, delta: i64) {
        let now = self.units_at(decay, t);
        self.value = FatiguePoints(now.saturating_add(delta).max(0));
        self.at = self.at.max(t);
    }

    /// The first instant at which fatigue is at most `threshold`, assuming
    /// no further event; `None` when it never decays that far.
    pub fn when_at_most(&self, decay: DecayRate, threshold: FatiguePoints) -> Option<Timestamp> {
        self.first_secs(decay, threshold.0, false).map(instant)
    }

    /// The first whole second at which the value is `≤ threshold` (or
    /// `< threshold` when `strict`), from the last update on.
    pub(crate) fn first_secs(&self, decay: DecayRate, threshold: i64, strict: bool) -> Option<i64> {
        let excess = self.value.0 - threshold;
        // Already there at the last update.
        if excess < 0 || (excess == 0 && !strict) {
            return Some(self.at);
        }
        // Zero is the floor: nothing is strictly below 0.
        if threshold < 0 || (threshold == 0 && strict) {
            return None;
        }
        let rate = decay.per_second();
        if rate <= 0 {
            return None;
        }
        let wait = if strict {
            excess / rate + 1
        } else {
            (excess + rate - 1) / rate
        };
        Some(self.at.saturating_add(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    const DAY: i64 = 86_400;
    const ONE_PER_DAY: DecayRate = DecayRate(1000);

    fn at(secs: i64) -> Timestamp {
        Utc.timestamp_opt(1_780_000_000 + secs, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn seed_example_twelve_call_seventeen_six_days_eleven() {
        let mut f = Fatigue::new(FatiguePoints::from_points(12), at(0));
        f.add(ONE_PER_DAY, at(0), FatiguePoints::from_points(5))
            .expect("in order");
        assert_eq!(
            f.value_at(ONE_PER_DAY, at(0)),
            FatiguePoints::from_points(17)
        );
        assert_eq!(
            f.value_at(ONE_PER_DAY, at(6 * DAY)),
            FatiguePoints::from_points(11)
        );
    }

    #[test]
    fn decay_is_exact_at_fractional_days_and_stops_at_zero() {
        let f = Fatigue::new(FatiguePoints::from_points(3), at(0));
        // 1.5 days later: 1.5 points left, exactly.
        assert_eq!(
            f.value_at(ONE_PER_DAY, at(DAY + DAY / 2)),
            FatiguePoints::from_milli(1500)
        );
        // One second: exactly 1/86,400 point.
        assert_eq!(
            f.value_at(ONE_PER_DAY, at(1)).units(),
            3 * UNITS_PER_POINT - 1000
        );
        assert_eq!(f.value_at(ONE_PER_DAY, at(10 * DAY)), FatiguePoints::ZERO);
        assert_eq!(
            f.value_at(ONE_PER_DAY, at(DAY + DAY / 2)).to_string(),
            "1.5"
        );
    }

    #[test]
    fn relief_never_goes_below_zero_and_order_is_enforced() {
        let mut f = Fatigue::new(FatiguePoints::from_points(4), at(0));
        f.relieve(ONE_PER_DAY, at(DAY), FatiguePoints::from_points(5))
            .expect("in order");
        assert_eq!(f.value_at(ONE_PER_DAY, at(DAY)), FatiguePoints::ZERO);
        let err = f
            .add(ONE_PER_DAY, at(0), FatiguePoints::from_points(3))
            .expect_err("older");
        assert_eq!(err.last, at(DAY));
    }

    #[test]
    fn threshold_instants_are_exact() {
        let f = Fatigue::new(FatiguePoints::from_points(21), at(0));
        let twenty = FatiguePoints::from_points(20);
        assert_eq!(f.when_at_most(ONE_PER_DAY, twenty), Some(at(DAY)));
        // Strictly below 20: the next second.
        assert_eq!(
            f.first_secs(ONE_PER_DAY, twenty.units(), true),
            Some(at(DAY + 1).timestamp())
        );
        // 1.5 points/day from 21 to 20: 2/3 day = 57,600 s.
        assert_eq!(f.when_at_most(DecayRate(1500), twenty), Some(at(57_600)));
        // 7 points/day: 86400/7 s is not whole, so the next whole second.
        assert_eq!(f.when_at_most(DecayRate(7000), twenty), Some(at(12_343)));
        assert_eq!(f.when_at_most(DecayRate(0), twenty), None);
        assert_eq!(
            f.when_at_most(DecayRate(0), FatiguePoints::from_points(30)),
            Some(at(0))
        );
    }
}
