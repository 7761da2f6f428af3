//! Marketing pressure against customer value (seed 002): the 5×5 grid,
//! each cell linked to its contacts, and the over- and under-pressured.
//!
//! Value comes from purchases and pressure from each customer's replayed
//! fatigue: no aggregate holds them, so the grid is computed by one scan
//! and kept for [`FRESH_FOR`]; the page says when it was computed.

use super::session::Session;
use super::svg;
use super::{UiError, chrome, render};
use crate::adapters::api::ApiState;
use crate::core::model::Timestamp;
use crate::domain::fatigue::matrix::{PressureMatrix, pressure_category, pressure_matrix};
use crate::domain::fatigue::{PressureCategory, ValueTier};
use crate::pipeline::pressure::samples;
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a computed grid is shown before it is computed again.
const FRESH_FOR: Duration = Duration::from_secs(600);
/// Contacts kept per cell and per list.
const LISTED: usize = 200;

/// The grid with the contacts of each cell (the first [`LISTED`]).
#[derive(Debug)]
struct Grid {
    matrix: PressureMatrix,
    /// `cells[pressure rank][value rank]`.
    cells: Vec<Vec<Vec<String>>>,
    computed: Timestamp,
    at: Instant,
}

static CACHE: Mutex<Option<Arc<Grid>>> = Mutex::new(None);

async fn grid(state: &ApiState) -> Result<Arc<Grid>, UiError> {
    if let Some(g) = CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        && g.at.elapsed() < FRESH_FOR
    {
        return Ok(g.clone());
    }
    let config = state.config();
    let now = state.clock.now();
    let grid = state
        .db()
        .read(move |s| {
            let samples = samples(s, &config, now)
                .map_err(|e| crate::adapters::api::ApiError::Internal(e.to_string()))?;
            let mut cells = vec![vec![Vec::new(); 5]; 5];
            for x in &samples {
                let p = pressure_category(&config.fatigue.pressure, x.fatigue, x.solicitations);
                let cell: &mut Vec<String> = &mut cells[p.rank()][x.value.rank()];
                if cell.len() < LISTED {
                    cell.push(x.contact.clone());
                }
            }
            Ok(Grid {
                matrix: pressure_matrix(&config.fatigue.pressure, samples),
                cells,
                computed: now,
                at: Instant::now(),
            })
        })
        .await?;
    let grid = Arc::new(grid);
    *CACHE.lock().unwrap_or_else(PoisonError::into_inner) = Some(grid.clone());
    Ok(grid)
}

fn name<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_default()
}

#[derive(Debug, Default, Deserialize)]
pub struct CellQuery {
    /// Pressure rank, 0 (very weak) to 4 (very strong).
    pub p: Option<usize>,
    /// Value rank, 0 (negative margin) to 4 (strategic).
    pub v: Option<usize>,
}

pub async fn page(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Query(q): Query<CellQuery>,
) -> Result<Html<String>, UiError> {
    if q.p.is_some_and(|p| p > 4) || q.v.is_some_and(|v| v > 4) {
        return Err(UiError::BadRequest("p, v: ranks go from 0 to 4".into()));
    }
    let g = grid(&state).await?;
    // Strongest pressure on top.
    let rows: Vec<String> = PressureCategory::ALL.iter().rev().map(name).collect();
    let cols: Vec<String> = ValueTier::ALL.iter().map(name).collect();
    let counts: Vec<Vec<u64>> = PressureCategory::ALL
        .iter()
        .rev()
        .map(|p| {
            ValueTier::ALL
                .iter()
                .map(|v| g.matrix.count(*p, *v))
                .collect()
        })
        .collect();
    let heatmap = svg::heatmap("Pressure × value", &rows, &cols, &counts, &|i, j| {
        format!("/ui/pressure?p={}&v={j}#cell", 4 - i)
    });
    let cell = match (q.p, q.v) {
        (Some(p), Some(v)) => Some(minijinja::context! {
            pressure => name(PressureCategory::ALL[p]),
            value => name(ValueTier::ALL[v]),
            count => g.matrix.count(PressureCategory::ALL[p], ValueTier::ALL[v]),
            contacts => g.cells[p][v].clone(),
        }),
        _ => None,
    };
    let misfits = |list: &[crate::domain::fatigue::matrix::Misfit]| {
        list.iter()
            .take(LISTED)
            .map(|m| minijinja::context! { contact => m.contact.clone(), pressure => name(m.pressure), value => name(m.value), gap => m.gap })
            .collect::<Vec<_>>()
    };
    render(
        "pressure.html",
        minijinja::context! {
            ..chrome(&state, &session, "pressure"),
            ..minijinja::context! {
                heatmap_svg => heatmap,
                computed => g.computed.format("%Y-%m-%d %H:%M UTC").to_string(),
                customers => counts.iter().flatten().sum::<u64>(),
                cell => cell,
                over_count => g.matrix.over_pressured.len(),
                under_count => g.matrix.under_pressured.len(),
                over => misfits(&g.matrix.over_pressured),
                under => misfits(&g.matrix.under_pressured),
            }
        },
    )
}
