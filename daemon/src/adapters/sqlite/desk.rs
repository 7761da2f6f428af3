//! SQLite side of the call desk: rows the scoring pass writes
//! (`contact_desk`, `desk_events`), contact keys written with each
//! contact, and the reads of [`DeskStore`].

use super::conn::{Conn, decode, from_micros, to_micros};
use crate::core::model::{Contact, Timestamp};
use crate::domain::desk::campaigns::{self, CampaignCounts, CampaignFacts, ContactSend, Flags};
use crate::domain::desk::kpis::CallRow;
use crate::domain::desk::today::Brief;
use crate::domain::desk::{DeskEvent, DeskKind, DeskRow, ProspectStatus, SetBy, StatusView, keys};
use crate::ports::store::ScoreWrite;
use crate::ports::store::StoreError;
use crate::ports::store::desk::{
    CallTaskRow, DeskStore, DuplicateGroup, HotLeads, KeyKind, Listed, Ranked,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;

/// The meta key of the country national phone numbers belong to.
const COUNTRY: &str = "desk.default_country";

/// The country keys are computed with (FR until configured).
pub(super) fn default_country(tx: &Connection) -> Result<String, StoreError> {
    Ok(tx
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([COUNTRY], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| "FR".to_string()))
}

/// The normalised email and phone of a contact.
pub(crate) fn contact_keys(c: &Contact, country: &str) -> (Option<String>, Option<String>) {
    (
        c.email.as_deref().and_then(keys::email_key),
        c.phone.as_deref().and_then(|p| keys::phone_key(p, country)),
    )
}

/// Writes a contact (parameters: id, record, company, email, email key,
/// phone key) and returns its rowid.
pub(super) const UPSERT_CONTACT: &str = "INSERT INTO contacts
      (id, record, company, email, email_key, phone_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(id) DO UPDATE SET record = excluded.record, company = excluded.company,
      email = excluded.email, email_key = excluded.email_key, phone_key = excluded.phone_key
    RETURNING rowid, 0, 0";

/// The same, and whether another contact has the email key, the phone key.
pub(super) const UPSERT_CONTACT_CHECKED: &str = "INSERT INTO contacts
      (id, record, company, email, email_key, phone_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT(id) DO UPDATE SET record = excluded.record, company = excluded.company,
      email = excluded.email, email_key = excluded.email_key, phone_key = excluded.phone_key
    RETURNING rowid,
      ?5 IS NOT NULL AND EXISTS (SELECT 1 FROM contacts x
        WHERE x.email_key = ?5 AND x.rowid <> contacts.rowid),
      ?6 IS NOT NULL AND EXISTS (SELECT 1 FROM contacts x
        WHERE x.phone_key = ?6 AND x.rowid <> contacts.rowid)";

const KEY_COLUMNS: [(KeyKind, &str); 2] =
    [(KeyKind::Email, "email_key"), (KeyKind::Phone, "phone_key")];

/// The contacts holding a key, by id.
fn group(tx: &Connection, kind: KeyKind, key: &str) -> Result<Vec<String>, StoreError> {
    let column = if kind == KeyKind::Email {
        "email_key"
    } else {
        "phone_key"
    };
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT id FROM contacts WHERE {column} = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([key], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The batch's contacts in a group of the keys `met` (found twice while
/// writing it): (id, group), emails first, each in batch order.
pub(super) fn flag_batch(
    tx: &Connection,
    batch: &[crate::domain::ingest::Patch],
    met: &BTreeSet<(KeyKind, String)>,
) -> Result<Vec<(String, DuplicateGroup)>, StoreError> {
    let mut groups = Vec::new();
    for (kind, key) in met {
        let contacts = group(tx, *kind, key)?;
        if contacts.len() > 1 {
            groups.push(DuplicateGroup {
                kind: *kind,
                key: key.clone(),
                contacts,
            });
        }
    }
    let mut out = Vec::new();
    for kind in [KeyKind::Email, KeyKind::Phone] {
        for p in batch {
            for g in groups.iter().filter(|g| g.kind == kind) {
                if g.contacts.binary_search(&p.id).is_ok()
                    && !out
                        .iter()
                        .any(|(id, o): &(String, DuplicateGroup)| *id == p.id && o == g)
                {
                    out.push((p.id.clone(), g.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// The indexes duplicate detection reads (see `Records::begin_contact_load`).
pub(super) const KEY_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS contacts_by_email_key ON contacts(email_key) WHERE email_key IS NOT NULL;
    CREATE INDEX IF NOT EXISTS contacts_by_phone_key ON contacts(phone_key) WHERE phone_key IS NOT NULL;";

impl Conn {
    /// Drops the key indexes for a bulk load: a million contacts with
    /// emails in no particular order make a million inserts on random
    /// pages of each index, where building it after the load is one sort.
    pub(super) fn begin_contact_load(&mut self) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute_batch(
                "DROP INDEX IF EXISTS contacts_by_email_key;
                 DROP INDEX IF EXISTS contacts_by_phone_key;",
            )?;
            Ok(())
        })
    }

    /// Builds the key indexes again (SQLite sorts the keys once) and reads
    /// the groups through them.
    pub(super) fn end_contact_load(&mut self) -> Result<Vec<DuplicateGroup>, StoreError> {
        self.write(|tx| {
            tx.execute_batch(KEY_INDEXES)?;
            Ok(())
        })?;
        self.duplicate_groups()
    }
}

/// Whether any contact was ever sent a follow-up: until then the pass
/// need not look for a contact's campaigns.
pub(super) fn any_campaign(tx: &Connection) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM campaign_contacts)")?
        .query_row([], |r| r.get(0))?)
}

/// Writes a contact's desk row and calls (in the pass's transaction), and
/// its campaign figures when `campaigns` says some contact was sent a
/// follow-up (`scored_before`: the contact had a score). A row that says nothing beyond the default (never called,
/// FROID, no dates, callable) is not stored: a missing row reads as that.
pub(super) fn save_desk(
    tx: &Connection,
    key: i64,
    (id, band, score): (&str, &str, i64),
    row: Option<&DeskRow>,
    facts: &CampaignFacts,
    campaigns: bool,
    scored_before: bool,
) -> Result<(), StoreError> {
    if campaigns {
        save_campaigns(tx, key, row.map_or(&[][..], |d| &d.events), facts)?;
    }
    let Some(d) = row.filter(|d| !plain(d)) else {
        // A contact never scored has no row (they are written together).
        if scored_before {
            tx.prepare_cached("DELETE FROM contact_desk WHERE contact = ?1")?
                .execute([key])?;
        }
        return Ok(());
    };
    let set_by = d
        .status
        .set_by
        .as_ref()
        .map(super::conn::encode)
        .transpose()?;
    tx.prepare_cached(
        "INSERT INTO contact_desk (contact, status, since, set_by, calls, last_call_at, last_code,
           callback_at, doc_at, do_not_call, owner, id, band, score)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT(contact) DO UPDATE SET status = excluded.status, since = excluded.since,
           set_by = excluded.set_by, calls = excluded.calls, last_call_at = excluded.last_call_at,
           last_code = excluded.last_code, callback_at = excluded.callback_at,
           doc_at = excluded.doc_at, do_not_call = excluded.do_not_call, owner = excluded.owner,
           id = excluded.id, band = excluded.band, score = excluded.score
         -- A row as stored is left alone: no page written.
         WHERE (status, since, set_by, calls, last_call_at, last_code, callback_at, doc_at,
             do_not_call, owner, id, band, score)
           IS NOT (excluded.status, excluded.since, excluded.set_by, excluded.calls,
             excluded.last_call_at, excluded.last_code, excluded.callback_at, excluded.doc_at,
             excluded.do_not_call, excluded.owner, excluded.id, excluded.band, excluded.score)",
    )?
    .execute(params![
        key,
        d.status.status.as_str(),
        d.status.since.map(to_micros),
        set_by,
        d.calls,
        d.last_call.as_ref().map(|(at, _)| to_micros(*at)),
        d.last_call.as_ref().map(|(_, c)| c.as_str()),
        d.callback_at.map(to_micros),
        d.documentation_at.map(to_micros),
        d.do_not_call,
        d.owner,
        id,
        // Only a call-back is ranked from the desk row (`callbacks_due`).
        d.callback_at.map(|_| band),
        d.callback_at.map(|_| score),
    ])?;
    // Only the calls are read back (the KPIs); the rest served the campaigns above.
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO desk_events (contact, at, kind, code, key, owner, reason)
         VALUES (?1, ?2, 'call', ?3, '', ?4, ?5)",
    )?;
    for e in d.events.iter().filter(|e| e.kind == DeskKind::Call) {
        insert.execute(params![key, to_micros(e.at), e.code, e.owner, e.reason])?;
    }
    Ok(())
}

/// Writes or removes a contact's call-queue row (in the pass's
/// transaction): a hot lead's owner, band, score, call-back and last call,
/// ranked by `desk_queue_rank`, counted by the table's triggers. A row as
/// stored is left alone.
pub(super) fn save_queue(tx: &Connection, key: i64, w: &ScoreWrite) -> Result<(), StoreError> {
    let Some(hot) = &w.hot_lead else {
        tx.prepare_cached("DELETE FROM desk_queue WHERE contact = ?1")?
            .execute([key])?;
        return Ok(());
    };
    let d = w.desk.as_ref();
    tx.prepare_cached(
        "INSERT INTO desk_queue (contact, owner, band, score, callback_at, last_call_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(contact) DO UPDATE SET owner = excluded.owner, band = excluded.band,
           score = excluded.score, callback_at = excluded.callback_at,
           last_call_at = excluded.last_call_at
         WHERE (owner, band, score, callback_at, last_call_at) IS NOT
           (excluded.owner, excluded.band, excluded.score, excluded.callback_at,
            excluded.last_call_at)",
    )?
    .execute(params![
        key,
        hot.owner.as_deref().unwrap_or(""),
        w.band,
        w.score,
        d.and_then(|d| d.callback_at).map(to_micros),
        d.and_then(|d| d.last_call.as_ref())
            .map(|(at, _)| to_micros(*at)),
    ])?;
    Ok(())
}

/// `desk_queue_counts` files a last call under its hour (floored hours
/// since the epoch; never called: the lowest).
const HOUR: i64 = 3_600_000_000;

/// Ranked rows: id, owner, band, score, call-back, hot.
fn read_ranked(r: &rusqlite::Row<'_>) -> Result<Ranked, StoreError> {
    Ok(Ranked {
        id: r.get(0)?,
        owner: r.get::<_, Option<String>>(1)?.filter(|o| !o.is_empty()),
        band: r.get(2)?,
        score: r.get(3)?,
        callback_at: micros(r, 4)?,
        hot: r.get(5)?,
    })
}

/// Whether desk row `d`'s contact is a hot lead of ?2 (bands, JSON),
/// ?3 (called before) and ?4 (owner or NULL).
const QUEUED: &str = "EXISTS (SELECT 1 FROM desk_queue q WHERE q.contact = c.rowid
    AND q.band IN (SELECT value FROM json_each(?2))
    AND (q.last_call_at IS NULL OR q.last_call_at < ?3) AND (?4 IS NULL OR q.owner = ?4))";

/// A row equal to what a missing one reads as.
fn plain(d: &DeskRow) -> bool {
    d.status == StatusView::default()
        && d.calls == 0
        && d.last_call.is_none()
        && d.callback_at.is_none()
        && d.documentation_at.is_none()
        && d.do_not_call.is_none()
}

/// What folding a contact's campaign figures reads and writes, for both
/// SQL stores (`$1` … in order of appearance, so SQLite binds them by
/// position too): the contact's campaign rows (flags, then the sends
/// counted), its delivered sends, its upward band crossings; and the
/// update of one campaign's flags.
pub(crate) const CAMPAIGNS_OF: &str = "SELECT campaign, opened, clicked, unsubscribed, \
    in_target, band_up, meeting, purchase, sends FROM campaign_contacts WHERE contact = $1";
pub(crate) const SENDS_OF: &str =
    "SELECT idem_key, followup, updated_at FROM outbox WHERE contact = $1 AND state = 'sent'";
pub(crate) const BAND_UPS_OF: &str = "SELECT at FROM score_changes WHERE contact = $1 \
    AND kind IN ('band_up', 'jump_up') AND from_band <> to_band";
pub(crate) const SET_CAMPAIGN: &str = "UPDATE campaign_contacts SET opened = $1, clicked = $2, \
    unsubscribed = $3, in_target = $4, band_up = $5, meeting = $6, purchase = $7 \
    WHERE contact = $8 AND campaign = $9";

/// Folds a contact's campaign figures (see [`campaigns::contact_flags`])
/// into `campaign_contacts`, whose triggers keep the sums per campaign.
fn save_campaigns(
    tx: &Connection,
    key: i64,
    events: &[DeskEvent],
    facts: &CampaignFacts,
) -> Result<(), StoreError> {
    // (campaign, flags, sends counted)
    let mut stored: Vec<(String, Flags, u64)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(CAMPAIGNS_OF)?;
        let mut q = stmt.query([key])?;
        while let Some(r) = q.next()? {
            stored.push((
                r.get(0)?,
                Flags {
                    opened: r.get(1)?,
                    clicked: r.get(2)?,
                    unsubscribed: r.get(3)?,
                    in_target: r.get(4)?,
                    band_up: r.get(5)?,
                    meeting: r.get(6)?,
                    purchase: r.get(7)?,
                },
                r.get::<_, i64>(8)?.max(0) as u64,
            ));
        }
    }
    if stored.is_empty() {
        return Ok(());
    }
    let mut sends = Vec::new();
    {
        let mut stmt = tx.prepare_cached(SENDS_OF)?;
        let mut q = stmt.query([key])?;
        while let Some(r) = q.next()? {
            sends.push(ContactSend {
                key: r.get(0)?,
                campaign: r.get(1)?,
                at: from_micros(r.get(2)?)?,
            });
        }
    }
    // Upward crossings: a band change by a rise of the score.
    let band_ups: Vec<Timestamp> = tx
        .prepare_cached(BAND_UPS_OF)?
        .query_map([key], |r| r.get::<_, i64>(0))?
        .map(|at| from_micros(at?))
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare_cached(SET_CAMPAIGN)?;
    for (campaign, new) in campaigns::refolded(stored, &sends, events, &band_ups, facts) {
        update.execute(params![
            new.opened,
            new.clicked,
            new.unsubscribed,
            new.in_target,
            new.band_up,
            new.meeting,
            new.purchase,
            key,
            campaign,
        ])?;
    }
    Ok(())
}

/// The columns [`read_brief`] reads: contact `c`, score `s`, desk `d`.
const BRIEF: &str = "c.id, c.record, s.score, s.band, d.status, d.since, d.set_by, d.calls, \
    d.last_call_at, d.last_code, d.callback_at, d.doc_at, d.do_not_call";
const BRIEF_FROM: &str = "FROM contacts c LEFT JOIN scores s ON s.contact = c.rowid \
    LEFT JOIN contact_desk d ON d.contact = c.rowid";

fn micros(r: &rusqlite::Row<'_>, i: usize) -> Result<Option<Timestamp>, StoreError> {
    r.get::<_, Option<i64>>(i)?.map(from_micros).transpose()
}

fn read_status(r: &rusqlite::Row<'_>, at: usize) -> Result<StatusView, StoreError> {
    let Some(status) = r.get::<_, Option<String>>(at)? else {
        return Ok(StatusView::default());
    };
    Ok(StatusView {
        status: ProspectStatus::parse(&status).map_err(StoreError::Corrupt)?,
        since: micros(r, at + 1)?,
        set_by: r
            .get::<_, Option<String>>(at + 2)?
            .map(|j| decode::<SetBy>(&j))
            .transpose()?,
    })
}

fn read_brief(r: &rusqlite::Row<'_>) -> Result<Brief, StoreError> {
    let contact: Contact = decode(&r.get::<_, String>(1)?)?;
    let name = contact.display_name();
    Ok(Brief {
        id: r.get(0)?,
        name: (!name.is_empty() && name != contact.id).then_some(name),
        phone: contact.phone,
        company: contact.company,
        owner: contact.owner,
        score: r
            .get::<_, Option<i64>>(2)?
            .map(|s| crate::domain::scoring::Points(s).as_f64()),
        band: r.get(3)?,
        status: read_status(r, 4)?,
        calls: r.get::<_, Option<u32>>(7)?.unwrap_or(0),
        last_call_at: micros(r, 8)?,
        last_call_code: r.get(9)?,
        callback_at: micros(r, 10)?,
        documentation_at: micros(r, 11)?,
        do_not_call: r.get(12)?,
    })
}

impl Conn {
    /// Records the country of national phone numbers, when it changed:
    /// contacts written from now on are keyed with it.
    pub fn set_default_country(&mut self, country: &str) -> Result<(), StoreError> {
        if default_country(&self.conn)? == country {
            return Ok(());
        }
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![COUNTRY, country],
            )?;
            Ok(())
        })
    }

    fn listed(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        limit: u32,
    ) -> Result<Listed, StoreError> {
        let total: i64 = self
            .conn
            .prepare_cached(&format!("SELECT count(*) {BRIEF_FROM} WHERE {filter}"))?
            .query_row(args, |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {BRIEF} {BRIEF_FROM} WHERE {filter} ORDER BY c.id LIMIT {limit}"
        ))?;
        let mut q = stmt.query(args)?;
        let mut contacts = Vec::new();
        while let Some(r) = q.next()? {
            contacts.push(read_brief(r)?);
        }
        Ok(Listed {
            total: total as u64,
            contacts,
        })
    }

    fn ids(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Statuses after which the desk does not call.
const NOT_CALLABLE: &str = "('ARRÊTÉ', 'PERDU')";

fn json_list(items: &[String]) -> Result<String, StoreError> {
    super::conn::encode(&items)
}

impl DeskStore for Conn {
    fn prospect_status(&self, id: &str) -> Result<StatusView, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.status, d.since, d.set_by FROM contact_desk d
             JOIN contacts c ON c.rowid = d.contact WHERE c.id = ?1",
        )?;
        let mut q = stmt.query([id])?;
        match q.next()? {
            Some(r) => read_status(r, 0),
            None => Ok(StatusView::default()),
        }
    }

    fn briefs(&self, ids: &[String]) -> Result<Vec<Brief>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {BRIEF} FROM json_each(?1) j JOIN contacts c ON c.id = j.value
             LEFT JOIN scores s ON s.contact = c.rowid LEFT JOIN contact_desk d ON d.contact = c.rowid
             ORDER BY j.key"
        ))?;
        let mut q = stmt.query([json_list(ids)?])?;
        let mut out = Vec::with_capacity(ids.len());
        while let Some(r) = q.next()? {
            out.push(read_brief(r)?);
        }
        Ok(out)
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
             WHERE d.status = ?1 ORDER BY c.id",
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
            &format!("d.contact IS NOT NULL AND (d.status IN {NOT_CALLABLE} OR d.do_not_call IS NOT NULL)"),
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
                "d.callback_at < ?1 AND d.status NOT IN {NOT_CALLABLE} AND d.do_not_call IS NULL"
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
        // From the index (the filter, id, owner, band and score) and the
        // queue by key: never the contact's record or score.
        let queued = QUEUED.replace("c.rowid", "d.contact");
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT d.id, d.owner, d.band, d.score, d.callback_at, {queued}
             FROM contact_desk d INDEXED BY contact_desk_callbacks
             WHERE d.callback_at < ?1 AND d.status NOT IN {NOT_CALLABLE} AND d.do_not_call IS NULL
               AND (?4 IS NULL OR d.owner = ?4)"
        ))?;
        let mut q = stmt.query(params![
            to_micros(until),
            json_list(hot.bands)?,
            to_micros(hot.called_before),
            hot.owner
        ])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(read_ranked(r)?);
        }
        Ok(out)
    }

    fn ranked(&self, ids: &[String], hot: &HotLeads<'_>) -> Result<Vec<Ranked>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT c.id, json_extract(c.record, '$.owner'), s.band, s.score, d.callback_at, {QUEUED}
             FROM json_each(?1) j JOIN contacts c ON c.id = j.value
             LEFT JOIN scores s ON s.contact = c.rowid LEFT JOIN contact_desk d ON d.contact = c.rowid
             ORDER BY j.key"
        ))?;
        let mut q = stmt.query(params![
            json_list(ids)?,
            json_list(hot.bands)?,
            to_micros(hot.called_before),
            hot.owner
        ])?;
        let mut out = Vec::with_capacity(ids.len());
        while let Some(r) = q.next()? {
            out.push(read_ranked(r)?);
        }
        Ok(out)
    }

    fn hot_leads(&self, hot: &HotLeads<'_>, limit: u32) -> Result<Vec<Ranked>, StoreError> {
        let limit = limit as usize;
        let mut out: Vec<Ranked> = Vec::new();
        // One band at a time, highest first, down its index by score; the
        // rows of the last score read are all taken, then each run of
        // equal scores is put in call-back and id order.
        let sql = |owner: &str| {
            format!(
                "SELECT c.id, q.owner, q.band, q.score, q.callback_at, 1
                 FROM desk_queue q JOIN contacts c ON c.rowid = q.contact
                 WHERE q.band = ?1 AND (q.last_call_at IS NULL OR q.last_call_at < ?2) {owner}
                 ORDER BY q.score DESC"
            )
        };
        let (by_band, by_owner) = (sql("AND ?3 IS NULL"), sql("AND q.owner = ?3"));
        for band in hot.bands {
            if out.len() >= limit {
                break;
            }
            let from = out.len();
            let mut stmt = self.conn.prepare_cached(if hot.owner.is_some() {
                &by_owner
            } else {
                &by_band
            })?;
            let mut q = stmt.query(params![band, to_micros(hot.called_before), hot.owner])?;
            while let Some(r) = q.next()? {
                let row = read_ranked(r)?;
                if out.len() >= limit && out.last().is_some_and(|l| l.score != row.score) {
                    break;
                }
                out.push(row);
            }
            out[from..].sort_by(|a, b| {
                b.score
                    .cmp(&a.score)
                    .then_with(|| {
                        let cb = |r: &Ranked| r.callback_at.unwrap_or(Timestamp::MAX_UTC);
                        cb(a).cmp(&cb(b))
                    })
                    .then_with(|| a.id.cmp(&b.id))
            });
        }
        out.truncate(limit);
        Ok(out)
    }

    fn hot_lead_count(&self, hot: &HotLeads<'_>) -> Result<u64, StoreError> {
        // Whole hours before the one of `called_before` from the kept
        // counts; that hour's rows through the index on the last call.
        let before = to_micros(hot.called_before);
        let hour = before.div_euclid(HOUR);
        let bands = json_list(hot.bands)?;
        let kept: i64 = self
            .conn
            .prepare_cached(
                "SELECT coalesce(sum(n), 0) FROM desk_queue_counts
                 WHERE band IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR owner = ?2)
                   AND hour < ?3",
            )?
            .query_row(params![bands, hot.owner, hour], |r| r.get(0))?;
        let partial: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM desk_queue INDEXED BY desk_queue_by_call
                 WHERE last_call_at >= ?3 AND last_call_at < ?4
                   AND band IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR owner = ?2)",
            )?
            .query_row(params![bands, hot.owner, hour * HOUR, before], |r| r.get(0))?;
        Ok((kept + partial).max(0) as u64)
    }

    fn call_tasks(
        &self,
        channels: &[String],
        until: Timestamp,
    ) -> Result<Vec<CallTaskRow>, StoreError> {
        // Pending rows through the index on their due instant, delivered
        // ones through the call channels' sends: never the whole outbox.
        let mut stmt = self.conn.prepare_cached(
            concat!(
            "SELECT o.idem_key, c.id, o.followup, o.priority, o.channel, o.state, o.due_at, o.updated_at
             FROM outbox o INDEXED BY outbox_ready JOIN contacts c ON c.rowid = o.contact
             WHERE ",
            ready!("o."),
            " AND o.due_at < ?2
               AND o.channel IN (SELECT value FROM json_each(?1))
             UNION ALL
             SELECT o.idem_key, c.id, o.followup, o.priority, o.channel, o.state, o.due_at, o.updated_at
             FROM outbox o INDEXED BY outbox_sent_by_channel JOIN contacts c ON c.rowid = o.contact
             LEFT JOIN contact_desk d ON d.contact = o.contact
             WHERE o.state = 'sent' AND o.channel IN (SELECT value FROM json_each(?1))
               AND (d.last_call_at IS NULL OR d.last_call_at < o.updated_at)"
        ))?;
        let mut q = stmt.query(params![json_list(channels)?, to_micros(until)])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            let state: String = r.get(5)?;
            let due = if state == "sent" {
                r.get(7)?
            } else {
                r.get(6)?
            };
            out.push(CallTaskRow {
                key: r.get(0)?,
                contact: r.get(1)?,
                followup: r.get(2)?,
                priority: r.get(3)?,
                channel: r.get(4)?,
                state,
                due: from_micros(due)?,
            });
        }
        Ok(out)
    }

    fn calls_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        owner: Option<&str>,
    ) -> Result<Vec<CallRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, e.at, e.owner, e.code, e.reason FROM desk_events e
             JOIN contacts c ON c.rowid = e.contact
             WHERE e.kind = 'call' AND e.at >= ?1 AND e.at < ?2 AND (?3 IS NULL OR e.owner = ?3)
             ORDER BY e.owner, e.at, c.id",
        )?;
        let mut q = stmt.query(params![to_micros(from), to_micros(to), owner])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            out.push(CallRow {
                contact: r.get(0)?,
                at: from_micros(r.get(1)?)?,
                owner: r.get(2)?,
                code: r.get(3)?,
                reason: r.get(4)?,
            });
        }
        Ok(out)
    }

    fn score_values(&self) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT score FROM scores")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        let mut out: Vec<i64> = rows.collect::<Result<_, _>>()?;
        out.sort_unstable();
        Ok(out)
    }

    fn duplicate_groups(&self) -> Result<Vec<DuplicateGroup>, StoreError> {
        let mut out = Vec::new();
        for (kind, column) in KEY_COLUMNS {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {column}, json_group_array(id) FROM
                   (SELECT {column}, id FROM contacts WHERE {column} IN
                     (SELECT {column} FROM contacts WHERE {column} IS NOT NULL
                      GROUP BY {column} HAVING count(*) > 1) ORDER BY {column}, id)
                 GROUP BY {column} ORDER BY {column}"
            ))?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                let mut contacts: Vec<String> = decode(&r.get::<_, String>(1)?)?;
                contacts.sort();
                out.push(DuplicateGroup {
                    kind,
                    key: r.get(0)?,
                    contacts,
                });
            }
        }
        Ok(out)
    }

    fn duplicates_of(&self, ids: &[String]) -> Result<Vec<(String, DuplicateGroup)>, StoreError> {
        let mut out = Vec::new();
        for (kind, column) in KEY_COLUMNS {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT c.id, c.{column} FROM json_each(?1) j JOIN contacts c ON c.id = j.value
                 WHERE c.{column} IS NOT NULL AND EXISTS
                   (SELECT 1 FROM contacts x WHERE x.{column} = c.{column} AND x.rowid <> c.rowid)
                 ORDER BY j.key"
            ))?;
            let found: Vec<(String, String)> = stmt
                .query_map([json_list(ids)?], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (id, key) in found {
                let contacts = group(&self.conn, kind, &key)?;
                out.push((
                    id,
                    DuplicateGroup {
                        kind,
                        key,
                        contacts,
                    },
                ));
            }
        }
        Ok(out)
    }

    fn campaign_counts(&self, campaigns: &[String]) -> Result<Vec<CampaignCounts>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT campaign, sent, contacts, opened, clicked, unsubscribed, clicked_in, band_up,
               meeting, purchase, converted
             FROM campaign_stats WHERE campaign IN (SELECT value FROM json_each(?1))",
        )?;
        let mut q = stmt.query([json_list(campaigns)?])?;
        let mut out = Vec::new();
        while let Some(r) = q.next()? {
            let n = |i: usize| -> Result<u64, StoreError> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
            out.push(CampaignCounts {
                campaign: r.get(0)?,
                sent: n(1)?,
                contacts: n(2)?,
                opened: n(3)?,
                clicked: n(4)?,
                unsubscribed: n(5)?,
                clicked_in_target: n(6)?,
                band_up: n(7)?,
                meeting: n(8)?,
                purchase: n(9)?,
                converted: n(10)?,
            });
        }
        Ok(out)
    }
}
