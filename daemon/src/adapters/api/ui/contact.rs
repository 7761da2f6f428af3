//! One contact: search, profile, the score's explanation and film, the
//! fatigue curve, the plan with the guard's reasons, events, erasure.

use super::session::Session;
use super::svg::{self, Lines, Point};
use super::{UiError, check_admin, check_csrf, chrome, render};
use crate::adapters::api::ApiState;
use crate::core::model::Timestamp;
use crate::domain::fatigue::ContactState;
use crate::domain::scoring::ScoringModel;
use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Duration;
use serde::Deserialize;

/// Days of fatigue drawn before and after now.
const FATIGUE_DAYS: i64 = 30;
/// Events listed, newest first.
const EVENTS_SHOWN: usize = 100;
/// Events the film replays (the latest).
const FILM_EVENTS: usize = 200;
/// Longest search text.
const MAX_QUERY: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct ContactQuery {
    pub q: Option<String>,
    pub id: Option<String>,
}

pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(query): Query<ContactQuery>,
) -> Result<Html<String>, UiError> {
    let q = query.q.unwrap_or_default();
    if q.len() > MAX_QUERY || query.id.as_ref().is_some_and(|i| i.len() > MAX_QUERY) {
        return Err(UiError::BadRequest(format!(
            "q: at most {MAX_QUERY} characters"
        )));
    }
    let hits = if q.trim().is_empty() {
        Vec::new()
    } else {
        let text = q.clone();
        state
            .db()
            .read(move |s| Ok(s.search_contacts(&text, 50)?))
            .await?
    };
    // A search with one hit opens it.
    let id = query
        .id
        .or_else(|| (hits.len() == 1).then(|| hits[0].id.clone()));
    let profile = match id {
        Some(id) => Some(profile(&state, id).await?),
        None => None,
    };
    render(
        "contact.html",
        minijinja::context! {
            ..chrome(&state, &session, "contact"),
            ..minijinja::context! {
                searched => !q.trim().is_empty(),
                q => q,
                hits => hits.iter().map(|h| minijinja::context! {
                    id => h.id.clone(), name => h.name.clone(), email => h.email.clone(),
                    score => h.score.map(|s| format!("{:.2}", s as f64 / 100.0)), band => h.band.clone(),
                }).collect::<Vec<_>>(),
                contact => profile,
            }
        },
    )
}

fn day(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

async fn profile(state: &ApiState, id: String) -> Result<minijinja::Value, UiError> {
    let config = state.config();
    let now = state.clock.now();
    let who = id.clone();
    let read = state
        .db()
        .read(move |s| {
            let Some(input) = s.scoring_input(&who)? else {
                return Ok(None);
            };
            Ok(Some((
                input,
                s.stored_score(&who)?,
                s.score_history(&who, None)?,
                s.guard_input(&who)?.map(|g| g.1).unwrap_or_default(),
                s.pending_of(&who)?,
                s.decisions(Some(&who), 50)?,
            )))
        })
        .await?;
    let Some(((contact, company, events), stored, film, weighs, pending, decisions)) = read else {
        return Err(UiError::NotFound(format!("no contact with id `{id}`")));
    };
    let model =
        ScoringModel::compile(&config.scoring).map_err(|e| UiError::Internal(e.to_string()))?;
    let card = model.score(&contact, company.as_ref(), &events, now);
    let items: Vec<(String, f64)> = card
        .contributions
        .iter()
        .map(|c| (c.rule.to_string(), c.points.as_f64()))
        .collect();
    let explanation_svg =
        svg::contributions(&format!("Why {} scores {}", contact.id, card.score), &items);

    // The film: the score replayed at each event (as the rules in force
    // compute it), the snapshots stored by the passes, band crossings
    // circled.
    let mut replayed = Vec::new();
    let mut crossings = Vec::new();
    let mut last_band: Option<std::sync::Arc<str>> = None;
    let first = events.len().saturating_sub(FILM_EVENTS);
    for (i, e) in events.iter().enumerate().skip(first) {
        let c = model.score(&contact, company.as_ref(), &events[..=i], e.at);
        let p = Point {
            x: e.at.timestamp() as f64,
            y: c.score.as_f64(),
            label: format!("{} after {}: {} ({})", day(e.at), e.kind, c.score, c.band),
        };
        if last_band.as_ref().is_some_and(|b| *b != c.band) {
            crossings.push(Point {
                label: format!(
                    "{} → {} on {}",
                    last_band.as_deref().unwrap_or_default(),
                    c.band,
                    day(e.at)
                ),
                ..p.clone()
            });
        }
        last_band = Some(c.band.clone());
        replayed.push(p);
    }
    replayed.push(Point {
        x: now.timestamp() as f64,
        y: card.score.as_f64(),
        label: format!("now: {}", card.score),
    });
    let stored_points: Vec<Point> = film
        .iter()
        .map(|s| Point {
            x: s.at.timestamp() as f64,
            y: s.score as f64 / 100.0,
            label: format!(
                "stored {} {} ({})",
                day(s.at),
                s.score as f64 / 100.0,
                s.band
            ),
        })
        .collect();
    let span = replayed.first().map_or(now, |p| {
        chrono::DateTime::from_timestamp(p.x as i64, 0).unwrap_or(now)
    });
    let film_svg = Lines {
        title: "Score over time",
        class: "film",
        series: vec![
            ("replayed at each event".into(), replayed),
            ("stored by the passes".into(), stored_points),
        ],
        levels: config
            .scoring
            .bands
            .iter()
            .filter_map(|b| b.min.map(|m| (m, b.name.clone())))
            .collect(),
        marks: vec![],
        crossings,
        x_labels: [span, now]
            .iter()
            .map(|t| (t.timestamp() as f64, t.format("%Y-%m-%d").to_string()))
            .collect(),
    }
    .render();

    // Fatigue: replayed day by day over the last 30 days, then decaying
    // over the next 30, with the planned sends marked.
    let guard = config
        .guard()
        .map_err(|e| UiError::Internal(e.to_string()))?;
    let mut fatigue_state = ContactState::new(&guard, &contact);
    let mut next = weighs.iter().peekable();
    let mut curve = Vec::new();
    let start = now - Duration::days(FATIGUE_DAYS);
    for d in 0..=2 * FATIGUE_DAYS {
        let t = start + Duration::days(d);
        while let Some(e) = next.next_if(|e| e.at <= t.min(now)) {
            fatigue_state
                .apply(&guard, e)
                .map_err(|e| UiError::Internal(e.to_string()))?;
        }
        curve.push(Point {
            x: t.timestamp() as f64,
            y: fatigue_state.fatigue_at(&guard, t).as_f64(),
            label: day(t),
        });
    }
    let fatigue_now = fatigue_state.fatigue_at(&guard, now);
    let fatigue_svg = Lines {
        title: "Fatigue, last and next 30 days",
        class: "fatigue",
        series: vec![("fatigue".into(), curve)],
        levels: config
            .fatigue
            .levels
            .iter()
            .filter_map(|l| l.from.or(l.above).map(|v| (v, l.name.clone())))
            .collect(),
        marks: pending
            .iter()
            .filter(|r| r.due_at <= now + Duration::days(FATIGUE_DAYS))
            .map(|r| {
                (
                    r.due_at.max(start).timestamp() as f64,
                    format!("{} on {} at {}", r.followup, r.channel, day(r.due_at)),
                )
            })
            .collect(),
        crossings: vec![],
        x_labels: [start, now, now + Duration::days(FATIGUE_DAYS)]
            .iter()
            .map(|t| (t.timestamp() as f64, t.format("%m-%d").to_string()))
            .collect(),
    }
    .render();

    let name = [&contact.first_name, &contact.last_name]
        .iter()
        .filter_map(|n| n.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(minijinja::context! {
        id => contact.id.clone(),
        name => name,
        email => contact.email.clone(),
        phone => contact.phone.clone(),
        company => contact.company.clone(),
        owner => contact.owner.clone(),
        status => contact.status.as_str(),
        tier => contact.tier.clone(),
        score => card.score.to_string(),
        band => card.band.to_string(),
        stored => stored.map(|s| format!("{:.2} ({}) at {}", s.score as f64 / 100.0, s.band, day(s.scored_at))),
        contributions => items.iter().map(|(r, p)| (r.clone(), format!("{p:.2}"))).collect::<Vec<_>>(),
        explanation_svg => explanation_svg,
        film_svg => film_svg,
        fatigue => format!("{:.1}", fatigue_now.as_f64()),
        level => guard.level_name(fatigue_now).to_string(),
        fatigue_svg => fatigue_svg,
        plan => pending.iter().map(|r| minijinja::context! {
            followup => r.followup.clone(), channel => r.channel.clone(), state => r.state.to_string(),
            due => day(r.due_at), error => r.last_error.clone(),
        }).collect::<Vec<_>>(),
        decisions => decisions.iter().map(|d| minijinja::context! {
            at => day(d.at), followup => d.followup.clone(), channel => d.channel.clone(),
            decision => d.decision.as_str(), until => d.until.map(day), reasons => reasons_text(&d.reasons),
        }).collect::<Vec<_>>(),
        events => events.iter().rev().take(EVENTS_SHOWN).map(|e| minijinja::context! {
            at => day(e.at), kind => e.kind.clone(), channel => e.channel.clone(),
            props => if e.props.is_empty() { String::new() } else { serde_json::Value::Object(e.props.clone()).to_string() },
        }).collect::<Vec<_>>(),
        event_count => events.len(),
    })
}

/// The guard's reasons in one line: each rule with its details.
fn reasons_text(v: &serde_json::Value) -> String {
    let list = v.get("reasons").unwrap_or(v);
    match list.as_array() {
        Some(items) => items
            .iter()
            .map(|r| match r.as_object() {
                Some(o) => {
                    let rule = o.get("rule").and_then(|x| x.as_str()).unwrap_or("?");
                    let rest: Vec<String> = o
                        .iter()
                        .filter(|(k, _)| *k != "rule")
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str().map_or_else(|| v.to_string(), str::to_string)
                            )
                        })
                        .collect();
                    if rest.is_empty() {
                        rule.to_string()
                    } else {
                        format!("{rule} ({})", rest.join(", "))
                    }
                }
                None => r.as_str().map_or_else(|| r.to_string(), str::to_string),
            })
            .collect::<Vec<_>>()
            .join("; "),
        None => v.to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct EraseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    /// The id typed again: erasure cannot be undone.
    #[serde(default)]
    confirm: String,
}

pub async fn erase(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Form(form): Form<EraseForm>,
) -> Result<Response, UiError> {
    check_csrf(&state, &session, &form.csrf, "erase")?;
    check_admin(&session, "erase a contact")?;
    if form.id.is_empty() || form.confirm.trim() != form.id {
        return Err(UiError::BadRequest(
            "confirm: type the contact's id to erase it".into(),
        ));
    }
    let who = form.id.clone();
    if state.db().write(move |s| s.erase_contact(&who)).await? {
        tracing::info!(contact = %form.id, role = session.role.as_str(), "contact erased from the dashboard");
        state.poke();
        Ok(Redirect::to(&format!(
            "/ui/contact?q={}&erased=1",
            super::percent(&form.id)
        ))
        .into_response())
    } else {
        Err(UiError::NotFound(format!(
            "no contact with id `{}`",
            form.id
        )))
    }
}
