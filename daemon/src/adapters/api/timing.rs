//! Times every API request for `relance_api_request_duration_seconds`, by
//! method, matched route (`/v1/contacts/{id}`, never the raw path, so ids
//! do not multiply the series) and status.

use super::ApiState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

pub async fn record(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.record_api_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
