//! The desk's figures read from what the passes maintain: typed results
//! for the command line, the API and a dashboard.

use crate::core::condition::{Condition, Subject};
use crate::core::model::Timestamp;
use crate::domain::desk::campaigns::{self, Campaign, CampaignCounts, CampaignKind};
use crate::domain::desk::distribution::{self, Distribution};
use crate::domain::desk::kpis::{self, By, Codes, Kpis, Period};
use crate::domain::desk::status::code;
use crate::domain::desk::today::{Brief, RankKey, ToCall, Why};
use crate::domain::scoring::Points;
use crate::pipeline::config::Config;
use crate::ports::store::desk::{DuplicateGroup, HotLeads, Listed, Ranked};
use crate::ports::store::{Store, StoreError};
use chrono::NaiveTime;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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

/// A page of `relance calls today`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Today {
    /// Contacts to call today, in all.
    pub total: u64,
    /// Contacts ranked before this page.
    pub offset: u64,
    /// Contacts ranked after it.
    pub more: u64,
    pub calls: Vec<ToCall>,
}

/// `relance calls today`: the contacts ranked `offset + 1` to `offset +
/// limit`. The call tasks and call-backs due (what follow-ups and callers
/// asked for) are read whole and ranked here; the hot leads, usually most
/// of the list, come already ranked from the store's call queue, only as
/// many as the page needs, and are counted from its kept counts.
pub fn calls_today(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
    owner: Option<&str>,
    offset: u64,
    limit: u32,
) -> Result<Today, ReportError> {
    let until = end_of_day(now);
    let desk = &config.calls;
    let bands = band_names(config);
    // The hot bands in rank order: the order the store reads them in.
    let hot_bands: Vec<String> = bands
        .iter()
        .filter(|b| desk.hot_bands.contains(b))
        .cloned()
        .collect();
    let hot = HotLeads {
        bands: &hot_bands,
        called_before: now - desk.hot_recall.0,
        owner,
    };
    let hot_priority = config.fatigue.priorities.opportunistic;
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
    let mut ranked: HashMap<String, Ranked> = HashMap::new();
    for r in store.callbacks_due(until, &hot)? {
        let e = why.entry(r.id.clone()).or_default();
        e.0 = e.0.max(callback);
        e.1.push(Why::CallBack { at: until });
        ranked.insert(r.id.clone(), r);
    }
    let missing: Vec<String> = why
        .keys()
        .filter(|id| !ranked.contains_key(*id))
        .cloned()
        .collect();
    for r in store.ranked(&missing, &hot)? {
        ranked.insert(r.id.clone(), r);
    }
    // Asked for: (priority, ranked, reasons), the owner's only.
    let mut asked: Vec<(u32, Ranked, Vec<Why>)> = Vec::with_capacity(why.len());
    for (id, (mut priority, mut reasons)) in why {
        // A contact erased since has no row.
        let Some(r) = ranked.remove(&id) else {
            continue;
        };
        if owner.is_some_and(|o| r.owner.as_deref() != Some(o)) {
            continue;
        }
        if r.hot {
            priority = priority.max(hot_priority);
            reasons.push(Why::HotLead {
                band: String::new(),
            });
        }
        asked.push((priority, r, reasons));
    }
    asked.sort_by(|a, b| key(a.0, &a.1).cmp(&key(b.0, &b.1), &bands));
    let asked_hot = asked.iter().filter(|a| a.1.hot).count() as u64;
    let total = asked.len() as u64 + store.hot_lead_count(&hot)?.saturating_sub(asked_hot);
    if offset >= total {
        return Ok(Today {
            total,
            offset,
            more: 0,
            calls: Vec::new(),
        });
    }

    // The hot leads not asked for otherwise, in rank order: at most the
    // page's end of them once those already listed above are left out.
    let end = offset.saturating_add(u64::from(limit));
    let want = u32::try_from(end.saturating_add(asked_hot)).unwrap_or(u32::MAX);
    let listed: HashSet<&str> = asked.iter().map(|a| a.1.id.as_str()).collect();
    let leads: Vec<Ranked> = store
        .hot_leads(&hot, want)?
        .into_iter()
        .filter(|r| !listed.contains(r.id.as_str()))
        .collect();
    drop(listed);

    // Both lists merged, up to the page's end.
    let mut page: Vec<(u32, Vec<Why>, String)> = Vec::new();
    let (mut a, mut l) = (asked.into_iter().peekable(), leads.into_iter().peekable());
    let mut rank = 0u64;
    while rank < end {
        let take_asked = match (a.peek(), l.peek()) {
            (Some(x), Some(y)) => key(x.0, &x.1).cmp(&key(hot_priority, y), &bands).is_le(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (priority, id, reasons) = if take_asked {
            let Some((p, r, w)) = a.next() else { break };
            (p, r.id, w)
        } else {
            let Some(r) = l.next() else { break };
            (
                hot_priority,
                r.id,
                vec![Why::HotLead {
                    band: String::new(),
                }],
            )
        };
        if rank >= offset {
            page.push((priority, reasons, id));
        }
        rank += 1;
    }

    let ids: Vec<String> = page.iter().map(|p| p.2.clone()).collect();
    let mut briefs: HashMap<String, Brief> = store
        .briefs(&ids)?
        .into_iter()
        .map(|b| (b.id.clone(), b))
        .collect();
    let mut calls = Vec::with_capacity(page.len());
    for (priority, mut reasons, id) in page {
        let Some(brief) = briefs.remove(&id) else {
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
        calls.push(ToCall {
            contact: brief,
            priority,
            why: reasons,
        });
    }
    Ok(Today {
        total,
        offset,
        more: total.saturating_sub(offset.saturating_add(calls.len() as u64)),
        calls,
    })
}

fn key(priority: u32, r: &Ranked) -> RankKey<'_> {
    RankKey {
        priority,
        band: r.band.as_deref(),
        score: r.score.map(|s| Points(s).as_f64()),
        callback_at: r.callback_at,
        id: &r.id,
    }
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
