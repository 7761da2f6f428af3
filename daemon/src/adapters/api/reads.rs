//! Reads: one contact with its score explanation and fatigue, erasure, and
//! the outbox.

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::core::model::Contact;
use crate::domain::fatigue::ContactState;
use crate::domain::fatigue::report::{FatigueReport, report};
use crate::domain::outbox::{Row, State as RowState};
use crate::domain::scoring::StoredScore;
use crate::domain::scoring::{ScoreCard, ScoringModel};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

/// A contact as the API shows it: the record, its score now with every
/// contribution (as `relance score ID --json`), the score stored by the last
/// pass, and its fatigue (as `relance fatigue ID --json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactView {
    #[schema(value_type = Object)]
    pub contact: Contact,
    #[schema(value_type = Object)]
    pub score: ScoreCard,
    #[schema(value_type = Option<Object>)]
    pub stored_score: Option<StoredScore>,
    #[schema(value_type = Object)]
    pub fatigue: FatigueReport,
    /// The prospect status (GAGNÉ, CHAUD, TIÈDE, FROID, ARRÊTÉ, PERDU), when
    /// and what set it, as the last scoring pass stored it.
    #[schema(value_type = Object)]
    pub prospect: crate::domain::desk::StatusView,
}

/// One contact with its score explanation and fatigue, at the server's now.
#[utoipa::path(
    get, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The contact", body = ContactView),
        (status = 404, description = "No such contact", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_contact(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ContactView>, ApiError> {
    let config = state.config();
    let now = state.clock.now();
    let view = state
        .db()
        .read(move |store| {
            let Some((contact, company, events)) = store.scoring_input(&id)? else {
                return Err(ApiError::NotFound {
                    what: "contact",
                    id,
                });
            };
            let model = ScoringModel::compile(&config.scoring)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let score = model.score(&contact, company.as_ref(), &events, now);
            let stored_score = store.stored_score(&id)?;
            let guard = config
                .guard()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let (_, weighs) = store.guard_input(&id)?.unwrap_or_default();
            let state = ContactState::replay(&guard, &contact, &weighs)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let fatigue = report(&config.fatigue, &guard, &id, &state, &weighs, now);
            let prospect = crate::ports::store::DeskStore::prospect_status(store, &id)?;
            Ok(ContactView {
                contact,
                score,
                stored_score,
                fatigue,
                prospect,
            })
        })
        .await?;
    Ok(Json(view))
}

/// Erases the contact and everything about it (events, scores, fatigue,
/// outbox, decisions, deals).
#[utoipa::path(
    delete, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 204, description = "Erased"),
        (status = 404, description = "No such contact", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_contact(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = id.clone();
    if state.db().write(move |s| s.erase_contact(&who)).await? {
        tracing::info!(contact = %id, "contact erased through the API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "contact",
            id,
        })
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only rows in this state: planned, deferred, claimed, sent, retrying,
    /// dead, blocked, dropped.
    pub status: Option<String>,
    /// At most this many rows (default 1000).
    pub limit: Option<u32>,
}

/// Outbox rows, oldest due first.
#[utoipa::path(
    get, path = "/v1/outbox", tag = "outbox",
    params(OutboxQuery),
    responses(
        (status = 200, description = "The rows", body = Vec<Object>),
        (status = 400, description = "Unknown status", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_outbox(
    State(state): State<ApiState>,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<Vec<Row>>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RowState>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("status: {e}")))?;
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let rows = state
        .db()
        .read(move |s| Ok(s.outbox_rows(status, limit)?))
        .await?;
    Ok(Json(rows))
}
