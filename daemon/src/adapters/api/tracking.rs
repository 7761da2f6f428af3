//! The tracking endpoints: the open pixel, click redirects and the one-click
//! unsubscribe, each checking a token signed by [`crate::core::links`].

pub use crate::core::links::{
    Claims, Purpose, TokenError, decorate, event_id, sign, unsubscribe_link, verify,
};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::core::metrics::IngestOutcome;
use crate::core::model::{Event, event_types};
use crate::domain::ingest::Incoming;
use crate::ports::store::Append;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Checks a token against the secret in force; a bad one is a 404.
/// During a rotation, links signed with the previous secret keep working
/// until `previous_tracking_secret_until`.
fn claims_of(state: &ApiState, token: &str, purpose: Purpose) -> Result<Claims, ApiError> {
    let api = &state.config().api;
    let mut result = verify(token, &api.tracking_secret, purpose);
    if result == Err(TokenError::BadSignature)
        && !api.previous_tracking_secret.is_empty()
        && api
            .previous_tracking_secret_until
            .is_some_and(|until| state.clock.now() < until)
    {
        result = verify(token, &api.previous_tracking_secret, purpose);
    }
    result.map_err(|e| {
        tracing::debug!(error = %e, "tracking token refused");
        ApiError::BadToken
    })
}

/// Records what a verified link says happened. An erased contact's event
/// is rejected by the store: the link still works, nothing is kept.
async fn record(
    state: &ApiState,
    token: &str,
    claims: &Claims,
    kind: &str,
) -> Result<(), ApiError> {
    let mut props = serde_json::Map::new();
    props.insert("key".into(), claims.key.clone().into());
    if let Some(url) = &claims.url {
        props.insert("url".into(), url.clone().into());
    }
    let event = Incoming::Contact(Event {
        id: Some(event_id(token)),
        contact: claims.contact.clone(),
        kind: kind.to_string(),
        at: state.clock.now(),
        channel: Some(claims.channel.clone()),
        props,
    });
    let outcome = state.db().append(vec![event]).await?;
    match outcome.first() {
        Some(Append::Inserted) => {
            state.metrics.record_ingest(IngestOutcome::Accepted, 1);
            state.poke();
        }
        Some(Append::Duplicate) => state.metrics.record_ingest(IngestOutcome::Duplicate, 1),
        Some(Append::Rejected(reason)) => {
            tracing::debug!(%reason, "tracking event not recorded");
        }
        None => {}
    }
    Ok(())
}

/// The open pixel: records `email_open` once per message.
#[utoipa::path(get, path = "/t/o/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed open token")),
    responses(
        (status = 200, description = "A 1×1 GIF", content_type = "image/gif"),
        (status = 404, description = "Forged or altered token", body = ErrorBody),
    ))]
pub async fn open(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let claims = claims_of(&state, &token, Purpose::Open)?;
    record(&state, &token, &claims, event_types::EMAIL_OPEN).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response())
}

/// A click: records `email_click` with the URL and redirects to the URL
/// signed into the token, never to another.
#[utoipa::path(get, path = "/t/c/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed click token")),
    responses(
        (status = 302, description = "Redirect to the link's recorded URL"),
        (status = 404, description = "Forged or altered token", body = ErrorBody),
    ))]
pub async fn click(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let claims = claims_of(&state, &token, Purpose::Click)?;
    // Never a 302 without its Location: a URL that cannot be a header
    // value is refused before anything is recorded.
    let location = claims
        .url
        .as_deref()
        .and_then(|u| header::HeaderValue::from_str(u).ok())
        .ok_or(ApiError::BadToken)?;
    record(&state, &token, &claims, event_types::EMAIL_CLICK).await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            ),
        ],
    )
        .into_response())
}

/// RFC 8058 one-click unsubscribe: records `unsubscribe` on the message's
/// channel, which the fatigue guard reads as do-not-contact from the very
/// next decision on.
#[utoipa::path(post, path = "/u/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed unsubscribe token")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`List-Unsubscribe=One-Click` (ignored)"),
    responses(
        (status = 200, description = "Unsubscribed", body = Object),
        (status = 404, description = "Forged or altered token", body = ErrorBody),
    ))]
pub async fn unsubscribe(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = claims_of(&state, &token, Purpose::Unsubscribe)?;
    record(&state, &token, &claims, event_types::UNSUBSCRIBE).await?;
    tracing::info!(contact = %claims.contact, channel = %claims.channel, "unsubscribed");
    Ok(Json(
        serde_json::json!({ "unsubscribed": true, "channel": claims.channel }),
    ))
}

/// For people who open the link in a browser: a page whose button posts
/// the one-click form (a GET never unsubscribes: mail scanners follow links).
#[utoipa::path(get, path = "/u/{token}", tag = "tracking",
    params(("token" = String, Path, description = "Signed unsubscribe token")),
    responses(
        (status = 200, description = "A confirmation page", content_type = "text/html"),
        (status = 404, description = "Forged or altered token", body = ErrorBody),
    ))]
pub async fn unsubscribe_page(
    State(state): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Html<String>, ApiError> {
    claims_of(&state, &token, Purpose::Unsubscribe)?;
    Ok(Html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Unsubscribe</title>\
         <form method=\"post\" action=\"/u/{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>"
    )))
}
