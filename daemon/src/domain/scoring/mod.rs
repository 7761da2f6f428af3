//! Lead, deal and customer scoring. Pure: takes plain data and an instant,
//! does no I/O.
//!
//! The integrator compiles `[scoring]` once with [`ScoringModel::compile`],
//! then calls [`ScoringModel::score`] per contact (full rebuild), or keeps a
//! [`Rescorer`] and rescores only contacts with new events or whose
//! `next_change_at` has passed; [`ChangeDetector`] turns two successive
//! cards into change records.

pub mod changes;
pub mod config;
pub mod customers;
pub mod deals;
pub mod incremental;
pub mod model;
pub mod points;
pub mod whatif;

pub use changes::{ChangeDetector, ChangeKind, ScoreChange, ScorePoint, StoredScore};
pub use config::ScoringConfig;
pub use customers::{Abc, CustomerScore, Rfm, RfmSegment, ValueTier, score_customers};
pub use deals::{DealInput, DealModel, DealScore};
pub use incremental::Rescorer;
pub use model::{
    Contribution, CountedEvent, Recency, RuleKind, ScoreCard, ScoringError, ScoringModel,
};
pub use points::Points;
pub use whatif::{BandMove, ScoreDelta, WhatIf, what_if};

#[cfg(test)]
mod tests;
