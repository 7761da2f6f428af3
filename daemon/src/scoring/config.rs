//! The `[scoring]` section.

use crate::config::{Issues, KeyPath, Validate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Named bands, highest first; a contact is in the first band whose
    /// `min` it reaches, the last band has no `min`.
    pub bands: Vec<BandConfig>,
    /// Points lost per full month (30 days) since the last activity.
    pub inactivity_malus_per_month: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BandConfig {
    pub name: String,
    #[serde(default)]
    pub min: Option<f64>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            bands: vec![
                BandConfig {
                    name: "hot".into(),
                    min: Some(150.0),
                },
                BandConfig {
                    name: "warm".into(),
                    min: Some(100.0),
                },
                BandConfig {
                    name: "cold".into(),
                    min: None,
                },
            ],
            inactivity_malus_per_month: 0.0,
        }
    }
}

impl Validate for ScoringConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        let bands = at.key("bands");
        if self.bands.is_empty() {
            issues.push(bands.clone(), "at least one band is required");
        }
        let mut names = BTreeSet::new();
        let last = self.bands.len().saturating_sub(1);
        for (i, band) in self.bands.iter().enumerate() {
            if !names.insert(band.name.as_str()) {
                issues.push(
                    bands.index(i).key("name"),
                    format!("band `{}` is defined twice", band.name),
                );
            }
            match (i == last, band.min) {
                (false, None) => issues.push(
                    bands.index(i).key("min"),
                    "every band but the last needs a `min`",
                ),
                (true, Some(_)) if i > 0 => issues.push(
                    bands.index(i).key("min"),
                    "the last band catches every lower score and takes no `min`",
                ),
                _ => {}
            }
            if let (Some(prev), Some(min)) =
                (i.checked_sub(1).and_then(|p| self.bands[p].min), band.min)
                && min >= prev
            {
                issues.push(
                    bands.index(i).key("min"),
                    format!(
                        "bands must be listed highest first: `{}` has min {min}, not below {prev} of `{}`",
                        band.name,
                        self.bands[i - 1].name
                    ),
                );
            }
        }
        if !self.inactivity_malus_per_month.is_finite() || self.inactivity_malus_per_month < 0.0 {
            issues.push(
                at.key("inactivity_malus_per_month"),
                "must be zero or a positive number",
            );
        }
    }
}
