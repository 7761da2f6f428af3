//! Operations: health, readiness, Prometheus metrics, the OpenAPI document.

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The store answers and a configuration is loaded (open to probes, so it
/// says nothing about the installation).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Store unreachable", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let version = state
        .db()
        .read(|s| Ok(s.schema_version()?))
        .await
        .map_err(|e| ApiError::Store {
            message: e.to_string(),
            transient: true,
        })?;
    // Ready even with channels not configured: their follow-ups wait.
    let config = state.config();
    let unconfigured: Vec<Value> = state
        .metrics
        .unconfigured_channels()
        .into_iter()
        .map(|(channel, reason)| {
            let plugin = config
                .channels
                .get(&channel)
                .map(|c| c.plugin.clone())
                .unwrap_or_default();
            json!({
                "channel": channel,
                "plugin": plugin,
                "reason": reason,
                "help": crate::adapters::plugins::channels::help(&channel, &plugin),
                "followups": crate::adapters::plugins::channels::followups_using(&config, &channel),
            })
        })
        .collect();
    Ok(Json(json!({
        "status": "ready",
        "schema_version": version,
        "channels_not_configured": unconfigured,
    })))
}

/// Counters, gauges and histograms in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "OpenMetrics text 1.0.0", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let depth = state.db().read(|s| Ok(s.outbox_depth()?)).await?;
    // Every state, empty ones at 0, so a series never vanishes.
    let depth: BTreeMap<String, u64> = crate::domain::outbox::State::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), depth.get(s).copied().unwrap_or(0)))
        .collect();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&depth),
    ))
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| super::openapi().to_pretty_json().unwrap_or_default());

/// This document: every route, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound {
        what: "route",
        id: String::new(),
    }
}
