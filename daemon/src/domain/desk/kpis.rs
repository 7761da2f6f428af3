//! Call KPIs (seed 003): calls and pitches per hour, appointment, call-back
//! and refusal rates, per session, day or week, each with its trend against
//! the previous period.
//!
//! A session is a run of calls by one owner less than `session_gap` apart;
//! it lasts from its first call to its last plus `call_length`. A day or a
//! week (UTC, ISO weeks) holds the sessions that start in it; its hours are
//! theirs.

use super::ratio;
use crate::core::model::Timestamp;
use chrono::{Datelike, Duration};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One call as the KPIs count it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRow {
    pub contact: String,
    pub at: Timestamp,
    pub owner: String,
    pub code: String,
    pub reason: String,
}

/// How calls are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum By {
    Session,
    Day,
    Week,
}

/// Which codes the rates count (upper-cased).
#[derive(Clone, Debug, Default)]
pub struct Codes {
    pub reached: BTreeSet<String>,
    pub appointment: BTreeSet<String>,
    pub callback: BTreeSet<String>,
    pub refused: BTreeSet<String>,
}

/// The figures of one period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kpis {
    pub calls: u32,
    /// Calls that reached the person.
    pub pitches: u32,
    pub appointments: u32,
    pub callbacks: u32,
    pub refusals: u32,
    pub sessions: u32,
    /// The sessions' span in seconds (rates are computed from it), and in
    /// hours rounded to four decimals.
    pub seconds: i64,
    pub hours: f64,
    pub calls_per_hour: Option<f64>,
    pub pitches_per_hour: Option<f64>,
    /// Appointments per pitch.
    pub appointment_rate: Option<f64>,
    /// Call-backs per call.
    pub callback_rate: Option<f64>,
    /// Refusals per pitch.
    pub refusal_rate: Option<f64>,
    /// Refusals per reason (`props.reason`, else the note; `-` when none).
    pub refusal_reasons: BTreeMap<String, u32>,
}

/// The change of each rate since the previous period (this minus that).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Trend {
    pub calls_per_hour: Option<f64>,
    pub pitches_per_hour: Option<f64>,
    pub appointment_rate: Option<f64>,
    pub callback_rate: Option<f64>,
    pub refusal_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Period {
    /// The session's start, the day (`2026-11-16`) or the ISO week (`2026-W47`).
    pub label: String,
    /// The session's owner (none for days and weeks across owners).
    pub owner: Option<String>,
    pub start: Timestamp,
    pub end: Timestamp,
    #[serde(flatten)]
    pub kpis: Kpis,
    /// Against the previous period (of the same owner, for sessions).
    pub trend: Option<Trend>,
}

/// One run of calls.
#[derive(Clone, Debug, PartialEq)]
pub struct Session<'a> {
    pub owner: &'a str,
    pub calls: &'a [CallRow],
}

impl Session<'_> {
    pub fn start(&self) -> Timestamp {
        self.calls.first().map(|c| c.at).unwrap_or_default()
    }
    pub fn last(&self) -> Timestamp {
        self.calls.last().map(|c| c.at).unwrap_or_default()
    }
}

/// Splits calls (sorted by owner then instant) into sessions.
pub fn sessions(calls: &[CallRow], gap: Duration) -> Vec<Session<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=calls.len() {
        let split = i == calls.len()
            || calls[i].owner != calls[i - 1].owner
            || calls[i].at - calls[i - 1].at >= gap;
        if split {
            out.push(Session {
                owner: &calls[start].owner,
                calls: &calls[start..i],
            });
            start = i;
        }
    }
    out
}

fn add(k: &mut Kpis, s: &Session<'_>, codes: &Codes, call_length: Duration) {
    k.sessions += 1;
    let span = s.last() - s.start() + call_length;
    k.seconds += span.num_seconds();
    for c in s.calls {
        k.calls += 1;
        let code = c.code.as_str();
        if codes.reached.contains(code) {
            k.pitches += 1;
        }
        if codes.appointment.contains(code) {
            k.appointments += 1;
        }
        if codes.callback.contains(code) {
            k.callbacks += 1;
        }
        if codes.refused.contains(code) {
            k.refusals += 1;
            let reason = if c.reason.trim().is_empty() {
                "-".to_string()
            } else {
                c.reason.trim().to_string()
            };
            *k.refusal_reasons.entry(reason).or_default() += 1;
        }
    }
}

fn finish(mut k: Kpis) -> Kpis {
    let hours = k.seconds as f64 / 3_600.0;
    k.hours = (hours * 10_000.0).round() / 10_000.0;
    k.calls_per_hour = ratio(f64::from(k.calls), hours);
    k.pitches_per_hour = ratio(f64::from(k.pitches), hours);
    k.appointment_rate = ratio(f64::from(k.appointments), f64::from(k.pitches));
    k.callback_rate = ratio(f64::from(k.callbacks), f64::from(k.calls));
    k.refusal_rate = ratio(f64::from(k.refusals), f64::from(k.pitches));
    k
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(((a? - b?) * 10_000.0).round() / 10_000.0)
}

fn trend(now: &Kpis, before: &Kpis) -> Trend {
    Trend {
        calls_per_hour: delta(now.calls_per_hour, before.calls_per_hour),
        pitches_per_hour: delta(now.pitches_per_hour, before.pitches_per_hour),
        appointment_rate: delta(now.appointment_rate, before.appointment_rate),
        callback_rate: delta(now.callback_rate, before.callback_rate),
        refusal_rate: delta(now.refusal_rate, before.refusal_rate),
    }
}

/// The KPIs of `calls` (sorted by owner then instant) grouped `by`, oldest
/// period first; and the totals over them all.
pub fn kpis(
    calls: &[CallRow],
    by: By,
    codes: &Codes,
    gap: Duration,
    call_length: Duration,
) -> (Vec<Period>, Kpis) {
    let all = sessions(calls, gap);
    let mut total = Kpis::default();
    for s in &all {
        add(&mut total, s, codes, call_length);
    }
    let total = finish(total);
    let mut periods: Vec<Period> = match by {
        By::Session => {
            let mut list: Vec<&Session<'_>> = all.iter().collect();
            list.sort_by_key(|s| (s.start(), s.owner));
            let mut previous: BTreeMap<&str, Kpis> = BTreeMap::new();
            let mut out = Vec::new();
            for s in list {
                let mut k = Kpis::default();
                add(&mut k, s, codes, call_length);
                let k = finish(k);
                let t = previous.get(s.owner).map(|p| trend(&k, p));
                previous.insert(s.owner, k.clone());
                out.push(Period {
                    label: s.start().to_rfc3339(),
                    owner: Some(s.owner.to_string()),
                    start: s.start(),
                    end: s.last(),
                    kpis: k,
                    trend: t,
                });
            }
            return (out, total);
        }
        By::Day | By::Week => {
            let mut groups: BTreeMap<(Timestamp, String), Kpis> = BTreeMap::new();
            for s in &all {
                let (start, label) = period_of(s.start(), by);
                add(
                    groups.entry((start, label)).or_default(),
                    s,
                    codes,
                    call_length,
                );
            }
            groups
                .into_iter()
                .map(|((start, label), k)| Period {
                    end: start
                        + if by == By::Day {
                            Duration::days(1)
                        } else {
                            Duration::weeks(1)
                        },
                    label,
                    owner: None,
                    start,
                    kpis: finish(k),
                    trend: None,
                })
                .collect()
        }
    };
    for i in 1..periods.len() {
        let t = trend(&periods[i].kpis, &periods[i - 1].kpis);
        periods[i].trend = Some(t);
    }
    (periods, total)
}

/// The day or ISO week holding `at` (UTC): its start and label.
fn period_of(at: Timestamp, by: By) -> (Timestamp, String) {
    let day = at.date_naive();
    let (start, label) = if by == By::Week {
        let monday = day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday()));
        let w = day.iso_week();
        (monday, format!("{}-W{:02}", w.year(), w.week()))
    } else {
        (day, day.to_string())
    };
    (start.and_time(chrono::NaiveTime::MIN).and_utc(), label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(owner: &str, minute: i64, code: &str) -> CallRow {
        CallRow {
            contact: format!("c{minute}"),
            at: "2026-11-16T08:00:00Z".parse::<Timestamp>().expect("t") + Duration::minutes(minute),
            owner: owner.into(),
            code: code.into(),
            reason: String::new(),
        }
    }

    fn codes() -> Codes {
        let s = |l: &[&str]| l.iter().map(|c| (*c).to_string()).collect();
        Codes {
            reached: s(&["RDV", "REFUS", "PISTE"]),
            appointment: s(&["RDV"]),
            callback: s(&["RAPP"]),
            refused: s(&["REFUS"]),
        }
    }

    #[test]
    fn sessions_split_on_gaps_and_owners_and_rates_follow() {
        let calls = vec![
            call("ana", 0, "NRP"),
            call("ana", 10, "RDV"),
            call("ana", 25, "REFUS"),
            call("ana", 120, "RAPP"),
            call("bob", 5, "PISTE"),
        ];
        let gap = Duration::minutes(30);
        let len = Duration::minutes(5);
        assert_eq!(sessions(&calls, gap).len(), 3);
        let (periods, total) = kpis(&calls, By::Session, &codes(), gap, len);
        let first = &periods[0].kpis;
        assert_eq!((first.calls, first.pitches, first.hours), (3, 2, 0.5));
        assert_eq!(first.calls_per_hour, Some(6.0));
        assert_eq!(first.appointment_rate, Some(0.5));
        assert_eq!(periods[2].owner.as_deref(), Some("ana"));
        assert_eq!(
            periods[2].trend.as_ref().and_then(|t| t.calls_per_hour),
            Some(12.0 - 6.0)
        );
        assert_eq!((total.calls, total.sessions), (5, 3));
    }
}
