//! Broadcasts and the plan: `POST /v1/broadcasts` creates our own news to a
//! segment (as `relance broadcast create`), `GET /v1/plan?contact=` shows
//! what is due for one contact and what the guard says (as `relance plan`).

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::ingest::Framing;
use crate::core::condition::ConditionConfig;
use crate::core::limits;
use crate::core::model::Timestamp;
use crate::domain::followups::BroadcastSpec;
use crate::pipeline::plan::{PlanLine, dry_run};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A broadcast to create. The length limits are those of
/// [`crate::core::limits`] (`ID_MAX`, `TEXT_MAX`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBroadcast {
    /// Unique: creating the same id again changes nothing.
    #[schema(min_length = 1, max_length = 256)]
    pub id: String,
    #[schema(max_length = 1024)]
    pub name: String,
    /// Who receives it: a condition as in the configuration, in JSON, e.g.
    /// `{"field": "tier", "in": ["target_1"]}`.
    #[schema(value_type = Object)]
    pub segment: ConditionConfig,
    /// A channel of the configuration.
    #[schema(max_length = 256)]
    pub channel: String,
    /// A template of the configuration, on that channel.
    #[schema(max_length = 256)]
    pub template: String,
    /// Sends go out from this instant (default: now) and not at or after `end`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    pub end: Timestamp,
    pub priority: Option<u32>,
    /// Transactional (a service notice): not a solicitation, so fatigue,
    /// caps and the daily budget let it pass; the send windows still hold.
    #[serde(default)]
    pub exempt: bool,
}

/// The body of `POST /v1/broadcasts`, checked: the same statuses as the
/// batch endpoints (413, 415, 400), lengths before anything else.
fn new_broadcast(
    headers: &HeaderMap,
    raw: Result<Bytes, BytesRejection>,
    limit_kb: u32,
) -> Result<NewBroadcast, ApiError> {
    let raw = super::ingest::body(raw, limit_kb)?;
    if Framing::from_headers(headers)? != Framing::JsonArray {
        return Err(ApiError::UnsupportedMediaType(
            "application/x-ndjson (a broadcast is one JSON object)".into(),
        ));
    }
    let value: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(ApiError::bad_request("a broadcast must be a JSON object"));
    };
    for key in obj.keys() {
        limits::check_key("broadcast", key).map_err(ApiError::bad_request)?;
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let segment_len = obj.get("segment").map_or(0, limits::json_len);
    limits::check_broadcast(
        text("id"),
        text("name"),
        text("channel"),
        text("template"),
        segment_len,
    )
    .map_err(ApiError::bad_request)?;
    crate::domain::ingest::typed(value).map_err(ApiError::bad_request)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BroadcastCreated {
    pub id: String,
    /// False when a broadcast with this id existed: nothing changed.
    pub created: bool,
}

/// Creates a broadcast; the next plan pass (at once) sends it.
#[utoipa::path(
    post, path = "/v1/broadcasts", tag = "follow-ups",
    request_body = NewBroadcast,
    responses(
        (status = 201, description = "Created", body = BroadcastCreated),
        (status = 200, description = "Existed already: nothing changed", body = BroadcastCreated),
        (status = 400, description = "Invalid broadcast; `field` names the culprit", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Content type not JSON", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_broadcasts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BroadcastCreated>), ApiError> {
    let b = new_broadcast(&headers, raw, state.config().api.body_limit_kb)?;
    let config = state.config();
    let now = state.clock.now();
    let bad = |field: &str, message: String| ApiError::BadRequest {
        message,
        field: Some(field.into()),
    };
    if !config.channels.contains_key(&b.channel) {
        return Err(bad(
            "channel",
            format!("no channel `{}` in the configuration", b.channel),
        ));
    }
    if !config.templates.contains_key(&b.template) {
        return Err(bad(
            "template",
            format!("no template `{}` in the configuration", b.template),
        ));
    }
    let spec = BroadcastSpec {
        id: b.id,
        name: b.name,
        segment: b.segment,
        channel: b.channel,
        template: b.template,
        start: b.start.unwrap_or(now),
        end: b.end,
        priority: b.priority,
        exempt: b.exempt,
    };
    if let Err(e) = spec.compile() {
        let message = e.0.join("; ");
        let field = message
            .split(':')
            .next()
            .map(|f| f.trim().trim_start_matches('.').to_string())
            .filter(|f| !f.is_empty() && !f.contains(' '));
        return Err(ApiError::BadRequest { message, field });
    }
    let id = spec.id.clone();
    let created = state
        .db()
        .write(move |store| store.create_broadcast(&spec, now))
        .await?;
    if created {
        state.poke();
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(BroadcastCreated { id, created })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PlanQuery {
    /// The contact to plan.
    pub contact: String,
}

/// What is due for one contact at the server's now and what the guard says;
/// writes nothing.
#[utoipa::path(
    get, path = "/v1/plan", tag = "follow-ups",
    params(PlanQuery),
    responses(
        (status = 200, description = "Follow-ups due, in decision order", body = [Object]),
        (status = 400, description = "No contact given", body = ErrorBody),
        (status = 404, description = "No such contact", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_plan(
    State(state): State<ApiState>,
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Json<Vec<PlanLine>>, ApiError> {
    let Some(id) = query
        .ok()
        .map(|Query(q)| q.contact)
        .filter(|c| !c.trim().is_empty())
    else {
        return Err(ApiError::BadRequest {
            message: "`contact` is required: the id of the contact to plan".into(),
            field: Some("contact".into()),
        });
    };
    let config = state.config();
    let now = state.clock.now();
    let lines = state
        .db()
        .read(move |store| {
            if store.contact_key(&id)?.is_none() {
                return Err(ApiError::NotFound {
                    what: "contact",
                    id,
                });
            }
            dry_run(&config, store, now, Some(&id)).map_err(|e| ApiError::Internal(e.to_string()))
        })
        .await?;
    Ok(Json(lines))
}
