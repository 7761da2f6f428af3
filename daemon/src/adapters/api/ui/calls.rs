//! The call desk: `relance calls today` (ranked, each with why), recording
//! an outcome, and the call KPIs per day with their trend, all read through
//! [`crate::pipeline::report`] from what the passes keep.

use super::session::Session;
use super::svg::{Lines, Point};
use super::{UiError, check_admin, check_csrf, chrome, render};
use crate::adapters::api::ApiState;
use crate::core::model::Event;
use crate::domain::desk::kpis::{By, Period};
use crate::domain::desk::today::{ToCall, Why};
use crate::domain::ingest::Incoming;
use crate::pipeline::report;
use crate::pipeline::tasks::{self, CallOutcome, TaskError};
use crate::ports::store::Append;
use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

/// Longest note.
const MAX_NOTE: usize = 2000;
/// Today's calls per page.
const PER_PAGE: u32 = 50;
/// The KPIs cover this many days before now.
const KPI_DAYS: i64 = 28;

fn task_error(e: TaskError) -> UiError {
    match e {
        TaskError::NotFound(_) => UiError::NotFound(e.to_string()),
        TaskError::Store(s) => UiError::Internal(s.to_string()),
        other => UiError::BadRequest(other.to_string()),
    }
}

fn report_error(e: report::ReportError) -> crate::adapters::api::ApiError {
    crate::adapters::api::ApiError::Internal(e.to_string())
}

fn stamp(t: crate::core::model::Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn why(w: &Why) -> String {
    match w {
        Why::Trigger { followup, due, .. } => {
            format!("{followup} asked for a call by {}", stamp(*due))
        }
        Why::CallBack { at } => format!("call-back agreed for {}", stamp(*at)),
        Why::HotLead { band } => format!("{band} lead not called lately"),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{:.0}%", 100.0 * r))
}

/// A rate's change against the previous period, in points.
fn delta(r: Option<f64>) -> String {
    match r {
        Some(d) if d > 0.0 => format!("▲ {:.0}", 100.0 * d),
        Some(d) if d < 0.0 => format!("▼ {:.0}", -100.0 * d),
        Some(_) => "=".into(),
        None => String::new(),
    }
}

fn row(rank: usize, c: &ToCall) -> minijinja::Value {
    let b = &c.contact;
    let task = c.why.iter().find_map(|w| match w {
        Why::Trigger { task, .. } => Some(task.clone()),
        _ => None,
    });
    minijinja::context! {
        rank => rank + 1,
        id => b.id.clone(),
        name => b.name.clone(),
        company => b.company.clone(),
        phone => b.phone.clone(),
        band => b.band.clone(),
        score => b.score.map(|s| format!("{s:.0}")),
        priority => c.priority,
        why => c.why.iter().map(why).collect::<Vec<_>>(),
        last_call => match (&b.last_call_code, b.last_call_at) {
            (Some(code), Some(at)) => format!("{code} {}", stamp(at)),
            _ => "never".into(),
        },
        task => task,
    }
}

fn period(p: &Period) -> minijinja::Value {
    let k = &p.kpis;
    let t = p.trend.clone().unwrap_or_default();
    minijinja::context! {
        label => p.label.clone(),
        calls => k.calls,
        pitches => k.pitches,
        appointments => k.appointments,
        callbacks => k.callbacks,
        refusals => k.refusals,
        appointment_rate => pct(k.appointment_rate),
        appointment_trend => delta(t.appointment_rate),
        callback_rate => pct(k.callback_rate),
        callback_trend => delta(t.callback_rate),
        refusal_rate => pct(k.refusal_rate),
        refusal_trend => delta(t.refusal_rate),
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Of today's calls, from 1.
    pub page: Option<u64>,
}

pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, UiError> {
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(UiError::BadRequest("page: from 1".into()));
    }
    let offset = (page - 1).saturating_mul(u64::from(PER_PAGE));
    let config = state.config();
    let now = state.clock.now();
    let from = now - chrono::Duration::days(KPI_DAYS);
    let (today, kpis) = state
        .db()
        .read(move |s| {
            Ok((
                report::calls_today(s, &config, now, None, offset, PER_PAGE)
                    .map_err(report_error)?,
                report::call_kpis(s, &config, from, now, By::Day, None).map_err(report_error)?,
            ))
        })
        .await?;
    let pages = today.total.div_ceil(u64::from(PER_PAGE)).max(1);
    let list = &today.calls;
    let x = |p: &Period| p.start.timestamp() as f64;
    let rate = |name: &str, f: &dyn Fn(&Period) -> Option<f64>| {
        (
            name.to_string(),
            kpis.periods
                .iter()
                .filter_map(|p| {
                    f(p).map(|r| Point {
                        x: x(p),
                        y: (1000.0 * r).round() / 10.0,
                        label: format!("{} {name}", p.label),
                    })
                })
                .collect::<Vec<_>>(),
        )
    };
    let trend = Lines {
        title: "Rates per day, in % (appointments and refusals per pitch, call-backs per call)",
        class: "kpi-trend",
        series: vec![
            rate("appointment rate", &|p| p.kpis.appointment_rate),
            rate("call-back rate", &|p| p.kpis.callback_rate),
            rate("refusal rate", &|p| p.kpis.refusal_rate),
        ],
        levels: vec![],
        marks: vec![],
        crossings: vec![],
        x_labels: kpis
            .periods
            .iter()
            .map(|p| (x(p), p.start.format("%m-%d").to_string()))
            .collect(),
    }
    .render();
    let calls = Lines {
        title: "Calls and pitches per day",
        class: "kpi-calls",
        series: ["calls", "pitches"]
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    kpis.periods
                        .iter()
                        .map(|p| Point {
                            x: x(p),
                            y: f64::from(if *name == "calls" {
                                p.kpis.calls
                            } else {
                                p.kpis.pitches
                            }),
                            label: format!("{} {name}", p.label),
                        })
                        .collect(),
                )
            })
            .collect(),
        levels: vec![],
        marks: vec![],
        crossings: vec![],
        x_labels: vec![],
    }
    .render();
    let config = state.config();
    render(
        "calls.html",
        minijinja::context! {
            ..chrome(&state, &session, "calls"),
            ..minijinja::context! {
                today => list.iter().enumerate().map(|(i, c)| row(offset as usize + i, c)).collect::<Vec<_>>(),
                total => today.total,
                page => page,
                pages => pages,
                first => offset + 1,
                last => offset + list.len() as u64,
                prev => (page > 1).then(|| format!("/ui/calls?page={}", page - 1)),
                next => (page < pages).then(|| format!("/ui/calls?page={}", page + 1)),
                periods => kpis.periods.iter().rev().map(period).collect::<Vec<_>>(),
                total => period(&Period {
                    label: "all".into(),
                    owner: None,
                    start: kpis.from,
                    end: kpis.to,
                    kpis: kpis.total.clone(),
                    trend: None,
                }),
                days => KPI_DAYS,
                trend_svg => trend,
                calls_svg => calls,
                codes => tasks::codes(&config),
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct OutcomeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    contact: String,
    /// The call task answered, when a follow-up asked for the call.
    #[serde(default)]
    task: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    note: String,
}

/// Records a call: on its task when a follow-up asked for it (exactly once
/// per task), else as a `call` event of the contact (a call-back, a hot
/// lead). The next pass updates the desk, the status and the KPIs.
pub async fn outcome(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<OutcomeForm>,
) -> Result<Response, UiError> {
    check_csrf(&state, &session, &form.csrf, "record an outcome")?;
    check_admin(&session, "record an outcome")?;
    if form.note.len() > MAX_NOTE {
        return Err(UiError::BadRequest(format!(
            "note: at most {MAX_NOTE} characters"
        )));
    }
    let config = state.config();
    let code = form.code.trim().to_uppercase();
    let accepted = tasks::codes(&config);
    if !accepted.contains(&code) {
        return Err(UiError::BadRequest(format!(
            "code: `{}` is not one of {}",
            form.code.chars().take(40).collect::<String>(),
            accepted.join(", ")
        )));
    }
    let now = state.clock.now();
    let note = Some(form.note.trim().to_string()).filter(|n| !n.is_empty());
    let contact = if form.task.trim().is_empty() {
        let id = form.contact.trim().to_string();
        if id.is_empty() {
            return Err(UiError::BadRequest("contact: missing".into()));
        }
        let mut props = serde_json::Map::new();
        props.insert("outcome".into(), code.clone().into());
        if let Some(n) = &note {
            props.insert("note".into(), n.clone().into());
        }
        let event = Event {
            id: Some(format!("ui-call-{id}-{}", now.timestamp_micros())),
            contact: id.clone(),
            kind: config.followups.calls.event.clone(),
            at: now,
            channel: None,
            props,
        };
        let appended = state
            .db()
            .write(move |s| s.append_events(&[Incoming::Contact(event)]))
            .await?;
        match appended.first() {
            Some(Append::Inserted) => id,
            Some(Append::Rejected(why)) => return Err(UiError::BadRequest(why.clone())),
            _ => return Err(UiError::BadRequest("this call is already recorded".into())),
        }
    } else {
        let outcome = CallOutcome {
            code: code.clone(),
            note,
            callback_at: None,
            at: None,
        };
        let id = form.task.trim().to_string();
        let recorded = state
            .db()
            .write(move |s| Ok(tasks::record(s, &config, &id, &outcome, now)))
            .await?;
        recorded.map_err(task_error)?.contact
    };
    tracing::info!(contact = %contact, task = %form.task, code = %code, role = session.role.as_str(), "call outcome recorded from the dashboard");
    state.poke();
    Ok(Redirect::to("/ui/calls").into_response())
}
