//! What the call desk and the sales-ops reports read: rows the scoring
//! pass maintains (`contact_desk`, `desk_events`), campaign sums kept as
//! sends are delivered and reactions scored, normalised contact keys and
//! the outbox. Reads only, through `&self`.

use super::StoreError;
use crate::core::model::Timestamp;
use crate::domain::desk::StatusView;
use crate::domain::desk::campaigns::CampaignCounts;
use crate::domain::desk::kpis::CallRow;
use crate::domain::desk::today::Brief;
use serde::Serialize;

/// A call task planned or delivered on a call channel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallTaskRow {
    pub key: String,
    pub contact: String,
    pub followup: String,
    pub priority: u32,
    pub channel: String,
    pub state: String,
    pub due: Timestamp,
}

/// Which key two contacts share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Email,
    Phone,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Email => "email",
            KeyKind::Phone => "phone",
        })
    }
}

/// Contacts sharing one normalised key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DuplicateGroup {
    pub kind: KeyKind,
    pub key: String,
    /// Ids, sorted.
    pub contacts: Vec<String>,
}

/// A contact as `calls today` ranks it (priority aside): band, score,
/// call-back date; and whether it is a hot lead of the [`HotLeads`] asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranked {
    pub id: String,
    /// The contact's owner (`None`: nobody).
    pub owner: Option<String>,
    pub band: Option<String>,
    /// In hundredths.
    pub score: Option<i64>,
    pub callback_at: Option<Timestamp>,
    pub hot: bool,
}

/// Which contacts are hot leads to call: in one of `bands` (highest
/// first), callable, not called since `called_before`, of `owner` when
/// given; as of the last scoring pass (its call queue).
#[derive(Clone, Copy, Debug)]
pub struct HotLeads<'a> {
    pub bands: &'a [String],
    pub called_before: Timestamp,
    pub owner: Option<&'a str>,
}

/// A contact's row in the call queue the scoring pass keeps: written with
/// its score when the contact is in a hot band and callable (see
/// [`crate::ports::store::ScoreWrite::hot_lead`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotLead {
    pub owner: Option<String>,
}

/// How many rows a list holds, and the first `limit` of them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Listed {
    pub total: u64,
    pub contacts: Vec<Brief>,
}

/// The call desk's reads.
pub trait DeskStore {
    /// The stored prospect status of a contact (FROID when nothing set it).
    fn prospect_status(&self, id: &str) -> Result<StatusView, StoreError>;
    /// Contacts briefs by id (unknown ids left out), in the order given.
    fn briefs(&self, ids: &[String]) -> Result<Vec<Brief>, StoreError>;
    /// Ids of the contacts whose stored status is `status`, sorted.
    fn with_status(
        &self,
        status: crate::domain::desk::ProspectStatus,
    ) -> Result<Vec<String>, StoreError>;
    /// Contacts never called (and not on do-not-contact), in id order.
    fn never_called(&self, limit: u32) -> Result<Listed, StoreError>;
    /// ARRÊTÉ, PERDU or do-not-contact.
    fn never_call_again(&self, limit: u32) -> Result<Listed, StoreError>;
    /// Got documentation and not called since.
    fn documented_not_called(&self, limit: u32) -> Result<Listed, StoreError>;
    /// A call-back date before `now`, still callable, not called since.
    fn callbacks_overdue(&self, now: Timestamp, limit: u32) -> Result<Listed, StoreError>;
    /// Contacts with a call-back due before `until`, callable, not called
    /// since; `hot` says which are also in `hot`.
    fn callbacks_due(
        &self,
        until: Timestamp,
        hot: &HotLeads<'_>,
    ) -> Result<Vec<Ranked>, StoreError>;
    /// The same for `ids` (unknown ids left out).
    fn ranked(&self, ids: &[String], hot: &HotLeads<'_>) -> Result<Vec<Ranked>, StoreError>;
    /// The first `limit` hot leads in rank order: band (in the order of
    /// `hot.bands`), score (highest first), call-back date (earliest first,
    /// none last), id. Read through an index, not a scan.
    fn hot_leads(&self, hot: &HotLeads<'_>, limit: u32) -> Result<Vec<Ranked>, StoreError>;
    /// How many hot leads there are, from counts the store keeps.
    fn hot_lead_count(&self, hot: &HotLeads<'_>) -> Result<u64, StoreError>;
    /// Call tasks on `channels` pending and due before `until`, or delivered
    /// after the contact's last call.
    fn call_tasks(
        &self,
        channels: &[String],
        until: Timestamp,
    ) -> Result<Vec<CallTaskRow>, StoreError>;
    /// Calls in `[from, to)`, by owner then instant.
    fn calls_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        owner: Option<&str>,
    ) -> Result<Vec<CallRow>, StoreError>;
    /// Every stored score, in hundredths, ascending.
    fn score_values(&self) -> Result<Vec<i64>, StoreError>;
    /// Groups of contacts sharing a normalised email or phone.
    fn duplicate_groups(&self) -> Result<Vec<DuplicateGroup>, StoreError>;
    /// For each of `ids`, the other contacts sharing one of its keys.
    fn duplicates_of(&self, ids: &[String]) -> Result<Vec<(String, DuplicateGroup)>, StoreError>;
    /// The sums kept for `campaigns` (broadcast or sequence names); a
    /// campaign never sent has none.
    fn campaign_counts(&self, campaigns: &[String]) -> Result<Vec<CampaignCounts>, StoreError>;
}
