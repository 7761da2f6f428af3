//! Marketing pressure against customer value (seed 002), computed over the
//! store: every customer's replayed fatigue, recent solicitations and value
//! tier. The command line (`relance fatigue pressure`) and the dashboard
//! both read it from here.

use crate::core::model::{Event, Timestamp};
use crate::domain::fatigue::{ContactState, PressureSample, ValueTier};
use crate::domain::scoring::score_customers;
use crate::pipeline::config::Config;
use crate::ports::store::ui::PressureRow;
use crate::ports::store::{OutboxStore, Records, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PressureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Fatigue(String),
}

/// Every customer's fatigue, solicitations in the window and value tier at
/// `now`: contacts without purchases have no value and are left out.
pub fn samples<S: Records + OutboxStore + ?Sized>(
    store: &S,
    config: &Config,
    now: Timestamp,
) -> Result<Vec<PressureSample>, PressureError> {
    let guard = config
        .guard()
        .map_err(|e| PressureError::Fatigue(e.to_string()))?;
    let window_start = now - config.fatigue.pressure.solicitation_window.0;
    let purchase = &config.scoring.customers.purchase_event;
    let mut customers: Vec<(
        String,
        Vec<Event>,
        crate::domain::fatigue::FatiguePoints,
        u32,
    )> = Vec::new();
    let mut failure: Option<PressureError> = None;
    store.for_each_contact(&mut |contact| {
        let step = (|| -> Result<(), PressureError> {
            let Some((contact, weighs)) = store.guard_input(&contact.id)? else {
                return Ok(());
            };
            let bought: Vec<Event> = weighs
                .iter()
                .filter(|e| &e.kind == purchase)
                .cloned()
                .collect();
            if bought.is_empty() {
                return Ok(());
            }
            let state =
                ContactState::replay(&guard, &contact, weighs.iter().filter(|e| e.at <= now))
                    .map_err(|e| PressureError::Fatigue(e.to_string()))?;
            let solicitations = weighs
                .iter()
                .filter(|e| {
                    e.at > window_start && e.at <= now && config.fatigue.costs.contains_key(&e.kind)
                })
                .count() as u32;
            customers.push((
                contact.id,
                bought,
                state.fatigue_at(&guard, now),
                solicitations,
            ));
            Ok(())
        })();
        if let Err(e) = step {
            failure.get_or_insert(e);
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let scores = score_customers(
        &config.scoring.customers,
        customers
            .iter()
            .map(|(id, bought, _, _)| (id.as_str(), bought.as_slice())),
        now,
    );
    let value: std::collections::HashMap<&str, ValueTier> = scores
        .iter()
        .map(|s| (s.customer.as_str(), s.value))
        .collect();
    Ok(customers
        .iter()
        .map(|(id, _, fatigue, solicitations)| PressureSample {
            contact: id.clone(),
            fatigue: *fatigue,
            solicitations: *solicitations,
            value: value.get(id.as_str()).copied().unwrap_or(ValueTier::Minor),
        })
        .collect())
}

/// What a pressure pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PressureRefresh {
    pub customers: u64,
    pub over_pressured: u64,
    pub under_pressured: u64,
}

impl std::fmt::Display for PressureRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pressure grid: {} customers, {} over-pressured, {} under-pressured",
            self.customers, self.over_pressured, self.under_pressured
        )
    }
}

/// The pressure pass: every customer placed on the 5×5 grid at `now`, the
/// result stored whole for the dashboard (which then reads a page of it,
/// never the customers' histories). Value tiers are ranks among all
/// customers, so the grid is recomputed whole, on its own schedule.
pub fn refresh(
    store: &dyn crate::ports::store::Store,
    config: &Config,
    now: Timestamp,
) -> Result<PressureRefresh, PressureError> {
    use crate::domain::fatigue::matrix::pressure_category;
    let pressure = &config.fatigue.pressure;
    let tolerance = i8::try_from(pressure.tolerance).unwrap_or(i8::MAX);
    let mut report = PressureRefresh::default();
    let rows: Vec<PressureRow> = samples(store, config, now)?
        .into_iter()
        .map(|s| {
            let p = pressure_category(pressure, s.fatigue, s.solicitations).rank();
            let v = s.value.rank();
            // Ranks are 0–4: the difference fits.
            let gap = p as i8 - v as i8;
            report.customers += 1;
            if gap > tolerance {
                report.over_pressured += 1;
            } else if gap < -tolerance {
                report.under_pressured += 1;
            }
            PressureRow {
                contact: s.contact,
                pressure: p as u8,
                value: v as u8,
                gap,
                fatigue_milli: s
                    .fatigue
                    .units()
                    .div_euclid(crate::domain::fatigue::points::UNITS_PER_MILLI),
                solicitations: s.solicitations,
            }
        })
        .collect();
    store.replace_pressure(&rows, now)?;
    Ok(report)
}
