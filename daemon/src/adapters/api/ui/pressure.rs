//! Marketing pressure against customer value (seed 002): the 5×5 grid,
//! each cell linked to a paginated list of its customers, and the over-
//! and under-pressured.
//!
//! Value tiers are ranks among all customers, so the grid is the pressure
//! pass's (a schedule, see [`crate::pipeline::pressure::refresh`]), stored
//! whole: the pages read its counts and a page of its rows, never a
//! customer's history. The page says when the pass ran.

use super::session::Session;
use super::svg;
use super::{UiError, chrome, render};
use crate::adapters::api::ApiState;
use crate::domain::fatigue::{PressureCategory, ValueTier};
use crate::ports::store::ui::{PressureList, PressureRow};
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;

/// Customers per page of a list, by default and at most.
pub const PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Misfits shown on the grid's page, per list.
const SHOWN: u32 = 20;

fn name<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

fn rows(list: &[PressureRow]) -> Vec<minijinja::Value> {
    list.iter()
        .map(|m| {
            minijinja::context! {
                contact => m.contact.clone(),
                pressure => name(PressureCategory::ALL[usize::from(m.pressure.min(4))]),
                value => name(ValueTier::ALL[usize::from(m.value.min(4))]),
                gap => m.gap,
                fatigue => format!("{:.1}", m.fatigue_milli as f64 / 1000.0),
                solicitations => m.solicitations,
            }
        })
        .collect()
}

fn tolerance(state: &ApiState) -> i8 {
    i8::try_from(state.config().fatigue.pressure.tolerance).unwrap_or(i8::MAX)
}

pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let t = tolerance(&state);
    let (grid, over, under) = state
        .db()
        .read(move |s| {
            Ok((
                s.pressure_grid()?,
                s.pressure_list(PressureList::Over(t), 0, SHOWN)?,
                s.pressure_list(PressureList::Under(t), 0, SHOWN)?,
            ))
        })
        .await?;
    // Strongest pressure on top.
    let names: Vec<String> = PressureCategory::ALL.iter().rev().map(name).collect();
    let cols: Vec<String> = ValueTier::ALL.iter().map(name).collect();
    let counts: Vec<Vec<u64>> = (0..5).rev().map(|p| grid.counts[p].to_vec()).collect();
    let heatmap = svg::heatmap("Pressure × value", &names, &cols, &counts, &|i, j| {
        format!("/ui/pressure/contacts?p={}&v={j}", 4 - i)
    });
    render(
        "pressure.html",
        minijinja::context! {
            ..chrome(&state, &session, "pressure"),
            ..minijinja::context! {
                heatmap_svg => heatmap,
                computed => grid.computed.map(|c| c.format("%Y-%m-%d %H:%M UTC").to_string()),
                customers => counts.iter().flatten().sum::<u64>(),
                over_count => over.1,
                under_count => under.1,
                over => rows(&over.0),
                under => rows(&under.0),
            }
        },
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Pressure rank, 0 (very weak) to 4 (very strong).
    pub p: Option<u8>,
    /// Value rank, 0 (negative margin) to 4 (strategic).
    pub v: Option<u8>,
    /// `over` or `under` instead of a cell.
    pub list: Option<String>,
    /// From 1.
    pub page: Option<u64>,
    /// Customers per page.
    pub per: Option<u32>,
}

/// One cell's customers, or the over- or under-pressured, a page at a time.
pub async fn contacts(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, UiError> {
    let t = tolerance(&state);
    let (which, title) = match (q.p, q.v, q.list.as_deref()) {
        (Some(p @ 0..=4), Some(v @ 0..=4), None) => (
            PressureList::Cell(p, v),
            format!(
                "{} pressure, {} value",
                name(PressureCategory::ALL[usize::from(p)]),
                name(ValueTier::ALL[usize::from(v)])
            ),
        ),
        (None, None, Some("over")) => (PressureList::Over(t), "Over-pressured".to_string()),
        (None, None, Some("under")) => (PressureList::Under(t), "Under-pressured".to_string()),
        _ => {
            return Err(UiError::BadRequest(
                "p, v: a cell's ranks, 0 to 4; or list: over or under".into(),
            ));
        }
    };
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(UiError::BadRequest("page: from 1".into()));
    }
    let per = q.per.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&per) {
        return Err(UiError::BadRequest(format!("per: from 1 to {MAX_PAGE}")));
    }
    let offset = (page - 1).saturating_mul(u64::from(per));
    let (list, total) = state
        .db()
        .read(move |s| Ok(s.pressure_list(which, offset, per)?))
        .await?;
    let pages = total.div_ceil(u64::from(per)).max(1);
    let mut base = match which {
        PressureList::Cell(p, v) => format!("/ui/pressure/contacts?p={p}&v={v}"),
        PressureList::Over(_) => "/ui/pressure/contacts?list=over".into(),
        PressureList::Under(_) => "/ui/pressure/contacts?list=under".into(),
    };
    if per != PAGE {
        base.push_str(&format!("&per={per}"));
    }
    render(
        "pressure_list.html",
        minijinja::context! {
            ..chrome(&state, &session, "pressure"),
            ..minijinja::context! {
                title => title,
                total => total,
                rows => rows(&list),
                page => page,
                pages => pages,
                first => offset + 1,
                last => offset + list.len() as u64,
                prev => (page > 1).then(|| format!("{base}&page={}", page - 1)),
                next => (page < pages).then(|| format!("{base}&page={}", page + 1)),
            }
        },
    )
}
