//! Marketing pressure against customer value (seed 002): is the pressure a
//! contact gets in line with what it is worth? Five pressure categories
//! against five value tiers; the gap between their ranks finds the
//! over-pressured (weariness) and under-pressured (oblivion) contacts.

use super::config::{PressureConfig, to_milli};
use super::points::{FatiguePoints, UNITS_PER_MILLI};
use serde::{Deserialize, Serialize};

/// Weakest first, so the rank (0–4) compares with [`ValueTier`]'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressureCategory {
    VeryWeak,
    Weak,
    Neutral,
    Strong,
    VeryStrong,
}

impl PressureCategory {
    pub const ALL: [Self; 5] = [
        Self::VeryWeak,
        Self::Weak,
        Self::Neutral,
        Self::Strong,
        Self::VeryStrong,
    ];

    pub fn rank(self) -> usize {
        self as usize
    }
}

pub use crate::core::model::ValueTier;

impl ValueTier {
    /// The pressure this value warrants: the same rank.
    pub fn warranted(self) -> PressureCategory {
        PressureCategory::ALL[self.rank()]
    }
}

/// The stronger of the category fatigue reaches and the one the number of
/// solicitations in `solicitation_window` reaches: either alone is enough
/// to weary a contact.
pub fn pressure_category(
    config: &PressureConfig,
    fatigue: FatiguePoints,
    solicitations: u32,
) -> PressureCategory {
    let by_fatigue = config
        .fatigue
        .ascending()
        .iter()
        .filter(|&&cut| {
            let cut = to_milli(cut).map_or(i64::MAX, |m| m.saturating_mul(UNITS_PER_MILLI));
            fatigue.units() >= cut
        })
        .count();
    let by_count = config
        .solicitations
        .ascending()
        .iter()
        .filter(|&&cut| solicitations >= cut)
        .count();
    PressureCategory::ALL[by_fatigue.max(by_count)]
}

/// One contact's figures at the instant of the analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressureSample {
    pub contact: String,
    pub fatigue: FatiguePoints,
    /// Sends in the configured solicitation window.
    pub solicitations: u32,
    pub value: ValueTier,
}

/// A contact whose pressure strays from its value by more than the
/// tolerance; `gap` is pressure rank minus value rank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Misfit {
    pub contact: String,
    pub pressure: PressureCategory,
    pub value: ValueTier,
    pub gap: i8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PressureMatrix {
    /// `counts[pressure rank][value rank]`.
    pub counts: [[u64; 5]; 5],
    /// Largest gap first, then by contact.
    pub over_pressured: Vec<Misfit>,
    pub under_pressured: Vec<Misfit>,
}

impl PressureMatrix {
    pub fn count(&self, pressure: PressureCategory, value: ValueTier) -> u64 {
        self.counts[pressure.rank()][value.rank()]
    }
}

/// Counts per cell and the lists of misfits.
pub fn pressure_matrix(
    config: &PressureConfig,
    samples: impl IntoIterator<Item = PressureSample>,
) -> PressureMatrix {
    let mut matrix = PressureMatrix::default();
    let tolerance = i8::try_from(config.tolerance).unwrap_or(i8::MAX);
    for s in samples {
        let pressure = pressure_category(config, s.fatigue, s.solicitations);
        matrix.counts[pressure.rank()][s.value.rank()] += 1;
        // Ranks are 0–4: the difference fits.
        let gap = pressure.rank() as i8 - s.value.rank() as i8;
        let misfit = || Misfit {
            contact: s.contact.clone(),
            pressure,
            value: s.value,
            gap,
        };
        if gap > tolerance {
            matrix.over_pressured.push(misfit());
        } else if gap < -tolerance {
            matrix.under_pressured.push(misfit());
        }
    }
    matrix
        .over_pressured
        .sort_by(|a, b| b.gap.cmp(&a.gap).then_with(|| a.contact.cmp(&b.contact)));
    matrix
        .under_pressured
        .sort_by(|a, b| a.gap.cmp(&b.gap).then_with(|| a.contact.cmp(&b.contact)));
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(contact: &str, fatigue: i64, solicitations: u32, value: ValueTier) -> PressureSample {
        PressureSample {
            contact: contact.into(),
            fatigue: FatiguePoints::from_points(fatigue),
            solicitations,
            value,
        }
    }

    #[test]
    fn category_is_the_stronger_of_fatigue_and_solicitations() {
        let c = PressureConfig::default(); // fatigue 2/8/15/25, counts 1/3/5/8
        use PressureCategory::*;
        assert_eq!(pressure_category(&c, FatiguePoints::ZERO, 0), VeryWeak);
        assert_eq!(
            pressure_category(&c, FatiguePoints::from_milli(1999), 0),
            VeryWeak
        );
        assert_eq!(
            pressure_category(&c, FatiguePoints::from_points(2), 0),
            Weak
        );
        assert_eq!(
            pressure_category(&c, FatiguePoints::from_points(8), 0),
            Neutral
        );
        assert_eq!(
            pressure_category(&c, FatiguePoints::from_points(8), 5),
            Strong
        );
        assert_eq!(
            pressure_category(&c, FatiguePoints::from_points(25), 0),
            VeryStrong
        );
        assert_eq!(pressure_category(&c, FatiguePoints::ZERO, 8), VeryStrong);
    }

    #[test]
    fn matrix_counts_cells_and_lists_misfits() {
        use ValueTier::*;
        let mut config = PressureConfig::default();
        let samples = vec![
            sample("a", 26, 0, NegativeMargin), // very strong on negative margin: +4
            sample("b", 9, 0, Minor),           // neutral on minor: +1
            sample("c", 0, 0, Strategic),       // very weak on strategic: −4
            sample("d", 16, 0, VeryImportant),  // strong on very important: 0
            sample("e", 3, 0, Important),       // weak on important: −1
        ];
        let m = pressure_matrix(&config, samples.clone());
        assert_eq!(m.count(PressureCategory::VeryStrong, NegativeMargin), 1);
        assert_eq!(m.count(PressureCategory::Strong, VeryImportant), 1);
        assert_eq!(m.counts.iter().flatten().sum::<u64>(), 5);
        let over: Vec<(&str, i8)> = m
            .over_pressured
            .iter()
            .map(|x| (&*x.contact, x.gap))
            .collect();
        assert_eq!(over, [("a", 4), ("b", 1)]);
        let under: Vec<(&str, i8)> = m
            .under_pressured
            .iter()
            .map(|x| (&*x.contact, x.gap))
            .collect();
        assert_eq!(under, [("c", -4), ("e", -1)]);

        config.tolerance = 1;
        let m = pressure_matrix(&config, samples);
        assert_eq!(m.over_pressured.len(), 1);
        assert_eq!(m.under_pressured.len(), 1);
        assert_eq!(Strategic.warranted(), PressureCategory::VeryStrong);
    }
}
