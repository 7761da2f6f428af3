//! Durations written the way operations people write them: `90s`, `15m`,
//! `36h`, `14d`, `2w`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The longest duration accepted: instants a duration away from now stay
/// far inside what chrono represents (a larger one panicked on load).
const MAX_SECONDS: i64 = 36_500 * 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub chrono::Duration);

impl Duration {
    pub fn seconds(&self) -> i64 {
        self.0.num_seconds()
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("`{s}` has no unit (expected e.g. 90s, 15m, 36h, 14d, 2w)"))?;
        let (n, unit) = s.split_at(split);
        let n: i64 = n
            .parse()
            .map_err(|_| format!("`{s}` does not start with a whole number"))?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in `{s}` (expected s, m, h, d or w)"
                ));
            }
        };
        n.checked_mul(secs)
            .filter(|v| *v <= MAX_SECONDS)
            .map(|v| Duration(chrono::Duration::seconds(v)))
            .ok_or_else(|| format!("`{s}` is too long: at most 36500d (100 years)"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.num_seconds();
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s != 0 && s % size == 0 {
                return write!(f, "{}{unit}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_units() {
        for (text, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("36h", 129_600),
            ("14d", 1_209_600),
            ("2w", 1_209_600),
        ] {
            let d: Duration = text.parse().expect("valid");
            assert_eq!(d.seconds(), secs, "{text}");
        }
        assert_eq!("14d".parse::<Duration>().expect("valid").to_string(), "2w");
        assert!("14".parse::<Duration>().is_err());
        assert!("3y".parse::<Duration>().is_err());
        assert!("d".parse::<Duration>().is_err());
    }

    #[test]
    fn huge_durations_are_refused_not_a_panic() {
        for text in ["9999999999999999s", "9223372036854775807w", "36501d"] {
            let e = text.parse::<Duration>().unwrap_err();
            assert!(e.contains("too long"), "{text}: {e}");
        }
        assert!("36500d".parse::<Duration>().is_ok());
    }
}
