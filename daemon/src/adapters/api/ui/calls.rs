//! The call desk: call tasks to make, ranked by when they are due, with
//! the follow-up that asked for them; recording an outcome; the outcome
//! codes of the latest tasks, per day.

use super::session::Session;
use super::svg::{self, Lines, Point};
use super::{UiError, check_admin, check_csrf, chrome, render};
use crate::adapters::api::ApiState;
use crate::pipeline::tasks::{self, CallOutcome, TaskError};
use axum::Extension;
use axum::extract::{Form, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Delivered tasks read: the desk and its figures cover the latest ones.
const TASKS_READ: u32 = 500;
/// Longest note.
const MAX_NOTE: usize = 2000;

fn task_error(e: TaskError) -> UiError {
    match e {
        TaskError::NotFound(_) => UiError::NotFound(e.to_string()),
        TaskError::Store(s) => UiError::Internal(s.to_string()),
        other => UiError::BadRequest(other.to_string()),
    }
}

pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let config = state.config();
    let now = state.clock.now();
    let list = state
        .db()
        .read(move |s| {
            tasks::list(s, &config, false, TASKS_READ, now)
                .map_err(|e| crate::adapters::api::ApiError::Internal(e.to_string()))
        })
        .await?;
    let (mut open, done): (Vec<_>, Vec<_>) = list.into_iter().partition(|t| t.outcome.is_none());
    open.sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.id.cmp(&b.id)));
    let mut per_code: BTreeMap<String, u64> = BTreeMap::new();
    // Per day: calls, meetings, refusals.
    let mut per_day: BTreeMap<chrono::NaiveDate, [u64; 3]> = BTreeMap::new();
    for t in &done {
        let Some(o) = &t.outcome else { continue };
        *per_code.entry(o.code.clone()).or_default() += 1;
        let day = o.at.unwrap_or(t.due).date_naive();
        let e = per_day.entry(day).or_default();
        e[0] += 1;
        if o.code == "RDV" {
            e[1] += 1;
        }
        if o.code.starts_with("REFUS") {
            e[2] += 1;
        }
    }
    let x = |d: &chrono::NaiveDate| super::pages::start_of(*d).timestamp() as f64;
    let series = ["calls", "meetings (RDV)", "refusals"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                name.to_string(),
                per_day
                    .iter()
                    .map(|(d, v)| Point {
                        x: x(d),
                        y: v[k] as f64,
                        label: format!("{d} {name}"),
                    })
                    .collect(),
            )
        })
        .collect();
    let trend = Lines {
        title: "Call outcomes per day",
        class: "kpis",
        series,
        levels: vec![],
        marks: vec![],
        crossings: vec![],
        x_labels: per_day
            .keys()
            .map(|d| (x(d), d.format("%m-%d").to_string()))
            .collect(),
    }
    .render();
    let codes: Vec<(String, u64)> = per_code.into_iter().collect();
    let total = done.len() as f64;
    let rate = |code: &str| {
        let n = codes
            .iter()
            .filter(|(c, _)| c.starts_with(code))
            .map(|(_, n)| *n)
            .sum::<u64>() as f64;
        if total > 0.0 {
            format!("{:.0}%", 100.0 * n / total)
        } else {
            "–".into()
        }
    };
    render(
        "calls.html",
        minijinja::context! {
            ..chrome(&state, &session, "calls"),
            ..minijinja::context! {
                open => open.iter().map(|t| minijinja::context! {
                    id => t.id.clone(), contact => t.contact.clone(), name => t.name.clone(), phone => t.phone.clone(),
                    company => t.company.clone(), followup => t.followup.clone(), text => t.text.clone(),
                    due => t.due.format("%Y-%m-%d %H:%M").to_string(), overdue => t.due < now,
                }).collect::<Vec<_>>(),
                done_count => done.len(),
                codes_svg => svg::histogram("Outcomes by code", &codes, 0.0, 0.0, &[]),
                trend_svg => trend,
                appointment_rate => rate("RDV"),
                callback_rate => rate("RAPP"),
                refusal_rate => rate("REFUS"),
                codes => tasks::CALL_CODES,
                read => TASKS_READ,
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct OutcomeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    note: String,
}

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
    let now = state.clock.now();
    let outcome = CallOutcome {
        code: form.code.clone(),
        note: Some(form.note.clone()).filter(|n| !n.trim().is_empty()),
        callback_at: None,
        at: None,
    };
    let id = form.task.clone();
    let recorded = state
        .db()
        .write(move |s| Ok(tasks::record(s, &config, &id, &outcome, now)))
        .await?;
    let task = recorded.map_err(task_error)?;
    tracing::info!(task = %task.id, contact = %task.contact, code = %form.code, "call outcome recorded from the dashboard");
    state.poke();
    Ok(Redirect::to("/ui/calls").into_response())
}
