//! Overview, scores (with the what-if) and follow-ups.

use super::svg::{self, Lines, Marker, Point};
use super::{UiError, check_csrf, chrome, render};
use crate::adapters::api::ApiState;
use crate::core::model::Timestamp;
use crate::domain::scoring::{ScoringModel, WhatIf};
use crate::pipeline::config::Config;
use crate::pipeline::whatif::what_if_over;
use crate::ports::store::ui::DayCount;
use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::response::Html;
use chrono::{Duration, NaiveDate};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

use super::session::Session;

/// The longest date range a page draws, in days.
const MAX_RANGE_DAYS: i64 = 366;
/// Most buckets in the score distribution.
const MAX_BUCKETS: i64 = 120;

#[derive(Debug, Default, Deserialize)]
pub struct Range {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `[from, to)` as days: by default the last 14 days and the next 14.
pub(super) fn range(q: &Range, now: Timestamp) -> Result<(NaiveDate, NaiveDate), UiError> {
    let parse =
        |field: &str, v: &Option<String>, default: NaiveDate| match v.as_deref().map(str::trim) {
            None | Some("") => Ok(default),
            Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                UiError::BadRequest(format!(
                    "{field}: `{}` is not a date such as 2026-11-17",
                    s.chars().take(40).collect::<String>()
                ))
            }),
        };
    let today = now.date_naive();
    let from = parse("from", &q.from, today - Duration::days(14))?;
    let to = parse("to", &q.to, today + Duration::days(14))?;
    if to < from {
        return Err(UiError::BadRequest("to: must not be before from".into()));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(UiError::BadRequest(format!(
            "to: a range covers at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

pub(super) fn start_of(d: NaiveDate) -> Timestamp {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

fn epoch_day(d: NaiveDate) -> i64 {
    start_of(d).timestamp().div_euclid(86_400)
}

fn days(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

/// Per-day series, one per value of key part `part`, over `days`.
fn by_day(rows: &[DayCount], part: usize, days: &[NaiveDate]) -> Vec<(String, Vec<u64>)> {
    let index: HashMap<i64, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (epoch_day(*d), i))
        .collect();
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in rows {
        let Some(&i) = index.get(&r.day) else {
            continue;
        };
        let name = r.key.get(part).cloned().unwrap_or_default();
        series.entry(name).or_insert_with(|| vec![0; days.len()])[i] += r.n;
    }
    series.into_iter().collect()
}

fn labels(days: &[NaiveDate]) -> Vec<String> {
    days.iter().map(|d| d.format("%m-%d").to_string()).collect()
}

fn count(name: &str, n: u64) -> minijinja::Value {
    minijinja::context! { name => name, n => n }
}

pub async fn overview(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Range>,
) -> Result<Html<String>, UiError> {
    let now = state.clock.now();
    let (from, to) = range(&q, now)?;
    let (a, b) = (start_of(from), start_of(to + Duration::days(1)));
    let (bands, outbox, decisions, depth, oldest) = state
        .db()
        .read(move |s| {
            Ok((
                s.band_counts()?,
                s.outbox_by_day(a, b)?,
                s.decision_reasons(a, b)?,
                s.outbox_depth()?,
                s.oldest_pending()?,
            ))
        })
        .await?;
    let config = state.config();
    let days = days(from, to);
    let xs = labels(&days);
    let band_bars: Vec<(String, u64)> = ordered_bands(&config)
        .into_iter()
        .map(|b| {
            let n = bands.get(&b).copied().unwrap_or(0);
            (b, n)
        })
        .collect();
    let mut reasons: BTreeMap<(String, String), u64> = BTreeMap::new();
    for d in &decisions {
        let k = (
            d.key.first().cloned().unwrap_or_default(),
            d.key.get(1).cloned().unwrap_or_default(),
        );
        *reasons.entry(k).or_default() += d.n;
    }
    let reason_bars: Vec<(String, u64)> = reasons
        .iter()
        .map(|((d, r), n)| {
            (
                if r.is_empty() {
                    d.clone()
                } else {
                    format!("{d}: {r}")
                },
                *n,
            )
        })
        .collect();
    let health: Vec<minijinja::Value> = depth
        .iter()
        .map(|(s, n)| count(&s.to_string(), *n))
        .collect();
    let plugins: Vec<(String, bool)> = state.metrics.plugin_health().into_iter().collect();
    let unconfigured: Vec<(String, String)> =
        state.metrics.unconfigured_channels().into_iter().collect();
    render(
        "overview.html",
        minijinja::context! {
            ..chrome(&state, &session, "overview"),
            ..minijinja::context! {
                from => from.to_string(),
                to => to.to_string(),
                contacts => bands.values().sum::<u64>(),
                bands_svg => svg::histogram("Contacts per band", &band_bars, 0.0, 0.0, &[]),
                by_state_svg => svg::stacked("Follow-ups per day by state", &xs, &by_day(&outbox, 0, &days)),
                by_kind_svg => svg::stacked("Follow-ups per day by kind", &xs, &by_day(&outbox, 1, &days)),
                by_channel_svg => svg::stacked("Follow-ups per day by channel", &xs, &by_day(&outbox, 2, &days)),
                reasons_svg => svg::histogram("Decisions by reason", &reason_bars, 0.0, 0.0, &[]),
                reasons => reason_bars.iter().map(|(k, n)| count(k, *n)).collect::<Vec<_>>(),
                health => health,
                oldest => oldest.map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
                plugins => plugins,
                unconfigured => unconfigured,
            }
        },
    )
}

/// Band names, highest first, as configured.
pub(super) fn ordered_bands(config: &Config) -> Vec<String> {
    config
        .scoring
        .bands
        .iter()
        .map(|b| b.name.clone())
        .collect()
}

/// The distribution of stored scores: buckets of a round width, at most
/// [`MAX_BUCKETS`], gaps filled with zeros.
fn distribution(hist: &[(i64, u64)], width: i64) -> Vec<(String, u64)> {
    let (Some(first), Some(last)) = (hist.first(), hist.last()) else {
        return Vec::new();
    };
    let map: HashMap<i64, u64> = hist.iter().copied().collect();
    let mut out = Vec::new();
    let mut lo = first.0;
    while lo <= last.0 {
        out.push((format!("{}", lo / 100), map.get(&lo).copied().unwrap_or(0)));
        lo += width;
    }
    out
}

/// A bucket width (hundredths) that keeps the chart under [`MAX_BUCKETS`].
fn bucket_width(span: i64) -> i64 {
    [500, 1000, 2000, 2500, 5000, 10_000, 25_000, 50_000, 100_000]
        .into_iter()
        .find(|w| span / w < MAX_BUCKETS)
        .unwrap_or(1_000_000)
}

#[derive(Debug, Default, Deserialize)]
pub struct ScoresQuery {
    #[serde(default)]
    pub days: Option<i64>,
}

pub async fn scores(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<ScoresQuery>,
) -> Result<Html<String>, UiError> {
    scores_page(&state, &session, q.days, None, None).await
}

async fn scores_page(
    state: &ApiState,
    session: &Session,
    days: Option<i64>,
    what_if: Option<(String, WhatIf)>,
    error: Option<String>,
) -> Result<Html<String>, UiError> {
    let days_back = days.unwrap_or(30);
    if !(1..=MAX_RANGE_DAYS).contains(&days_back) {
        return Err(UiError::BadRequest(format!(
            "days: between 1 and {MAX_RANGE_DAYS}"
        )));
    }
    let now = state.clock.now();
    let today = now.date_naive();
    let first = today - Duration::days(days_back - 1);
    let since = start_of(first);
    let (bounds, bands, moves) = state
        .db()
        .read(move |s| {
            Ok((
                s.score_histogram(100_000)?,
                s.band_counts()?,
                s.band_moves(since, now)?,
            ))
        })
        .await?;
    let config = state.config();
    // A first coarse pass gives the span, then the real width.
    let span = match (bounds.first(), bounds.last()) {
        (Some(a), Some(b)) => b.0 + 100_000 - a.0,
        _ => 0,
    };
    let width = bucket_width(span);
    let hist = state
        .db()
        .read(move |s| Ok(s.score_histogram(width)?))
        .await?;
    let bars = distribution(&hist, width);
    let x0 = hist.first().map_or(0.0, |h| h.0 as f64 / 100.0);
    let markers: Vec<Marker> = config
        .scoring
        .bands
        .iter()
        .filter_map(|b| {
            b.min.map(|m| Marker {
                at: m,
                label: format!("{} ≥ {m}", b.name),
            })
        })
        .collect();
    let distribution_svg = svg::histogram(
        "Score distribution",
        &bars,
        x0,
        width as f64 / 100.0,
        &markers,
    );
    // Bands over time: today's counts, walked back through the crossings.
    let names = ordered_bands(&config);
    let day_list = self::days(first, today);
    let mut counts: BTreeMap<String, i64> = names
        .iter()
        .map(|b| (b.clone(), bands.get(b).copied().unwrap_or(0) as i64))
        .collect();
    let mut per_day: BTreeMap<i64, Vec<&DayCount>> = BTreeMap::new();
    for m in &moves {
        per_day.entry(m.day).or_default().push(m);
    }
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for d in day_list.iter().rev() {
        let x = start_of(*d).timestamp() as f64;
        for (b, n) in &counts {
            series.entry(b.clone()).or_default().push(Point {
                x,
                y: *n as f64,
                label: format!("{d} {b}"),
            });
        }
        // Undo the day's crossings to get the previous day's end.
        for m in per_day.get(&epoch_day(*d)).into_iter().flatten() {
            *counts.entry(m.key[1].clone()).or_default() -= m.n as i64;
            *counts.entry(m.key[0].clone()).or_default() += m.n as i64;
        }
    }
    let lines = Lines {
        title: "Contacts per band, end of each day",
        class: "bands-over-time",
        series: names
            .iter()
            .map(|b| {
                let mut pts = series.remove(b).unwrap_or_default();
                pts.reverse();
                (b.clone(), pts)
            })
            .collect(),
        levels: vec![],
        marks: vec![],
        crossings: vec![],
        x_labels: day_list
            .iter()
            .step_by((day_list.len() / 8).max(1))
            .map(|d| {
                (
                    start_of(*d).timestamp() as f64,
                    d.format("%m-%d").to_string(),
                )
            })
            .collect(),
    };
    let rules = rules_files(&config);
    let what_if_view = what_if.map(|(source, w)| {
        let bands: Vec<String> = w.before.keys().chain(w.after.keys().filter(|b| !w.before.contains_key(*b))).cloned().collect();
        let xs = bands.clone();
        let series = vec![
            ("now".to_string(), bands.iter().map(|b| w.before.get(b).copied().unwrap_or(0) as u64).collect()),
            ("with the new rules".to_string(), bands.iter().map(|b| w.after.get(b).copied().unwrap_or(0) as u64).collect()),
        ];
        minijinja::context! {
            source => source,
            svg => grouped(&xs, &series),
            rows => bands.iter().map(|b| (b.clone(), w.before.get(b).copied().unwrap_or(0), w.after.get(b).copied().unwrap_or(0))).collect::<Vec<_>>(),
            moved => w.moves.len(),
            moves => w.moves.iter().take(200).map(|m| minijinja::context! {
                contact => m.contact.clone(), from => m.from.clone(), to => m.to.clone(),
                before => m.score_before.to_string(), after => m.score_after.to_string(),
            }).collect::<Vec<_>>(),
        }
    });
    render(
        "scores.html",
        minijinja::context! {
            ..chrome(state, session, "scores"),
            ..minijinja::context! {
                distribution_svg => distribution_svg,
                bands_svg => lines.render(),
                bands => names.iter().map(|b| (b.clone(), bands.get(b).copied().unwrap_or(0))).collect::<Vec<_>>(),
                thresholds => config.scoring.bands.iter().map(|b| (b.name.clone(), b.min)).collect::<Vec<_>>(),
                days => days_back,
                rules => rules,
                what_if => what_if_view,
                error => error,
            }
        },
    )
}

/// Before and after side by side: the stacked chart with one column per
/// (band, version).
fn grouped(bands: &[String], series: &[(String, Vec<u64>)]) -> String {
    let mut xs = Vec::new();
    let mut columns: Vec<(String, Vec<u64>)> = series
        .iter()
        .map(|(n, _)| (n.clone(), Vec::new()))
        .collect();
    for (i, b) in bands.iter().enumerate() {
        for (k, (name, values)) in series.iter().enumerate() {
            xs.push(format!("{b} ({})", if k == 0 { "now" } else { "new" }));
            let _ = name;
            for (j, col) in columns.iter_mut().enumerate() {
                col.1.push(if j == k {
                    values.get(i).copied().unwrap_or(0)
                } else {
                    0
                });
            }
        }
    }
    svg::stacked(
        "Contacts per band, now and with the new rules",
        &xs,
        &columns,
    )
}

/// The `*.toml` files the what-if offers, by name.
fn rules_files(config: &Config) -> Vec<String> {
    let dir = rules_dir(config);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    names
}

fn rules_dir(config: &Config) -> std::path::PathBuf {
    let ui = &config.api.ui;
    if ui.rules_dir.trim().is_empty() {
        config
            .file
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    } else {
        crate::core::config::resolve(&config.file, std::path::Path::new(&ui.rules_dir))
    }
}

/// Largest pasted rules file.
const MAX_RULES_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
pub struct WhatIfForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    file: String,
    #[serde(default)]
    rules: String,
}

/// Scores every contact under the proposed rules (nothing is written).
/// This is the one page that reads every history: it runs on demand only.
pub async fn what_if(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<WhatIfForm>,
) -> Result<Html<String>, UiError> {
    check_csrf(&state, &session, &form.csrf, "what-if")?;
    let config = state.config();
    let (source, proposed) = if !form.rules.trim().is_empty() {
        if form.rules.len() > MAX_RULES_BYTES {
            return Err(UiError::BadRequest(format!(
                "rules: at most {} KB",
                MAX_RULES_BYTES / 1024
            )));
        }
        let path = rules_dir(&config).join("pasted.toml");
        // No environment: a pasted file cannot read the server's variables.
        (
            "the pasted rules".to_string(),
            Config::parse(&form.rules, &path, &|_| None).map_err(|e| e.to_string()),
        )
    } else if rules_files(&config).contains(&form.file) {
        let path = rules_dir(&config).join(&form.file);
        (
            form.file.clone(),
            Config::load(&path).map_err(|e| e.to_string()),
        )
    } else {
        return Err(UiError::BadRequest(
            "file: pick one of the files listed, or paste rules".into(),
        ));
    };
    tracing::info!(role = session.role.as_str(), source = %source, "dashboard what-if run");
    let proposed = match proposed {
        Ok(p) => p,
        Err(e) => {
            return scores_page(&state, &session, None, None, Some(format!("{source}: {e}"))).await;
        }
    };
    let before =
        ScoringModel::compile(&config.scoring).map_err(|e| UiError::Internal(e.to_string()))?;
    let after = match ScoringModel::compile(&proposed.scoring) {
        Ok(m) => m,
        Err(e) => {
            return scores_page(&state, &session, None, None, Some(format!("{source}: {e}"))).await;
        }
    };
    let now = state.clock.now();
    let result = state
        .db()
        .read(move |store| Ok(what_if_over(store, &before, &after, now)?))
        .await?;
    scores_page(&state, &session, None, Some((source, result)), None).await
}

#[derive(Debug)]
struct FollowupRow {
    name: String,
    kind: String,
    channels: String,
    counts: Vec<u64>,
    total: u64,
}

/// The states shown as columns, in the order of a send's life.
const STATES: [&str; 8] = [
    "planned", "deferred", "claimed", "retrying", "sent", "blocked", "dropped", "dead",
];

pub async fn followups(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let config = state.config();
    let now = state.clock.now();
    let (counts, broadcasts, campaigns) = state
        .db()
        .read(move |s| {
            Ok((
                s.outbox_by_followup()?,
                s.broadcasts()?,
                crate::pipeline::report::campaigns(s, &config, now)
                    .map_err(|e| crate::adapters::api::ApiError::Internal(e.to_string()))?,
            ))
        })
        .await?;
    let config = state.config();
    let mut rows: BTreeMap<String, FollowupRow> = BTreeMap::new();
    fn add<'r>(
        rows: &'r mut BTreeMap<String, FollowupRow>,
        name: &str,
        kind: &str,
    ) -> &'r mut FollowupRow {
        rows.entry(name.to_string()).or_insert_with(|| FollowupRow {
            name: name.to_string(),
            kind: kind.to_string(),
            channels: String::new(),
            counts: vec![0; STATES.len()],
            total: 0,
        })
    }
    for n in &config.followups.nurture {
        add(&mut rows, &n.name, "systematic");
    }
    for t in &config.followups.triggers {
        add(&mut rows, &t.name, "opportunistic");
    }
    for b in &broadcasts {
        add(&mut rows, &b.id, "event");
    }
    for c in &counts {
        {
            let r = add(&mut rows, &c.followup, &c.kind);
            if let Some(i) = STATES.iter().position(|s| *s == c.state) {
                r.counts[i] += c.n;
            }
            r.total += c.n;
            if !r.channels.split(", ").any(|x| x == c.channel) {
                if !r.channels.is_empty() {
                    r.channels.push_str(", ");
                }
                r.channels.push_str(&c.channel);
            }
        }
    }
    let rows: Vec<FollowupRow> = rows.into_values().collect();
    let xs: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    let series: Vec<(String, Vec<u64>)> = STATES
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), rows.iter().map(|r| r.counts[i]).collect()))
        .filter(|(_, v): &(String, Vec<u64>)| v.iter().any(|n| *n > 0))
        .collect();
    let names: Vec<String> = campaigns.iter().map(|c| c.name.clone()).collect();
    let funnel: Vec<(String, Vec<u64>)> = [
        "reached",
        "opened",
        "clicked in target",
        "clicked off target",
        "converted",
    ]
    .iter()
    .map(|step| {
        (
            step.to_string(),
            campaigns
                .iter()
                .map(|c| match *step {
                    "reached" => c.contacts,
                    "opened" => c.opened,
                    "clicked in target" => c.clicked_in_target,
                    "clicked off target" => c.clicked_off_target,
                    _ => c.conversions.contacts,
                })
                .collect(),
        )
    })
    .collect();
    let effectiveness = svg::grouped(
        "Contacts per campaign: reached, opened, clicked (in and off target), converted",
        &names,
        &funnel,
    );
    render(
        "followups.html",
        minijinja::context! {
            ..chrome(&state, &session, "followups"),
            ..minijinja::context! {
                campaigns_svg => effectiveness,
                campaigns => campaigns.iter().map(|c| minijinja::context! {
                    name => c.name.clone(),
                    kind => match c.kind {
                        crate::domain::desk::campaigns::CampaignKind::Broadcast => "broadcast",
                        crate::domain::desk::campaigns::CampaignKind::Nurture => "nurture",
                    },
                    sent => c.sent, contacts => c.contacts, opened => c.opened, clicked => c.clicked,
                    unsubscribed => c.unsubscribed, in_target => c.clicked_in_target,
                    off_target => c.clicked_off_target,
                    share => c.in_target_share.map_or_else(|| "–".to_string(), |r| format!("{:.0}%", 100.0 * r)),
                    band_up => c.conversions.band_up, meeting => c.conversions.meeting,
                    purchase => c.conversions.purchase, converted => c.conversions.contacts,
                }).collect::<Vec<_>>(),
                svg => svg::stacked("Outbox rows per follow-up by state", &xs, &series),
                states => STATES,
                rows => rows.iter().map(|r| minijinja::context! {
                    name => r.name.clone(), kind => r.kind.clone(), channels => r.channels.clone(),
                    counts => r.counts.clone(), total => r.total,
                }).collect::<Vec<_>>(),
                broadcasts => broadcasts.iter().map(|b| minijinja::context! {
                    id => b.id.clone(), name => b.name.clone(), channel => b.channel.clone(),
                    start => b.start.format("%Y-%m-%d").to_string(), end => b.end.format("%Y-%m-%d").to_string(),
                }).collect::<Vec<_>>(),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distribution_fills_gaps_and_keeps_round_widths() {
        let bars = distribution(&[(-500, 1), (1000, 2)], 500);
        let labels: Vec<&str> = bars.iter().map(|b| b.0.as_str()).collect();
        assert_eq!(labels, ["-5", "0", "5", "10"]);
        assert_eq!(bars.iter().map(|b| b.1).sum::<u64>(), 3);
        assert_eq!(bucket_width(10_000), 500);
        assert!(bucket_width(10_000_000) >= 100_000);
    }

    #[test]
    fn a_range_is_checked_field_by_field() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let bad = |from: &str, to: &str| {
            range(
                &Range {
                    from: Some(from.into()),
                    to: Some(to.into()),
                },
                now,
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(bad("2026-13-01", "2026-01-01").starts_with("from:"));
        assert!(bad("2026-02-01", "2026-01-01").starts_with("to:"));
        assert!(bad("2020-01-01", "2026-01-01").starts_with("to:"));
        assert!(range(&Range::default(), now).is_ok());
    }
}
