//! What the dashboard reads from PostgreSQL: aggregates grouped in the
//! database.

use super::{PgStore, not_yet};
use crate::core::model::Timestamp;
use crate::ports::store::StoreError;
use crate::ports::store::ui::{ContactHit, DayCount, FollowupCount, UiReads};

impl UiReads for PgStore {
    fn score_histogram(&self, _width: i64) -> Result<Vec<(i64, u64)>, StoreError> {
        Err(not_yet("score_histogram"))
    }
    fn band_moves(&self, _from: Timestamp, _to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        Err(not_yet("band_moves"))
    }
    fn outbox_by_day(&self, _from: Timestamp, _to: Timestamp) -> Result<Vec<DayCount>, StoreError> {
        Err(not_yet("outbox_by_day"))
    }
    fn decision_reasons(
        &self,
        _from: Timestamp,
        _to: Timestamp,
    ) -> Result<Vec<DayCount>, StoreError> {
        Err(not_yet("decision_reasons"))
    }
    fn outbox_by_followup(&self) -> Result<Vec<FollowupCount>, StoreError> {
        Err(not_yet("outbox_by_followup"))
    }
    fn search_contacts(&self, _q: &str, _limit: u32) -> Result<Vec<ContactHit>, StoreError> {
        Err(not_yet("search_contacts"))
    }
    fn oldest_pending(&self) -> Result<Option<Timestamp>, StoreError> {
        Err(not_yet("oldest_pending"))
    }
}
