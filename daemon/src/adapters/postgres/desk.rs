//! PostgreSQL side of the call desk: the rows the scoring pass writes
//! (`contact_desk`, `desk_events`) and the reads of [`DeskStore`].

use super::PgStore;
use super::arrays::{Param, execute};
use super::pipelined::InOrder;
use crate::adapters::sqlite::shared::{decode, encode, from_micros, to_micros};
use crate::core::model::{Contact, Timestamp};
use crate::domain::desk::campaigns::{self, CampaignCounts, ContactSend, Flags};
use crate::domain::desk::kpis::CallRow;
use crate::domain::desk::today::Brief;
use crate::domain::desk::{DeskEvent, DeskRow, ProspectStatus, SetBy, StatusView};
use crate::ports::store::desk::{
    CallTaskRow, DeskStore, DuplicateGroup, HotLeads, KeyKind, Listed, Ranked,
};
use crate::ports::store::{ScoreWrite, StoreError};
use std::collections::HashMap;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Transaction};

/// Statuses after which the desk does not call.
const NOT_CALLABLE: &str = "('ARRÊTÉ', 'PERDU')";

/// The columns [`read_brief`] reads: contact `c`, score `s`, desk `d`.
const BRIEF: &str = "c.id, c.record, s.score, s.band, d.status, d.since, d.set_by, d.calls, \
    d.last_call_at, d.last_code, d.callback_at, d.doc_at, d.do_not_call";
const BRIEF_FROM: &str = "FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid \
    LEFT JOIN contact_desk d ON d.contact = c.rowid";

fn micros(r: &Row, i: usize) -> Result<Option<Timestamp>, StoreError> {
    r.get::<_, Option<i64>>(i).map(from_micros).transpose()
}

fn read_status(r: &Row, at: usize) -> Result<StatusView, StoreError> {
    let Some(status) = r.get::<_, Option<&str>>(at) else {
        return Ok(StatusView::default());
    };
    Ok(StatusView {
        status: ProspectStatus::parse(status).map_err(StoreError::Corrupt)?,
        since: micros(r, at + 1)?,
        set_by: r
            .get::<_, Option<&str>>(at + 2)
            .map(decode::<SetBy>)
            .transpose()?,
    })
}

fn read_brief(r: &Row) -> Result<Brief, StoreError> {
    let contact: Contact = decode(r.get(1))?;
    let name = contact.display_name();
    Ok(Brief {
        id: r.get(0),
        name: (!name.is_empty() && name != contact.id).then_some(name),
        phone: contact.phone,
        company: contact.company,
        owner: contact.owner,
        score: r
            .get::<_, Option<i64>>(2)
            .map(|s| crate::domain::scoring::Points(s).as_f64()),
        band: r.get(3),
        status: read_status(r, 4)?,
        calls: r
            .get::<_, Option<i64>>(7)
            .map_or(0, |c| u32::try_from(c).unwrap_or(u32::MAX)),
        last_call_at: micros(r, 8)?,
        last_call_code: r.get(9),
        callback_at: micros(r, 10)?,
        documentation_at: micros(r, 11)?,
        do_not_call: r.get(12),
    })
}

/// A contact's owner in its record.
const OWNER: &str = "(c.record::jsonb ->> 'owner')";
const RANKED_FROM: &str = "FROM contacts c JOIN scores s ON s.contact = c.rowid \
    LEFT JOIN contact_desk d ON d.contact = c.rowid";
/// A hot lead of $1 (bands), $2 (called before), $3 (owner or NULL): read
/// from the scores and desk rows (the SQLite store keeps a queue instead).
const HOT: &str = "s.band = ANY($1::text[])
    AND (d.contact IS NULL OR (d.status NOT IN ('ARRÊTÉ', 'PERDU') AND d.do_not_call IS NULL
      AND (d.last_call_at IS NULL OR d.last_call_at < $2)))
    AND ($3::text IS NULL OR (c.record::jsonb ->> 'owner') = $3)";

fn read_ranked(r: &Row) -> Result<Ranked, StoreError> {
    Ok(Ranked {
        id: r.get(0),
        owner: r.get::<_, Option<String>>(1).filter(|o| !o.is_empty()),
        band: r.get(2),
        score: r.get(3),
        callback_at: micros(r, 4)?,
        hot: r.get(5),
    })
}

impl PgStore {
    /// Ranked rows of the contacts `filter` keeps ($4 is `arg`), with
    /// whether each is a hot lead; a contact never scored has no band.
    fn ranked_where(
        &self,
        filter: &str,
        hot: &HotLeads<'_>,
        arg: &(dyn ToSql + Sync),
    ) -> Result<Vec<Ranked>, StoreError> {
        self.read(async |c| {
            c.query(
                &format!(
                    "SELECT c.id, {OWNER}, s.band, s.score, d.callback_at, coalesce({HOT}, false)
                     FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid
                     LEFT JOIN contact_desk d ON d.contact = c.rowid
                     WHERE {filter}"
                ),
                &[&hot.bands, &to_micros(hot.called_before), &hot.owner, arg],
            )
            .await?
            .iter()
            .map(read_ranked)
            .collect()
        })
    }
}

/// Whether any contact was ever sent a follow-up: until then the pass
/// need not look for a contact's campaigns.
pub(super) async fn any_campaign(tx: &Transaction<'_>) -> Result<bool, StoreError> {
    Ok(tx
        .query_one("SELECT EXISTS (SELECT 1 FROM campaign_contacts)", &[])
        .await?
        .get(0))
}

/// Folds the campaign figures of the contacts `writes` (distinct, their
/// scores just written) into `campaign_contacts` (see
/// [`campaigns::refolded`]), in the pass's transaction: what is stored,
/// the sends and the band crossings (this batch's included) read for all
/// of them at once, the figures that changed written in one statement.
async fn save_campaigns(tx: &Transaction<'_>, writes: &[&ScoreWrite]) -> Result<(), StoreError> {
    let keys: Vec<i64> = writes.iter().map(|w| w.key).collect();
    let rows = tx
        .query_typed(
            "SELECT contact, campaign, opened, clicked, unsubscribed, in_target, band_up, meeting,
               purchase, sends FROM campaign_contacts WHERE contact = ANY($1)
             ORDER BY contact, campaign",
            &[(&keys, Type::INT8_ARRAY)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let flag = |r: &Row, i: usize| r.get::<_, i64>(i) != 0;
    let mut stored: HashMap<i64, Vec<(String, Flags, u64)>> = HashMap::new();
    for r in &rows {
        stored.entry(r.get(0)).or_default().push((
            r.get(1),
            Flags {
                opened: flag(r, 2),
                clicked: flag(r, 3),
                unsubscribed: flag(r, 4),
                in_target: flag(r, 5),
                band_up: flag(r, 6),
                meeting: flag(r, 7),
                purchase: flag(r, 8),
            },
            r.get::<_, i64>(9).max(0) as u64,
        ));
    }
    let mut sent_to: Vec<i64> = stored.keys().copied().collect();
    sent_to.sort_unstable();
    let of_keys: [Param<'_>; 1] = [(&sent_to, Type::INT8_ARRAY)];
    let (sends, crossings) = tokio::join!(
        tx.query_typed(
            "SELECT contact, idem_key, followup, updated_at FROM outbox
             WHERE contact = ANY($1) AND state = 'sent'",
            &of_keys,
        ),
        tx.query_typed(
            "SELECT contact, at FROM score_changes WHERE contact = ANY($1)
               AND kind IN ('band_up', 'jump_up') AND from_band <> to_band",
            &of_keys,
        ),
    )
    .in_order()?;
    let mut sends_of: HashMap<i64, Vec<ContactSend>> = HashMap::new();
    for r in &sends {
        sends_of.entry(r.get(0)).or_default().push(ContactSend {
            key: r.get(1),
            campaign: r.get(2),
            at: from_micros(r.get(3))?,
        });
    }
    let mut band_ups: HashMap<i64, Vec<Timestamp>> = HashMap::new();
    for r in &crossings {
        band_ups
            .entry(r.get(0))
            .or_default()
            .push(from_micros(r.get(1))?);
    }
    let mut set = CampaignColumns::default();
    for w in writes {
        let Some(stored) = stored.remove(&w.key) else {
            continue;
        };
        let events = w.desk.as_ref().map_or(&[][..], |d| &d.events);
        let sends = sends_of.get(&w.key).map_or(&[][..], Vec::as_slice);
        let ups = band_ups.get(&w.key).map_or(&[][..], Vec::as_slice);
        for (campaign, new) in campaigns::refolded(stored, sends, events, ups, &w.campaigns) {
            set.push(w.key, campaign, new);
        }
    }
    if set.contact.is_empty() {
        return Ok(());
    }
    let params: [Param<'_>; 9] = [
        (&set.contact, Type::INT8_ARRAY),
        (&set.campaign, Type::TEXT_ARRAY),
        (&set.flags[0], Type::INT8_ARRAY),
        (&set.flags[1], Type::INT8_ARRAY),
        (&set.flags[2], Type::INT8_ARRAY),
        (&set.flags[3], Type::INT8_ARRAY),
        (&set.flags[4], Type::INT8_ARRAY),
        (&set.flags[5], Type::INT8_ARRAY),
        (&set.flags[6], Type::INT8_ARRAY),
    ];
    tx.execute_typed(
        "UPDATE campaign_contacts c SET opened = u.opened, clicked = u.clicked,
           unsubscribed = u.unsubscribed, in_target = u.in_target, band_up = u.band_up,
           meeting = u.meeting, purchase = u.purchase
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
              AS u(contact, campaign, opened, clicked, unsubscribed, in_target, band_up,
                   meeting, purchase)
         WHERE c.contact = u.contact AND c.campaign = u.campaign",
        &params,
    )
    .await?;
    Ok(())
}

/// Campaign figures to store again, a column each (flags 0 or 1, in the
/// order of [`Flags`]' fields).
#[derive(Default)]
struct CampaignColumns {
    contact: Vec<i64>,
    campaign: Vec<String>,
    flags: [Vec<i64>; 7],
}

impl CampaignColumns {
    fn push(&mut self, key: i64, campaign: String, f: Flags) {
        self.contact.push(key);
        self.campaign.push(campaign);
        let values = [
            f.opened,
            f.clicked,
            f.unsubscribed,
            f.in_target,
            f.band_up,
            f.meeting,
            f.purchase,
        ];
        for (column, value) in self.flags.iter_mut().zip(values) {
            column.push(i64::from(value));
        }
    }
}

/// Writes the desk rows of the contacts `writes` (distinct, their scores
/// just written) and their kept events, in the pass's transaction, and
/// their campaign figures when `campaigns` says some contact was sent a
/// follow-up; a write without a row removes a row the rules no longer
/// make. One statement per table, pipelined.
pub(super) async fn save_desks(
    tx: &Transaction<'_>,
    writes: &[&ScoreWrite],
    campaigns: bool,
) -> Result<(), StoreError> {
    if campaigns {
        save_campaigns(tx, writes).await?;
    }
    let mut gone: Vec<i64> = Vec::new();
    let mut rows = DeskColumns::default();
    let mut kept = EventColumns::default();
    for w in writes {
        match &w.desk {
            None => gone.push(w.key),
            Some(d) => {
                rows.push(w.key, d)?;
                for e in &d.events {
                    kept.push(w.key, e);
                }
            }
        }
    }
    let removed_params: [Param<'_>; 1] = [(&gone, Type::INT8_ARRAY)];
    let removed = execute(
        tx,
        gone.len(),
        "DELETE FROM contact_desk WHERE contact = ANY($1)",
        &removed_params,
    );
    let written_params: [Param<'_>; 11] = [
        (&rows.contact, Type::INT8_ARRAY),
        (&rows.status, Type::TEXT_ARRAY),
        (&rows.since, Type::INT8_ARRAY),
        (&rows.set_by, Type::TEXT_ARRAY),
        (&rows.calls, Type::INT8_ARRAY),
        (&rows.last_call_at, Type::INT8_ARRAY),
        (&rows.last_code, Type::TEXT_ARRAY),
        (&rows.callback_at, Type::INT8_ARRAY),
        (&rows.doc_at, Type::INT8_ARRAY),
        (&rows.do_not_call, Type::TEXT_ARRAY),
        (&rows.owner, Type::TEXT_ARRAY),
    ];
    let written = execute(
        tx,
        rows.contact.len(),
        "INSERT INTO contact_desk (contact, status, since, set_by, calls, last_call_at,
           last_code, callback_at, doc_at, do_not_call, owner)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                              $5::bigint[], $6::bigint[], $7::text[], $8::bigint[],
                              $9::bigint[], $10::text[], $11::text[])
         ON CONFLICT (contact) DO UPDATE SET status = excluded.status,
           since = excluded.since, set_by = excluded.set_by, calls = excluded.calls,
           last_call_at = excluded.last_call_at, last_code = excluded.last_code,
           callback_at = excluded.callback_at, doc_at = excluded.doc_at,
           do_not_call = excluded.do_not_call, owner = excluded.owner",
        &written_params,
    );
    let logged_params: [Param<'_>; 7] = [
        (&kept.contact, Type::INT8_ARRAY),
        (&kept.at, Type::INT8_ARRAY),
        (&kept.kind, Type::TEXT_ARRAY),
        (&kept.code, Type::TEXT_ARRAY),
        (&kept.key, Type::TEXT_ARRAY),
        (&kept.owner, Type::TEXT_ARRAY),
        (&kept.reason, Type::TEXT_ARRAY),
    ];
    // A repeat (in the store or the batch) is left as it is.
    let logged = execute(
        tx,
        kept.contact.len(),
        "INSERT INTO desk_events (contact, at, kind, code, key, owner, reason)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                              $5::text[], $6::text[], $7::text[])
         ON CONFLICT DO NOTHING",
        &logged_params,
    );
    tokio::join!(removed, written, logged).in_order()?;
    Ok(())
}

/// Desk rows, a column each.
#[derive(Default)]
struct DeskColumns<'a> {
    contact: Vec<i64>,
    status: Vec<&'static str>,
    since: Vec<Option<i64>>,
    set_by: Vec<Option<String>>,
    calls: Vec<i64>,
    last_call_at: Vec<Option<i64>>,
    last_code: Vec<Option<&'a str>>,
    callback_at: Vec<Option<i64>>,
    doc_at: Vec<Option<i64>>,
    do_not_call: Vec<Option<&'a str>>,
    owner: Vec<Option<&'a str>>,
}

impl<'a> DeskColumns<'a> {
    fn push(&mut self, key: i64, d: &'a DeskRow) -> Result<(), StoreError> {
        self.contact.push(key);
        self.status.push(d.status.status.as_str());
        self.since.push(d.status.since.map(to_micros));
        self.set_by
            .push(d.status.set_by.as_ref().map(encode).transpose()?);
        self.calls.push(i64::from(d.calls));
        self.last_call_at
            .push(d.last_call.as_ref().map(|(at, _)| to_micros(*at)));
        self.last_code
            .push(d.last_call.as_ref().map(|(_, c)| c.as_str()));
        self.callback_at.push(d.callback_at.map(to_micros));
        self.doc_at.push(d.documentation_at.map(to_micros));
        self.do_not_call.push(d.do_not_call.as_deref());
        self.owner.push(d.owner.as_deref());
        Ok(())
    }
}

/// Kept desk events, a column each.
#[derive(Default)]
struct EventColumns<'a> {
    contact: Vec<i64>,
    at: Vec<i64>,
    kind: Vec<&'static str>,
    code: Vec<&'a str>,
    key: Vec<&'a str>,
    owner: Vec<&'a str>,
    reason: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, contact: i64, e: &'a DeskEvent) {
        self.contact.push(contact);
        self.at.push(to_micros(e.at));
        self.kind.push(e.kind.as_str());
        self.code.push(&e.code);
        self.key.push(&e.key);
        self.owner.push(&e.owner);
        self.reason.push(&e.reason);
    }
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

impl PgStore {
    fn listed(
        &self,
        filter: &str,
        args: &[&(dyn ToSql + Sync)],
        limit: u32,
    ) -> Result<Listed, StoreError> {
        self.snapshot(async |tx| {
            let total: i64 = tx
                .query_one(
                    &format!("SELECT count(*) {BRIEF_FROM} WHERE {filter}"),
                    args,
                )
                .await?
                .get(0);
            let contacts = tx
                .query(
                    &format!(
                        "SELECT {BRIEF} {BRIEF_FROM} WHERE {filter} ORDER BY c.id LIMIT {limit}"
                    ),
                    args,
                )
                .await?
                .iter()
                .map(read_brief)
                .collect::<Result<_, _>>()?;
            Ok(Listed {
                total: total as u64,
                contacts,
            })
        })
    }

    fn ids(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<String>, StoreError> {
        self.read(async |c| Ok(c.query(sql, args).await?.iter().map(|r| r.get(0)).collect()))
    }
}

impl DeskStore for PgStore {
    fn prospect_status(&self, id: &str) -> Result<StatusView, StoreError> {
        self.read(async |c| {
            match c
                .query_opt(
                    "SELECT d.status, d.since, d.set_by FROM contact_desk d
                     JOIN contacts c ON c.rowid = d.contact WHERE c.id = $1",
                    &[&id],
                )
                .await?
            {
                Some(r) => read_status(&r, 0),
                None => Ok(StatusView::default()),
            }
        })
    }

    fn briefs(&self, ids: &[String]) -> Result<Vec<Brief>, StoreError> {
        self.read(async |c| {
            c.query(
                &format!(
                    "SELECT {BRIEF} FROM unnest($1::text[]) WITH ORDINALITY j(id, n)
                     JOIN contacts c ON c.id = j.id
                     LEFT JOIN scores s ON s.contact = c.rowid
                     LEFT JOIN contact_desk d ON d.contact = c.rowid ORDER BY j.n"
                ),
                &[&ids],
            )
            .await?
            .iter()
            .map(read_brief)
            .collect()
        })
    }

    fn with_status(&self, status: ProspectStatus) -> Result<Vec<String>, StoreError> {
        if status == ProspectStatus::Cold {
            return self.ids(
                "SELECT c.id FROM contacts c LEFT JOIN contact_desk d ON d.contact = c.rowid
                 WHERE d.status IS NULL OR d.status = 'FROID' ORDER BY c.id",
                &[],
            );
        }
        self.ids(
            "SELECT c.id FROM contact_desk d JOIN contacts c ON c.rowid = d.contact
             WHERE d.status = $1 ORDER BY c.id",
            &[&status.as_str()],
        )
    }

    fn never_called(&self, limit: u32) -> Result<Listed, StoreError> {
        self.listed(
            "(d.contact IS NULL OR (d.calls = 0 AND d.do_not_call IS NULL))",
            &[],
            limit,
        )
    }

    fn never_call_again(&self, limit: u32) -> Result<Listed, StoreError> {
        self.listed(
            &format!(
                "d.contact IS NOT NULL AND (d.status IN {NOT_CALLABLE} OR d.do_not_call IS NOT NULL)"
            ),
            &[],
            limit,
        )
    }

    fn documented_not_called(&self, limit: u32) -> Result<Listed, StoreError> {
        self.listed(
            // The call that sent the documentation (MAIL) does not count.
            "d.doc_at IS NOT NULL AND (d.last_call_at IS NULL OR d.last_call_at <= d.doc_at)",
            &[],
            limit,
        )
    }

    fn callbacks_overdue(&self, now: Timestamp, limit: u32) -> Result<Listed, StoreError> {
        self.listed(
            &format!(
                "d.callback_at < $1 AND d.status NOT IN {NOT_CALLABLE} AND d.do_not_call IS NULL"
            ),
            &[&to_micros(now)],
            limit,
        )
    }

    fn callbacks_due(
        &self,
        until: Timestamp,
        hot: &HotLeads<'_>,
    ) -> Result<Vec<Ranked>, StoreError> {
        self.ranked_where(
            &format!(
                "d.callback_at < $4 AND d.status NOT IN {NOT_CALLABLE} AND d.do_not_call IS NULL"
            ),
            hot,
            &to_micros(until),
        )
    }

    fn ranked(&self, ids: &[String], hot: &HotLeads<'_>) -> Result<Vec<Ranked>, StoreError> {
        let mut found = self.ranked_where("c.id = ANY($4)", hot, &ids)?;
        let order: std::collections::HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        found.sort_by_key(|r| order.get(r.id.as_str()).copied());
        Ok(found)
    }

    fn hot_leads(&self, hot: &HotLeads<'_>, limit: u32) -> Result<Vec<Ranked>, StoreError> {
        let limit = i64::from(limit);
        self.read(async |c| {
            c.query(
                &format!(
                    "SELECT c.id, {OWNER}, s.band, s.score, d.callback_at, true {RANKED_FROM}
                     WHERE {HOT}
                     ORDER BY array_position($1::text[], s.band), s.score DESC,
                       coalesce(d.callback_at, 9223372036854775807), c.id COLLATE \"C\"
                     LIMIT $4"
                ),
                &[
                    &hot.bands,
                    &to_micros(hot.called_before),
                    &hot.owner,
                    &limit,
                ],
            )
            .await?
            .iter()
            .map(read_ranked)
            .collect()
        })
    }

    fn hot_lead_count(&self, hot: &HotLeads<'_>) -> Result<u64, StoreError> {
        self.read(async |c| {
            let n: i64 = c
                .query_one(
                    &format!("SELECT count(*) {RANKED_FROM} WHERE {HOT}"),
                    &[&hot.bands, &to_micros(hot.called_before), &hot.owner],
                )
                .await?
                .get(0);
            Ok(n.max(0) as u64)
        })
    }

    fn call_tasks(
        &self,
        channels: &[String],
        until: Timestamp,
    ) -> Result<Vec<CallTaskRow>, StoreError> {
        self.read(async |c| {
            c.query(
                "SELECT o.idem_key, c.id, o.followup, o.priority, o.channel, o.state, o.due_at,
                        o.updated_at
                 FROM outbox o JOIN contacts c ON c.rowid = o.contact
                 LEFT JOIN contact_desk d ON d.contact = o.contact
                 WHERE o.channel = ANY($1)
                   AND ((o.state IN ('planned', 'deferred', 'retrying', 'claimed') AND o.due_at < $2)
                     OR (o.state = 'sent' AND (d.last_call_at IS NULL OR d.last_call_at < o.updated_at)))",
                &[&channels, &to_micros(until)],
            )
            .await?
            .iter()
            .map(|r| {
                let state: String = r.get(5);
                let due: i64 = if state == "sent" { r.get(7) } else { r.get(6) };
                Ok(CallTaskRow {
                    key: r.get(0),
                    contact: r.get(1),
                    followup: r.get(2),
                    priority: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                    channel: r.get(4),
                    state,
                    due: from_micros(due)?,
                })
            })
            .collect()
        })
    }

    fn calls_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        owner: Option<&str>,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.read(async |c| {
            c.query(
                "SELECT c.id, e.at, e.owner, e.code, e.reason FROM desk_events e
                 JOIN contacts c ON c.rowid = e.contact
                 WHERE e.kind = 'call' AND e.at >= $1 AND e.at < $2
                   AND ($3::text IS NULL OR e.owner = $3)
                 ORDER BY e.owner, e.at, c.id",
                &[&to_micros(from), &to_micros(to), &owner],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(CallRow {
                    contact: r.get(0),
                    at: from_micros(r.get(1))?,
                    owner: r.get(2),
                    code: r.get(3),
                    reason: r.get(4),
                })
            })
            .collect()
        })
    }

    fn score_values(&self) -> Result<Vec<i64>, StoreError> {
        self.read(async |c| {
            Ok(c.query("SELECT score FROM scores ORDER BY score", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn duplicate_groups(&self) -> Result<Vec<DuplicateGroup>, StoreError> {
        let mut out = Vec::new();
        for (kind, column) in [(KeyKind::Email, "email_key"), (KeyKind::Phone, "phone_key")] {
            let groups = self.read(async |c| {
                Ok(c.query(
                    &format!(
                        "SELECT {column}, array_agg(id ORDER BY id) FROM contacts
                         WHERE {column} IN (SELECT {column} FROM contacts WHERE {column} IS NOT NULL
                                            GROUP BY {column} HAVING count(*) > 1)
                         GROUP BY {column} ORDER BY {column}"
                    ),
                    &[],
                )
                .await?)
            })?;
            out.extend(groups.iter().map(|r| DuplicateGroup {
                kind,
                key: r.get(0),
                contacts: r.get(1),
            }));
        }
        Ok(out)
    }

    fn duplicates_of(&self, ids: &[String]) -> Result<Vec<(String, DuplicateGroup)>, StoreError> {
        let mut out = Vec::new();
        for (kind, column) in [(KeyKind::Email, "email_key"), (KeyKind::Phone, "phone_key")] {
            let found = self.read(async |c| {
                Ok(c.query(
                    &format!(
                        "SELECT c.id, c.{column},
                                (SELECT array_agg(o.id ORDER BY o.id) FROM contacts o
                                 WHERE o.{column} = c.{column})
                         FROM unnest($1::text[]) WITH ORDINALITY j(id, n)
                         JOIN contacts c ON c.id = j.id
                         WHERE c.{column} IS NOT NULL
                           AND EXISTS (SELECT 1 FROM contacts x
                                       WHERE x.{column} = c.{column} AND x.id <> c.id)
                         ORDER BY j.n"
                    ),
                    &[&ids],
                )
                .await?)
            })?;
            out.extend(found.iter().map(|r| {
                (
                    r.get(0),
                    DuplicateGroup {
                        kind,
                        key: r.get(1),
                        contacts: r.get(2),
                    },
                )
            }));
        }
        Ok(out)
    }

    /// Summed from the per-contact rows at read time (see migration 4):
    /// one index range per campaign asked for.
    fn campaign_counts(&self, campaigns: &[String]) -> Result<Vec<CampaignCounts>, StoreError> {
        self.read(async |c| {
            c.query(
                "SELECT campaign, sum(sends)::bigint, count(*), sum(opened)::bigint,
                   sum(clicked)::bigint, sum(unsubscribed)::bigint,
                   sum(clicked * in_target)::bigint, sum(band_up)::bigint, sum(meeting)::bigint,
                   sum(purchase)::bigint, sum(greatest(band_up, meeting, purchase))::bigint
                 FROM campaign_contacts WHERE campaign = ANY($1)
                 GROUP BY campaign ORDER BY campaign",
                &[&campaigns],
            )
            .await?
            .iter()
            .map(|r| {
                let n = |i: usize| -> u64 { r.get::<_, i64>(i).max(0) as u64 };
                Ok(CampaignCounts {
                    campaign: r.get(0),
                    sent: n(1),
                    contacts: n(2),
                    opened: n(3),
                    clicked: n(4),
                    unsubscribed: n(5),
                    clicked_in_target: n(6),
                    band_up: n(7),
                    meeting: n(8),
                    purchase: n(9),
                    converted: n(10),
                })
            })
            .collect()
        })
    }
}
