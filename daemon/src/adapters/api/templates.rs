//! `GET /v1/templates/{name}/preview?contact=ID`: what the contact would
//! receive now from a template, as `relance template preview`. Writes
//! nothing.

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::pipeline::preview::{Preview, PreviewError, preview};
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PreviewQuery {
    /// The contact to render the template for.
    pub contact: Option<String>,
}

/// The subject, text and html a contact would receive now, with the
/// tracking links; the send waiting in the outbox when there is one.
#[utoipa::path(
    get, path = "/v1/templates/{name}/preview", tag = "follow-ups",
    params(("name" = String, Path, description = "Template name"), PreviewQuery),
    responses(
        (status = 200, description = "The rendered message", body = Object),
        (status = 400, description = "No contact given, or the template fails for this contact", body = ErrorBody),
        (status = 404, description = "No such template or contact", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_preview(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    let Some(id) = q.contact.filter(|c| !c.trim().is_empty()) else {
        return Err(ApiError::BadRequest {
            message: "`contact` is required: the id of the contact to render for".into(),
            field: Some("contact".into()),
        });
    };
    let config = state.config();
    let now = state.clock.now();
    let p = state
        .db()
        .read(move |store| {
            preview(&config, store, &name, &id, now).map_err(|e| match e {
                PreviewError::UnknownTemplate(id) => ApiError::NotFound {
                    what: "template",
                    id,
                },
                PreviewError::UnknownContact(id) => ApiError::NotFound {
                    what: "contact",
                    id,
                },
                e @ PreviewError::Render { .. } => ApiError::BadRequest {
                    message: e.to_string(),
                    field: Some("template".into()),
                },
                PreviewError::Store(e) => e.into(),
            })
        })
        .await?;
    Ok(Json(p))
}
