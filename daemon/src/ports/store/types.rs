//! Plain data the store keeps for the layers above it: defined here so that
//! the store imports nothing from the passes that use it.

use crate::core::model::{Contact, Event};

use crate::domain::scoring::StoredScore;

/// An event's properties.
pub type Props = serde_json::Map<String, serde_json::Value>;

/// A contact to rescore: internal key, the contact, its events (oldest
/// first) and its stored score.
pub type RescoreInput = (i64, Contact, Vec<Event>, Option<StoredScore>);

pub use crate::domain::followups::BroadcastSpec;
