//! Plain data the store keeps for the layers above it: defined here so that
//! the store imports nothing from the passes that use it.

use crate::fatigue::ContactState;
use crate::model::{Contact, Event, Timestamp};
use serde::Serialize;

use super::StoredScore;

/// An event's properties.
pub type Props = serde_json::Map<String, serde_json::Value>;

/// A contact to rescore: internal key, the contact, its events (oldest
/// first) and its stored score.
pub type RescoreInput = (i64, Contact, Vec<Event>, Option<StoredScore>);

pub use crate::followups::BroadcastSpec;

/// What a planning pass folded of a contact's older history (see
/// `followups::memo`, which folds, encodes and decodes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMemo {
    /// Every event at or before this instant is folded in.
    pub upto: Timestamp,
    /// Built from an empty contact: only what events change (fatigue,
    /// recent sends, unsubscribes).
    pub state: ContactState,
    pub calls: CallStatus,
    /// The last instant of each kept event type, sorted by type.
    pub last: Vec<(String, Timestamp)>,
}

/// Where calls have left a prospect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CallStatus {
    /// Still worth calling; `unsuccessful` calls in a row so far.
    Open { unsuccessful: u32 },
    /// GAGNÉ: a meeting was booked.
    Won,
    /// ARRÊTÉ: too many unsuccessful calls in a row.
    Stopped,
    /// PERDU: refused or out of target.
    Lost,
}
