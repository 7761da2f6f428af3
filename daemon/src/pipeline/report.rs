//! The desk's figures read from what the passes maintain: typed results
//! for the command line, the API and a dashboard.

use crate::core::condition::{Condition, Subject};
use crate::core::model::Timestamp;
use crate::domain::desk::campaigns::{self, Campaign, CampaignCounts, CampaignKind};
use crate::domain::desk::distribution::{self, Distribution};
use crate::domain::desk::kpis::{self, By, Codes, Kpis, Period};
use crate::domain::desk::status::code;
use crate::domain::desk::today::{ToCall, Why, rank};
use crate::pipeline::config::Config;
use crate::ports::store::desk::{DuplicateGroup, Listed};
use crate::ports::store::{Store, StoreError};
use chrono::NaiveTime;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// The end of `now`'s day (UTC): what "today" covers.
pub fn end_of_day(now: Timestamp) -> Timestamp {
    (now.date_naive() + chrono::Days::new(1))
        .and_time(NaiveTime::MIN)
        .and_utc()
}

/// Channels whose sends are calls: the task channels and `[followups.calls] channels`.
pub fn call_channels(config: &Config) -> Vec<String> {
    let mut c: BTreeSet<String> = config.task_channels().into_iter().collect();
    c.extend(config.followups.calls.channels.iter().cloned());
    c.into_iter().collect()
}

fn band_names(config: &Config) -> Vec<String> {
    config
        .scoring
        .bands
        .iter()
        .map(|b| b.name.clone())
        .collect()
}

/// `relance calls today`.
pub fn calls_today(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
    owner: Option<&str>,
) -> Result<Vec<ToCall>, ReportError> {
    let until = end_of_day(now);
    let desk = &config.calls;
    let mut why: BTreeMap<String, (u32, Vec<Why>)> = BTreeMap::new();
    for t in store.call_tasks(&call_channels(config), until)? {
        let e = why.entry(t.contact.clone()).or_default();
        e.0 = e.0.max(t.priority);
        e.1.push(Why::Trigger {
            followup: t.followup,
            task: t.key,
            due: t.due,
        });
    }
    let callback = config
        .followups
        .calls
        .callback_priority
        .unwrap_or(config.fatigue.priorities.event);
    for id in store.callbacks_due(until)? {
        let e = why.entry(id).or_default();
        e.0 = e.0.max(callback);
        e.1.push(Why::CallBack { at: until });
    }
    let recall = now - desk.hot_recall.0;
    for id in store.hot_leads(&desk.hot_bands, recall)? {
        let e = why.entry(id).or_default();
        e.0 = e.0.max(config.fatigue.priorities.opportunistic);
        e.1.push(Why::HotLead {
            band: String::new(),
        });
    }
    let ids: Vec<String> = why.keys().cloned().collect();
    let mut list = Vec::with_capacity(ids.len());
    for brief in store.briefs(&ids)? {
        if owner.is_some_and(|o| brief.owner.as_deref() != Some(o)) {
            continue;
        }
        let Some((priority, mut reasons)) = why.remove(&brief.id) else {
            continue;
        };
        for r in &mut reasons {
            match r {
                Why::CallBack { at } => *at = brief.callback_at.unwrap_or(*at),
                Why::HotLead { band } => *band = brief.band.clone().unwrap_or_default(),
                Why::Trigger { .. } => {}
            }
        }
        reasons.sort();
        list.push(ToCall {
            contact: brief,
            priority,
            why: reasons,
        });
    }
    rank(&mut list, &band_names(config));
    Ok(list)
}

/// `relance calls lists`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallLists {
    pub never_called: Listed,
    pub never_call_again: Listed,
    pub documented_not_called: Listed,
    pub callback_overdue: Listed,
}

pub fn call_lists(store: &dyn Store, now: Timestamp, limit: u32) -> Result<CallLists, ReportError> {
    Ok(CallLists {
        never_called: store.never_called(limit)?,
        never_call_again: store.never_call_again(limit)?,
        documented_not_called: store.documented_not_called(limit)?,
        callback_overdue: store.callbacks_overdue(now, limit)?,
    })
}

/// `relance calls kpis`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KpiReport {
    pub by: By,
    pub owner: Option<String>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub periods: Vec<Period>,
    pub total: Kpis,
}

pub fn call_kpis(
    store: &dyn Store,
    config: &Config,
    from: Timestamp,
    to: Timestamp,
    by: By,
    owner: Option<&str>,
) -> Result<KpiReport, ReportError> {
    let calls = store.calls_between(from, to, owner)?;
    let set = |l: &[String]| l.iter().map(|c| code(c)).collect();
    let d = &config.calls;
    let codes = Codes {
        reached: set(&d.reached),
        appointment: set(&d.appointment),
        callback: set(&d.callback),
        refused: set(&d.refused),
    };
    let (periods, total) = kpis::kpis(&calls, by, &codes, d.session_gap.0, d.call_length.0);
    Ok(KpiReport {
        by,
        owner: owner.map(str::to_owned),
        from,
        to,
        periods,
        total,
    })
}

/// `relance scores distribution`.
pub fn score_distribution(
    store: &dyn Store,
    config: &Config,
    bins: u32,
) -> Result<Distribution, ReportError> {
    let scores = store.score_values()?;
    Ok(distribution::distribution(
        &scores,
        bins,
        &config.scoring.bands,
    ))
}

/// `relance contacts duplicates`.
pub fn duplicates(store: &dyn Store) -> Result<Vec<DuplicateGroup>, ReportError> {
    Ok(store.duplicate_groups()?)
}

/// A campaign and its intended target.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub kind: CampaignKind,
    pub segment: Condition,
    /// The sequence's bands (none: any band).
    pub bands: Vec<String>,
}

impl Target {
    /// Whether a contact is inside the target now: in the segment, and in
    /// one of the bands when the sequence names some.
    pub fn holds(&self, subject: &Subject<'_>, band: Option<&str>) -> bool {
        let in_bands =
            self.bands.is_empty() || band.is_some_and(|b| self.bands.iter().any(|x| x == b));
        in_bands && self.segment.eval(subject, None)
    }
}

/// Every broadcast (by name), then every nurture sequence.
pub fn campaign_targets(store: &dyn Store, config: &Config) -> Result<Vec<Target>, ReportError> {
    let followups = config
        .followups
        .compile()
        .map_err(|e| ReportError::Config(e.to_string()))?;
    let mut targets = Vec::new();
    for b in store.broadcasts()? {
        let compiled = b
            .compile()
            .map_err(|e| ReportError::Config(format!("broadcast `{}`: {e}", b.id)))?;
        targets.push(Target {
            name: b.name,
            kind: CampaignKind::Broadcast,
            segment: compiled.segment,
            bands: Vec::new(),
        });
    }
    for n in followups.nurture {
        targets.push(Target {
            name: n.name,
            kind: CampaignKind::Nurture,
            segment: n.segment,
            bands: n.bands,
        });
    }
    Ok(targets)
}

/// `relance campaigns`: every broadcast, then every nurture sequence, read
/// from the sums the outbox and the scoring pass keep (see
/// [`crate::domain::desk::campaigns`]); clickers are judged against the
/// target as of the pass that last scored them.
pub fn campaigns(
    store: &dyn Store,
    config: &Config,
    _now: Timestamp,
) -> Result<Vec<Campaign>, ReportError> {
    let targets = campaign_targets(store, config)?;
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let counts: BTreeMap<String, CampaignCounts> = store
        .campaign_counts(&names)?
        .into_iter()
        .map(|c| (c.campaign.clone(), c))
        .collect();
    let none = CampaignCounts::default();
    Ok(targets
        .iter()
        .map(|t| campaigns::campaign(&t.name, t.kind, counts.get(&t.name).unwrap_or(&none)))
        .collect())
}
