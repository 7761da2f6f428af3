//! Follow-ups on a channel that is not configured wait in the outbox
//! (deferred, with the reason as their error) instead of being attempted
//! and dying: giving the settings and reloading sends them.

use crate::core::model::Timestamp;
use crate::domain::fatigue::admit::{Admission, AdmissionVerdict, ClaimStop, Why};
use crate::domain::outbox::Row;
use crate::ports::store::{OutboxStore, StoreError};
use std::collections::BTreeMap;

/// How long a waiting row sleeps before it is looked at again.
pub const RECHECK: chrono::Duration = chrono::Duration::minutes(15);

/// The claim's answer for a row on an unconfigured channel: deferred,
/// without counting an attempt.
pub fn admission(row: &Row, reason: &str, now: Timestamp) -> Admission {
    Admission {
        verdict: AdmissionVerdict::Defer {
            until: now + RECHECK,
        },
        reasons: vec![Why::Claim(ClaimStop::ChannelNotConfigured {
            channel: row.channel.clone(),
            detail: reason.to_owned(),
        })],
    }
}

/// Writes the reason on every pending row of the unconfigured channels, so
/// that `relance outbox` and `GET /v1/outbox` say why they wait.
pub fn note(
    store: &dyn OutboxStore,
    unconfigured: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    for (channel, reason) in unconfigured {
        store.note_waiting(channel, reason)?;
    }
    Ok(())
}
