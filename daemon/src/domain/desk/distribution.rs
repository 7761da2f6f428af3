//! The score distribution (seed 001: a chart of it guides the threshold):
//! a histogram of equal-width bins, the band thresholds, per band counts
//! and percentiles (nearest rank).

use crate::domain::scoring::Points;
use crate::domain::scoring::config::BandConfig;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// Lower bound, included, in points.
    pub from: Points,
    /// Upper bound, excluded (included for the last bin).
    pub to: Points,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BandCount {
    pub band: String,
    /// The band's threshold in points (none for the lowest band).
    pub min: Option<f64>,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    pub contacts: u64,
    pub min: Option<Points>,
    pub max: Option<Points>,
    pub mean: Option<f64>,
    /// p10, p25, p50, p75, p90, p99.
    pub percentiles: Vec<(String, Points)>,
    pub bins: Vec<Bin>,
    /// Highest band first, as configured.
    pub bands: Vec<BandCount>,
}

const PERCENTILES: [u32; 6] = [10, 25, 50, 75, 90, 99];

/// The distribution of `scores` (hundredths, sorted ascending) in `bins`
/// bins (at least 1), with the bands as configured (highest first).
pub fn distribution(scores: &[i64], bins: u32, bands: &[BandConfig]) -> Distribution {
    let n = scores.len();
    let bins = bins.max(1) as usize;
    let mut out = Distribution {
        contacts: n as u64,
        min: scores.first().map(|s| Points(*s)),
        max: scores.last().map(|s| Points(*s)),
        mean: None,
        percentiles: Vec::new(),
        bins: Vec::new(),
        bands: bands
            .iter()
            .map(|b| BandCount {
                band: b.name.clone(),
                min: b.min,
                count: 0,
            })
            .collect(),
    };
    let (Some(&lo), Some(&hi)) = (scores.first(), scores.last()) else {
        return out;
    };
    let sum: i128 = scores.iter().map(|s| i128::from(*s)).sum();
    out.mean = Some((sum as f64 / n as f64).round() / 100.0);
    for p in PERCENTILES {
        // Nearest rank: the smallest score with at least p % at or below it.
        let rank = (u64::from(p) * n as u64).div_ceil(100).max(1) as usize;
        out.percentiles
            .push((format!("p{p}"), Points(scores[rank - 1])));
    }
    // Bins in whole hundredths: the last one closes on the maximum.
    let width = ((hi - lo) as usize).div_ceil(bins).max(1) as i64;
    out.bins = (0..bins as i64)
        .map(|i| Bin {
            from: Points(lo + i * width),
            to: Points(lo + (i + 1) * width),
            count: 0,
        })
        .collect();
    for &s in scores {
        let i = (((s - lo) / width) as usize).min(bins - 1);
        out.bins[i].count += 1;
        let band = bands
            .iter()
            .position(|b| b.min.is_none_or(|m| Points(s) >= Points::from_f64(m)))
            .unwrap_or(bands.len().saturating_sub(1));
        if let Some(b) = out.bands.get_mut(band) {
            b.count += 1;
        }
    }
    out
}

impl Distribution {
    /// A text histogram: one line per bin with a bar, the band thresholds
    /// marked where they fall.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let widest = self.bins.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        let mut marks: Vec<(&str, Points)> = self
            .bands
            .iter()
            .filter_map(|b| Some((b.band.as_str(), Points::from_f64(b.min?))))
            .collect();
        marks.sort_by_key(|(_, p)| *p);
        for bin in &self.bins {
            for (band, at) in &marks {
                if *at >= bin.from && *at < bin.to {
                    s.push_str(&format!("{:>21} ---- {band} from {at}\n", ""));
                }
            }
            let bar = "#".repeat((bin.count * 40).div_ceil(widest) as usize);
            s.push_str(&format!(
                "{:>9} – {:<9} {:>8} {bar}\n",
                bin.from.to_string(),
                bin.to.to_string(),
                bin.count
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_bands_and_percentiles_are_exact() {
        let scores: Vec<i64> = (1..=10).map(|p| p * 1_000).collect();
        let bands = vec![
            BandConfig {
                name: "hot".into(),
                min: Some(80.0),
            },
            BandConfig {
                name: "cold".into(),
                min: None,
            },
        ];
        let d = distribution(&scores, 3, &bands);
        assert_eq!(
            d.bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![3, 3, 4]
        );
        assert_eq!(d.bands[0].count, 3);
        assert_eq!(d.bands[1].count, 7);
        assert_eq!(d.percentiles[2], ("p50".into(), Points(5_000)));
        assert_eq!(d.mean, Some(55.0));
        assert!(d.render().contains("hot from 80"));
    }
}
