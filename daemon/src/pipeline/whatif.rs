//! A what-if over the whole store: every contact scored under the running
//! rules and under proposed ones. The command line (`relance score
//! --what-if`) and the dashboard's Scores page both read it from here.

use crate::core::model::{Company, Timestamp};
use crate::domain::scoring::{ScoringModel, WhatIf};
use crate::ports::store::{Records, StoreError};
use std::collections::HashMap;

/// Every contact of the store scored under both models at `now` (one
/// sequential scan of the histories; each company read once).
pub fn what_if_over<S: Records + ?Sized>(
    store: &S,
    before: &ScoringModel,
    after: &ScoringModel,
    now: Timestamp,
) -> Result<WhatIf, StoreError> {
    let mut result = WhatIf::new(before, after);
    let mut companies: HashMap<String, Option<Company>> = HashMap::new();
    let mut failure = None;
    store.scan_histories(&mut |contact, events| {
        let company = match &contact.company {
            Some(id) => companies
                .entry(id.clone())
                .or_insert_with(|| {
                    store.company(id).unwrap_or_else(|e| {
                        failure = Some(e);
                        None
                    })
                })
                .as_ref(),
            None => None,
        };
        result.add(before, after, &contact, company, &events, now);
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(result),
    }
}
