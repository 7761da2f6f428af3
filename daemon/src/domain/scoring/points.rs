//! Points in hundredths, so that contributions always sum exactly to the
//! score a user sees.

use serde::{Serialize, Serializer};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub};

/// A number of points, held in hundredths. Each contribution is rounded to
/// two decimals once, and totals are integer sums of those, so an
/// explanation never disagrees with its score by a rounding error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Points(pub i64);

impl Points {
    pub const ZERO: Points = Points(0);

    /// Rounds to the nearest hundredth (half away from zero).
    pub fn from_f64(v: f64) -> Points {
        // Scores stay far below i64::MAX / 100; the cast saturates anyway.
        Points((v * 100.0).round() as i64)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }

    pub fn hundredths(self) -> i64 {
        self.0
    }
}

impl Add for Points {
    type Output = Points;
    fn add(self, o: Points) -> Points {
        Points(self.0 + o.0)
    }
}

impl AddAssign for Points {
    fn add_assign(&mut self, o: Points) {
        self.0 += o.0;
    }
}

impl Sub for Points {
    type Output = Points;
    fn sub(self, o: Points) -> Points {
        Points(self.0 - o.0)
    }
}

impl Neg for Points {
    type Output = Points;
    fn neg(self) -> Points {
        Points(-self.0)
    }
}

impl Sum for Points {
    fn sum<I: Iterator<Item = Points>>(iter: I) -> Points {
        Points(iter.map(|p| p.0).sum())
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, abs) = if self.0 < 0 {
            ("-", -self.0)
        } else {
            ("", self.0)
        };
        if abs % 100 == 0 {
            write!(f, "{sign}{}", abs / 100)
        } else {
            write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
        }
    }
}

impl Serialize for Points {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

/// Serialises a stored score (hundredths) in points, as [`Points`] does.
pub fn hundredths_as_points<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    Points(*v).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_hundredths_and_prints_plainly() {
        assert_eq!(Points::from_f64(0.1) + Points::from_f64(0.2), Points(30));
        assert_eq!(Points::from_f64(2.0 / 3.0), Points(67));
        assert_eq!(Points::from_f64(-1.005 - 1e-9), Points(-101));
        assert_eq!(Points(23500).to_string(), "235");
        assert_eq!(Points(-1505).to_string(), "-15.05");
        assert_eq!(
            serde_json::to_string(&Points(14050)).expect("json"),
            "140.5"
        );
    }
}
