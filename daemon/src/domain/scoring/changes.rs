//! Score changes worth telling sales about: a band crossed, or a jump of at
//! least X points within Y days ("keep the film, not only the photo").

use super::config::ChangesConfig;
use super::model::{ScoreCard, ScoringModel};
use super::points::Points;
use crate::core::config::path::{Issues, KeyPath};
use crate::core::model::Timestamp;
use serde::Serialize;

pub(super) fn check(c: &ChangesConfig, at: &KeyPath, issues: &mut Issues) {
    if !c.jump_points.is_finite() || c.jump_points <= 0.0 {
        issues.push(at.key("jump_points"), "must be a positive number of points");
    }
    if c.jump_window.seconds() <= 0 {
        issues.push(at.key("jump_window"), "must be a positive duration");
    }
}

/// A past score of one contact, as kept by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScorePoint {
    pub at: Timestamp,
    pub score: Points,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    BandUp,
    BandDown,
    JumpUp,
    JumpDown,
}

impl ChangeKind {
    /// The name published to the follow-up engine and shown in the history.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::BandUp => "band_up",
            ChangeKind::BandDown => "band_down",
            ChangeKind::JumpUp => "jump_up",
            ChangeKind::JumpDown => "jump_down",
        }
    }
}

impl std::str::FromStr for ChangeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ChangeKind::BandUp,
            ChangeKind::BandDown,
            ChangeKind::JumpUp,
            ChangeKind::JumpDown,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown score change `{s}`"))
    }
}

/// One change, as a plain record for the planner and the history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreChange {
    pub contact: String,
    pub kind: ChangeKind,
    pub at: Timestamp,
    /// The band or score compared with: the previous card for band
    /// changes, the lowest (highest) score of the window for jumps.
    pub from_score: Points,
    pub to_score: Points,
    pub from_band: String,
    pub to_band: String,
    /// When the compared score was recorded.
    pub since: Timestamp,
}

/// Compares a new card with the previous one and the recent history.
#[derive(Clone, Debug)]
pub struct ChangeDetector {
    jump: Points,
    window: chrono::Duration,
}

impl ChangeDetector {
    pub fn new(config: &ChangesConfig) -> Self {
        Self {
            jump: Points::from_f64(config.jump_points),
            window: config.jump_window.0,
        }
    }

    /// How far back a jump is measured.
    pub fn window(&self) -> chrono::Duration {
        self.window
    }

    /// A contact's first score counts as entering its band from the lowest
    /// one: a new lead already hot gets the hot-lead follow-ups. `None` when
    /// the first score lands in the lowest band.
    pub fn first(
        &self,
        model: &ScoringModel,
        current: &ScoreCard,
        now: Timestamp,
    ) -> Option<ScoreChange> {
        let lowest = model.band_names().last()?;
        if **lowest == *current.band {
            return None;
        }
        Some(ScoreChange {
            contact: current.contact.clone(),
            kind: ChangeKind::BandUp,
            at: now,
            from_score: Points::ZERO,
            to_score: current.score,
            from_band: lowest.to_string(),
            to_band: current.band.to_string(),
            since: now,
        })
    }

    /// Changes between `previous` (scored at `previous_at`) and `current`
    /// (scored at `now`). `history` holds the contact's earlier scores in
    /// any order (older ones are ignored); a jump is reported once, on the
    /// pass where it is reached, not again while it stays in the window.
    pub fn detect(
        &self,
        model: &ScoringModel,
        previous: &ScoreCard,
        previous_at: Timestamp,
        history: &[ScorePoint],
        current: &ScoreCard,
        now: Timestamp,
    ) -> Vec<ScoreChange> {
        let mut out = Vec::new();
        let record = |kind, from: ScorePoint, from_band: &str| ScoreChange {
            contact: current.contact.clone(),
            kind,
            at: now,
            from_score: from.score,
            to_score: current.score,
            from_band: from_band.to_string(),
            to_band: current.band.to_string(),
            since: from.at,
        };
        let rank = |band: &str| model.band_names().position(|b| &**b == band);
        if let (Some(old), Some(new)) = (rank(&previous.band), rank(&current.band))
            && old != new
        {
            let kind = if new < old {
                ChangeKind::BandUp
            } else {
                ChangeKind::BandDown
            };
            let from = ScorePoint {
                at: previous_at,
                score: previous.score,
            };
            out.push(record(kind, from, &previous.band));
        }
        if previous.score == current.score {
            return out;
        }
        let start = now - self.window;
        let window = history
            .iter()
            .copied()
            .chain(std::iter::once(ScorePoint {
                at: previous_at,
                score: previous.score,
            }))
            .filter(|p| p.at >= start);
        let (mut low, mut high): (Option<ScorePoint>, Option<ScorePoint>) = (None, None);
        for p in window {
            if low.is_none_or(|l| p.score < l.score) {
                low = Some(p);
            }
            if high.is_none_or(|h| p.score > h.score) {
                high = Some(p);
            }
        }
        let band_of = |p: ScorePoint| model.band(p.score).to_string();
        if let Some(low) = low
            && current.score - low.score >= self.jump
            && previous.score - low.score < self.jump
        {
            out.push(record(ChangeKind::JumpUp, low, &band_of(low)));
        }
        if let Some(high) = high
            && high.score - current.score >= self.jump
            && high.score - previous.score < self.jump
        {
            out.push(record(ChangeKind::JumpDown, high, &band_of(high)));
        }
        out
    }
}

/// A contact's stored score: what the last pass found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredScore {
    pub contact: String,
    /// Hundredths of a point; serialised in points.
    #[serde(serialize_with = "super::points::hundredths_as_points")]
    pub score: i64,
    pub band: String,
    pub next_change_at: Option<Timestamp>,
    pub scored_at: Timestamp,
    /// Score snapshots of the recent past (the jump window), oldest first.
    #[serde(skip)]
    pub recent: Vec<(Timestamp, i64)>,
    /// The fingerprint of the desk row and campaign facts last written with
    /// it ([`crate::domain::desk::mark`]), where the store keeps one: an
    /// unchanged score with the same mark writes nothing.
    #[serde(skip)]
    pub desk_mark: Option<i64>,
}
