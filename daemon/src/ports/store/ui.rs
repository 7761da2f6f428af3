//! What the dashboard reads: aggregates the store keeps as the passes
//! write (counts per bucket, day and key; the pressure pass's grid), never
//! a walk over events, scores or the outbox, so that a page stays fast at a
//! million contacts. Every read takes `&self`.

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

/// A customer placed on the pressure grid by the last pressure pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PressureRow {
    pub contact: String,
    /// Pressure rank, 0 (very weak) to 4 (very strong).
    pub pressure: u8,
    /// Value rank, 0 (negative margin) to 4 (strategic).
    pub value: u8,
    /// Pressure rank minus value rank.
    pub gap: i8,
    /// Fatigue in milli-points at the pass.
    pub fatigue_milli: i64,
    /// Solicitations in the window at the pass.
    pub solicitations: u32,
}

/// The last pressure pass's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PressureGrid {
    /// `counts[pressure rank][value rank]`.
    pub counts: [[u64; 5]; 5],
    /// When the pass ran; `None` before the first.
    pub computed: Option<Timestamp>,
}

/// Which of the pressure pass's customers to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressureList {
    /// One cell: (pressure rank, value rank).
    Cell(u8, u8),
    /// Gap above the tolerance, largest first.
    Over(i8),
    /// Gap below minus the tolerance, largest (most negative) first.
    Under(i8),
}

pub trait UiReads {
    /// Stored scores counted per bucket of `width` hundredths, rounded up to
    /// whole points: (bucket's lower bound, count), ascending, empty
    /// buckets left out.
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
    /// Contacts whose id or email is `q` exactly, else whose first name,
    /// last name or both (either order) start with it, case aside; at most
    /// `limit`, by id.
    fn search_contacts(&self, q: &str, limit: u32) -> Result<Vec<ContactHit>, StoreError>;
    /// The earliest due instant among rows still to send.
    fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Replaces the pressure grid with a pass's result (one transaction).
    fn replace_pressure(&self, rows: &[PressureRow], at: Timestamp) -> Result<(), StoreError>;
    /// The last pressure pass's counts.
    fn pressure_grid(&self) -> Result<PressureGrid, StoreError>;
    /// A page of the last pressure pass's customers (by contact id within
    /// a cell; by gap, then id, in a list), and how many there are in all.
    fn pressure_list(
        &self,
        which: PressureList,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<PressureRow>, u64), StoreError>;
}
