//! What the dashboard reads: aggregates (counts grouped in the database),
//! never a walk over events, so that a page stays fast at a million
//! contacts. Every read takes `&self`.

use super::StoreError;
use crate::core::model::Timestamp;
use serde::Serialize;

/// Rows counted under one grouping key on one day (days since the epoch, UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DayCount {
    pub day: i64,
    pub key: Vec<String>,
    pub n: u64,
}

/// Outbox rows of one follow-up in one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FollowupCount {
    pub followup: String,
    pub kind: String,
    pub channel: String,
    pub state: String,
    pub n: u64,
}

/// A contact found by the dashboard's search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactHit {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    /// Hundredths of a point.
    pub score: Option<i64>,
    pub band: Option<String>,
}

pub trait UiReads {
    /// Stored scores counted per bucket of `width` hundredths: (bucket's
    /// lower bound, count), ascending.
    fn score_histogram(&self, width: i64) -> Result<Vec<(i64, u64)>, StoreError>;
    /// Band crossings per day in `[from, to)`: key = [from band, to band].
    fn band_moves(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError>;
    /// Outbox rows per day first due in `[from, to)`: key = [state, kind, channel].
    fn outbox_by_day(&self, from: Timestamp, to: Timestamp) -> Result<Vec<DayCount>, StoreError>;
    /// Guard and planner decisions in `[from, to)` per (decision, first
    /// reason's rule): key = [decision, rule].
    fn decision_reasons(&self, from: Timestamp, to: Timestamp)
    -> Result<Vec<DayCount>, StoreError>;
    /// Outbox rows per follow-up, kind, channel and state.
    fn outbox_by_followup(&self) -> Result<Vec<FollowupCount>, StoreError>;
    /// Contacts whose id or email is `q` exactly, else whose name contains
    /// it; at most `limit`.
    fn search_contacts(&self, q: &str, limit: u32) -> Result<Vec<ContactHit>, StoreError>;
    /// The earliest due instant among rows still to send.
    fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError>;
}
