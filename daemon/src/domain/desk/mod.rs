//! The call desk and the sales-ops reports (seeds 001–003): prospect
//! status, who to call today, caller lists, call KPIs per session, day or
//! week, duplicates, the score distribution and campaign effectiveness.
//!
//! Pure computations over plain data ([`kpis`], [`distribution`],
//! [`campaigns`], [`today`]) and the functions that feed them from what the
//! scoring pass maintains (`crate::pipeline::report`), so that the command line, the API
//! and a dashboard show the same figures.

pub mod campaigns;
pub mod config;
pub mod distribution;
pub mod keys;
pub mod kpis;
pub mod status;
pub mod today;

pub use config::DeskConfig;
pub use status::{DeskEvent, DeskKind, DeskRow, DeskRules, ProspectStatus, SetBy, StatusView};

/// Rounds a ratio to four decimals, so that JSON figures read exactly.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| (num / den * 10_000.0).round() / 10_000.0)
}
