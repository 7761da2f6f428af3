//! The dashboard's counts and the campaigns' sends, added as sums over a
//! transaction.
//!
//! Every writer of outbox rows and decisions (a claim, a settlement, a
//! planning pass, an enqueue, a release) collects here what its rows change
//! in `ui_outbox_counts`, `ui_decisions`, `campaign_contacts` and
//! `campaign_stats`, and the writer of scores (a rescoring pass) what its
//! scores and changes do to `ui_score_buckets` and `ui_band_moves`; each
//! adds it in a few statements at the end: a row trigger would run a
//! program for each row, and even one whose `WHEN` turns it off allocates
//! and zeroes a frame per row (migrations 19 and 20 dropped them). Deletes
//! (retention, erasure) keep their triggers. The campaigns'
//! own triggers stay for the other writers of `campaign_contacts` (the
//! outcomes of sends); a row in `counts_summed` turns them off while
//! [`Sums::finish`] writes the sends, and never outlives that statement
//! group.

use crate::domain::outbox::State;
use crate::ports::store::StoreError;
use rusqlite::{Connection, params};
use std::collections::HashMap;

/// Microseconds in a day: the counts' day is `instant / DAY_US`, as the
/// triggers compute it (integer division, truncated toward zero).
const DAY_US: i64 = 86_400_000_000;

/// One outbox count: day first due, follow-up, kind, channel, state;
/// names as their numbers in [`Names`].
type CountKey = (i64, u32, &'static str, u32, &'static str);

/// Follow-up, channel and band names, each stored once: a row whose names were
/// seen before adds to its sums without allocating.
#[derive(Default)]
struct Names {
    all: Vec<String>,
    number: HashMap<String, u32>,
}

impl Names {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(n) = self.number.get(name) {
            return *n;
        }
        let n = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        self.all.push(name.to_owned());
        self.number.insert(name.to_owned(), n);
        n
    }

    fn name(&self, n: u32) -> &str {
        self.all.get(n as usize).map_or("", String::as_str)
    }
}

/// The changes a transaction makes to the counts, not yet written. Each
/// is summed here and written with one plain statement per key, so a
/// batch costs a few statements whatever its size.
#[derive(Default)]
pub(super) struct Sums {
    names: Names,
    outbox: HashMap<CountKey, i64>,
    /// Decisions per day, verdict and first reason's rule.
    decisions: HashMap<(i64, &'static str, &'static str), i64>,
    /// Delivered sends per contact key and follow-up.
    sends: HashMap<(i64, u32), i64>,
    /// Scores per bucket (the score floored to a multiple of 100) and band.
    buckets: HashMap<(i64, u32), i64>,
    /// Band crossings per day, band left and band entered.
    moves: HashMap<(i64, u32, u32), i64>,
}

impl Sums {
    /// An outbox row moved from one state to another (nothing when equal).
    pub(super) fn moved(
        &mut self,
        first_due_us: i64,
        followup: &str,
        kind: &'static str,
        channel: &str,
        from: State,
        to: State,
    ) {
        if from != to {
            self.count(first_due_us, followup, kind, channel, from, -1);
            self.count(first_due_us, followup, kind, channel, to, 1);
        }
    }

    /// `n` outbox rows more in `state` (fewer when negative): a new row
    /// counts 1 (a row written as sent is also [`Sums::delivered`]).
    pub(super) fn count(
        &mut self,
        first_due_us: i64,
        followup: &str,
        kind: &'static str,
        channel: &str,
        state: State,
        n: i64,
    ) {
        let day = first_due_us / DAY_US;
        let (followup, channel) = (self.names.number(followup), self.names.number(channel));
        *self
            .outbox
            .entry((day, followup, kind, channel, state.as_str()))
            .or_default() += n;
    }

    /// A decision logged at `at_us`. `rule` is its first reason's rule, ""
    /// without one: what the trigger reads from the stored reasons, each
    /// reason being an object tagged by `rule`.
    pub(super) fn decided(&mut self, at_us: i64, verdict: &'static str, rule: &'static str) {
        *self
            .decisions
            .entry((at_us / DAY_US, verdict, rule))
            .or_default() += 1;
    }

    /// A send of `followup` delivered to the contact keyed `contact`.
    pub(super) fn delivered(&mut self, contact: i64, followup: &str) {
        let followup = self.names.number(followup);
        *self.sends.entry((contact, followup)).or_default() += 1;
    }

    /// A score written: `was` the stored score and band it replaced,
    /// `None` for a contact's first (nothing when both are unchanged).
    pub(super) fn scored(&mut self, was: Option<(i64, &str)>, score: i64, band: &str) {
        if was == Some((score, band)) {
            return;
        }
        if let Some((score, band)) = was {
            self.bucket(score, band, -1);
        }
        self.bucket(score, band, 1);
    }

    /// `n` scores more in the bucket of `score` and `band`: the score
    /// floored to a multiple of 100, as the delete trigger computes it.
    fn bucket(&mut self, score: i64, band: &str, n: i64) {
        let lo = score.wrapping_sub(score.rem_euclid(100));
        let band = self.names.number(band);
        *self.buckets.entry((lo, band)).or_default() += n;
    }

    /// A score change logged at `at_us`: a band crossing when the bands
    /// differ.
    pub(super) fn changed(&mut self, at_us: i64, from_band: &str, to_band: &str) {
        if from_band != to_band {
            let (from, to) = (self.names.number(from_band), self.names.number(to_band));
            *self.moves.entry((at_us / DAY_US, from, to)).or_default() += 1;
        }
    }

    /// Adds the sums, in the transaction that wrote the rows.
    pub(super) fn finish(self, tx: &Connection) -> Result<(), StoreError> {
        for ((lo, band), n) in &self.buckets {
            if *n != 0 {
                tx.prepare_cached(
                    "INSERT INTO ui_score_buckets (lo, band, n) VALUES (?1, ?2, ?3)
                     ON CONFLICT (lo, band) DO UPDATE SET n = n + ?3",
                )?
                .execute(params![lo, self.names.name(*band), n])?;
            }
        }
        for ((day, from, to), n) in &self.moves {
            tx.prepare_cached(
                "INSERT INTO ui_band_moves (day, from_band, to_band, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (day, from_band, to_band) DO UPDATE SET n = n + ?4",
            )?
            .execute(params![
                day,
                self.names.name(*from),
                self.names.name(*to),
                n
            ])?;
        }
        for ((day, followup, kind, channel, state), n) in &self.outbox {
            if *n != 0 {
                let (followup, channel) = (self.names.name(*followup), self.names.name(*channel));
                tx.prepare_cached(
                    "INSERT INTO ui_outbox_counts (day, followup, kind, channel, state, n)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (day, followup, kind, channel, state) DO UPDATE SET n = n + ?6",
                )?
                .execute(params![day, followup, kind, channel, state, n])?;
            }
        }
        for ((day, decision, rule), n) in &self.decisions {
            tx.prepare_cached(
                "INSERT INTO ui_decisions (day, decision, rule, n) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (day, decision, rule) DO UPDATE SET n = n + ?4",
            )?
            .execute(params![day, decision, rule, n])?;
        }
        if self.sends.is_empty() {
            return Ok(());
        }
        // Per campaign: the sends, and the contacts it did not count yet,
        // with the campaigns' triggers off.
        tx.prepare_cached("INSERT INTO counts_summed VALUES (1)")?
            .execute([])?;
        let mut campaigns: HashMap<&str, (i64, i64)> = HashMap::new();
        for ((contact, campaign), n) in &self.sends {
            let campaign = self.names.name(*campaign);
            let added = tx
                .prepare_cached(
                    "INSERT INTO campaign_contacts (contact, campaign, sends) VALUES (?1, ?2, ?3)
                     ON CONFLICT (contact, campaign) DO NOTHING",
                )?
                .execute(params![contact, campaign, n])?;
            if added == 0 {
                tx.prepare_cached(
                    "UPDATE campaign_contacts SET sends = sends + ?3
                     WHERE contact = ?1 AND campaign = ?2",
                )?
                .execute(params![contact, campaign, n])?;
            }
            let sums = campaigns.entry(campaign).or_default();
            sums.0 += n;
            sums.1 += added as i64;
        }
        for (campaign, (sends, added)) in campaigns {
            tx.prepare_cached(
                "INSERT INTO campaign_stats (campaign) VALUES (?1) ON CONFLICT(campaign) DO NOTHING",
            )?
            .execute([campaign])?;
            tx.prepare_cached(
                "UPDATE campaign_stats SET sent = sent + ?2, contacts = contacts + ?3
                 WHERE campaign = ?1",
            )?
            .execute(params![campaign, sends, added])?;
        }
        tx.prepare_cached("DELETE FROM counts_summed")?
            .execute([])?;
        Ok(())
    }
}
