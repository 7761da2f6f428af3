//! PostgreSQL side of the call desk: the rows the scoring pass writes
//! (`contact_desk`, `desk_events`) and the reads of [`DeskStore`].

use super::{PgStore, not_yet};
use crate::adapters::sqlite::shared::{encode, to_micros};
use crate::core::model::Timestamp;
use crate::domain::desk::campaigns::{KeptEvent, SendRow};
use crate::domain::desk::kpis::CallRow;
use crate::domain::desk::today::Brief;
use crate::domain::desk::{DeskRow, ProspectStatus, StatusView};
use crate::ports::store::StoreError;
use crate::ports::store::desk::{CallTaskRow, DeskStore, DuplicateGroup, Listed};
use tokio_postgres::Transaction;

/// Writes a desk row and its kept events (in the pass's transaction);
/// `None` removes a row the rules no longer make.
pub(super) async fn save_desk(
    tx: &Transaction<'_>,
    key: i64,
    row: Option<&DeskRow>,
) -> Result<(), StoreError> {
    let Some(d) = row else {
        tx.execute("DELETE FROM contact_desk WHERE contact = $1", &[&key])
            .await?;
        return Ok(());
    };
    let set_by = d.status.set_by.as_ref().map(encode).transpose()?;
    tx.execute(
        "INSERT INTO contact_desk (contact, status, since, set_by, calls, last_call_at, last_code,
           callback_at, doc_at, do_not_call, owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (contact) DO UPDATE SET status = excluded.status, since = excluded.since,
           set_by = excluded.set_by, calls = excluded.calls, last_call_at = excluded.last_call_at,
           last_code = excluded.last_code, callback_at = excluded.callback_at,
           doc_at = excluded.doc_at, do_not_call = excluded.do_not_call, owner = excluded.owner",
        &[
            &key,
            &d.status.status.as_str(),
            &d.status.since.map(to_micros),
            &set_by,
            &i64::from(d.calls),
            &d.last_call.as_ref().map(|(at, _)| to_micros(*at)),
            &d.last_call.as_ref().map(|(_, c)| c.as_str()),
            &d.callback_at.map(to_micros),
            &d.documentation_at.map(to_micros),
            &d.do_not_call,
            &d.owner,
        ],
    )
    .await?;
    for e in &d.events {
        tx.execute(
            "INSERT INTO desk_events (contact, at, kind, code, key, owner, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &key,
                &to_micros(e.at),
                &e.kind.as_str(),
                &e.code,
                &e.key,
                &e.owner,
                &e.reason,
            ],
        )
        .await?;
    }
    Ok(())
}

impl PgStore {
    /// Records the country of national phone numbers (`[calls]
    /// default_country`): contacts written from now on are keyed with it.
    pub fn set_default_country(&self, country: &str) -> Result<(), StoreError> {
        self.tx(async |tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('desk.default_country', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value
                 WHERE meta.value IS DISTINCT FROM excluded.value",
                &[&country],
            )
            .await?;
            Ok(())
        })
    }
}

impl DeskStore for PgStore {
    fn prospect_status(&self, _id: &str) -> Result<StatusView, StoreError> {
        Err(not_yet("prospect_status"))
    }
    fn briefs(&self, _ids: &[String]) -> Result<Vec<Brief>, StoreError> {
        Err(not_yet("briefs"))
    }
    fn with_status(&self, _status: ProspectStatus) -> Result<Vec<String>, StoreError> {
        Err(not_yet("with_status"))
    }
    fn never_called(&self, _limit: u32) -> Result<Listed, StoreError> {
        Err(not_yet("never_called"))
    }
    fn never_call_again(&self, _limit: u32) -> Result<Listed, StoreError> {
        Err(not_yet("never_call_again"))
    }
    fn documented_not_called(&self, _limit: u32) -> Result<Listed, StoreError> {
        Err(not_yet("documented_not_called"))
    }
    fn callbacks_overdue(&self, _now: Timestamp, _limit: u32) -> Result<Listed, StoreError> {
        Err(not_yet("callbacks_overdue"))
    }
    fn callbacks_due(&self, _until: Timestamp) -> Result<Vec<String>, StoreError> {
        Err(not_yet("callbacks_due"))
    }
    fn hot_leads(
        &self,
        _bands: &[String],
        _called_before: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        Err(not_yet("hot_leads"))
    }
    fn call_tasks(
        &self,
        _channels: &[String],
        _until: Timestamp,
    ) -> Result<Vec<CallTaskRow>, StoreError> {
        Err(not_yet("call_tasks"))
    }
    fn calls_between(
        &self,
        _from: Timestamp,
        _to: Timestamp,
        _owner: Option<&str>,
    ) -> Result<Vec<CallRow>, StoreError> {
        Err(not_yet("calls_between"))
    }
    fn score_values(&self) -> Result<Vec<i64>, StoreError> {
        Err(not_yet("score_values"))
    }
    fn duplicate_groups(&self) -> Result<Vec<DuplicateGroup>, StoreError> {
        Err(not_yet("duplicate_groups"))
    }
    fn duplicates_of(&self, _ids: &[String]) -> Result<Vec<(String, DuplicateGroup)>, StoreError> {
        Err(not_yet("duplicates_of"))
    }
    fn sends_of(&self, _followups: &[String]) -> Result<Vec<SendRow>, StoreError> {
        Err(not_yet("sends_of"))
    }
    fn kept_events(
        &self,
        _contacts: &[String],
        _kinds: &[&str],
        _from: Timestamp,
    ) -> Result<Vec<KeptEvent>, StoreError> {
        Err(not_yet("kept_events"))
    }
    fn band_changes(
        &self,
        _contacts: &[String],
        _from: Timestamp,
    ) -> Result<Vec<(String, Timestamp, String, String)>, StoreError> {
        Err(not_yet("band_changes"))
    }
}
