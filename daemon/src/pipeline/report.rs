//! The desk's figures read from what the passes maintain: typed results
//! for the command line, the API and a dashboard.

use crate::core::condition::{Standing, Subject};
use crate::core::model::Timestamp;
use crate::domain::desk::campaigns::SendRow;
use crate::domain::desk::campaigns::{self, Campaign, CampaignKind};
use crate::domain::desk::distribution::{self, Distribution};
use crate::domain::desk::kpis::{self, By, Codes, Kpis, Period};
use crate::domain::desk::status::code;
use crate::domain::desk::today::{ToCall, Why, rank};
use crate::pipeline::config::Config;
use crate::ports::store::desk::{DuplicateGroup, Listed};
use crate::ports::store::{Store, StoreError};
use chrono::{Duration, NaiveTime};
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

/// `relance campaigns`: every broadcast, then every nurture sequence.
pub fn campaigns(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
) -> Result<Vec<Campaign>, ReportError> {
    let followups = config
        .followups
        .compile()
        .map_err(|e| ReportError::Config(e.to_string()))?;
    let mut targets: Vec<(
        String,
        CampaignKind,
        crate::core::condition::Condition,
        Vec<String>,
    )> = Vec::new();
    for b in store.broadcasts()? {
        let compiled = b
            .compile()
            .map_err(|e| ReportError::Config(format!("broadcast `{}`: {e}", b.id)))?;
        targets.push((
            b.name,
            CampaignKind::Broadcast,
            compiled.segment,
            Vec::new(),
        ));
    }
    for n in followups.nurture {
        targets.push((n.name, CampaignKind::Nurture, n.segment, n.bands));
    }
    let names: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
    let sends = store.sends_of(&names)?;
    let mut by_name: BTreeMap<&str, Vec<SendRow>> = BTreeMap::new();
    for s in &sends {
        by_name
            .entry(s.followup.as_str())
            .or_default()
            .push(s.clone());
    }
    let bands = band_names(config);
    let rank = |b: &str| bands.iter().position(|x| x == b).unwrap_or(bands.len());
    let appointment: BTreeSet<String> = config.calls.appointment.iter().map(|c| code(c)).collect();
    let window: Duration = config.calls.conversion_window.0;
    let mut out = Vec::with_capacity(targets.len());
    for (name, kind, segment, bands_wanted) in &targets {
        let sends = by_name.remove(name.as_str()).unwrap_or_default();
        let from = sends.iter().map(|s| s.at).min().unwrap_or(now);
        let mut contacts: Vec<String> = sends.iter().map(|s| s.contact.clone()).collect();
        contacts.sort();
        contacts.dedup();
        let events = store.kept_events(
            &contacts,
            &[
                "open",
                "click",
                "unsubscribe",
                "meeting",
                "purchase",
                "call",
            ],
            from,
        )?;
        let band_ups: Vec<(String, Timestamp)> = store
            .band_changes(&contacts, from)?
            .into_iter()
            .filter(|(_, _, a, b)| rank(b) < rank(a))
            .map(|(c, at, _, _)| (c, at))
            .collect();
        // The target, judged on the clickers only (few): profile now, band now.
        let clickers: BTreeSet<&str> = events
            .iter()
            .filter(|e| e.kind == "click")
            .map(|e| e.contact.as_str())
            .collect();
        let mut inside = BTreeSet::new();
        for id in clickers {
            let Some((contact, company, history)) = store.scoring_input(id)? else {
                continue;
            };
            let score = store.stored_score(id)?;
            let band = score.as_ref().map(|s| s.band.as_str());
            let subject =
                Subject::new(&contact, company.as_ref(), &history, now).with_standing(Standing {
                    band,
                    score: score
                        .as_ref()
                        .map(|s| crate::domain::scoring::Points(s.score).as_f64()),
                    call: None,
                    prospect: None,
                });
            let in_bands = bands_wanted.is_empty()
                || band.is_some_and(|b| bands_wanted.iter().any(|x| x == b));
            if in_bands && segment.eval(&subject, None) {
                inside.insert(id.to_string());
            }
        }
        let in_target = |c: &str| inside.contains(c);
        out.push(campaigns::campaign(&campaigns::Input {
            name: name.clone(),
            kind: *kind,
            sends: &sends,
            events: &events,
            band_ups: &band_ups,
            in_target: &in_target,
            window,
            appointment: &appointment,
        }));
    }
    Ok(out)
}
