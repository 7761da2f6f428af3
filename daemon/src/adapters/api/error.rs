//! Every error the API returns is JSON: `{"error": {"code", "message",
//! "field"?}}`, so that clients handle them all the same way.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    #[error("no {what} with id `{id}`")]
    NotFound { what: &'static str, id: String },
    #[error("invalid or altered link")]
    BadToken,
    #[error("request body larger than {limit_kb} KB")]
    TooLarge { limit_kb: u32 },
    #[error("unsupported content type `{0}`: use application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    /// The store is busy or failing; a transient problem may pass on retry.
    #[error("store error: {message}")]
    Store { message: String, transient: bool },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::ports::store::StoreError> for ApiError {
    fn from(e: crate::ports::store::StoreError) -> Self {
        ApiError::Store {
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest {
            field: field_of(&message),
            message,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::BadToken => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Store {
                transient: true, ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store { .. } | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::NotFound { .. } => "not_found",
            ApiError::BadToken => "bad_token",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Store {
                transient: true, ..
            } => "store_busy",
            ApiError::Store { .. } => "store_error",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
                field: match self {
                    ApiError::BadRequest { field, .. } => field.clone(),
                    _ => None,
                },
            },
        }
    }
}

/// The field a validation message names: ingest messages start with it
/// (`at: …`, `props.kind: …`).
pub fn field_of(message: &str) -> Option<String> {
    let (head, _) = message.split_once(": ")?;
    let ok = !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    ok.then(|| head.to_string())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `unauthorized`, `bad_request`, `not_found`,
    /// `method_not_allowed`, `bad_token`, `payload_too_large`,
    /// `unsupported_media_type`,
    /// `rejected_items`, `store_busy`, `store_error`, `internal`.
    pub code: String,
    pub message: String,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "API request failed");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

/// Turns the replies the framework makes by itself (a 405 with an empty
/// body, the plain-text refusal of a query string or a path) into the same
/// JSON as every other error, keeping their status and headers (`Allow`).
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let detail = [
        "Failed to deserialize query string: ",
        "Invalid URL: ",
        "Failed to deserialize the JSON body into the target type: ",
    ]
    .iter()
    .find_map(|p| message.strip_prefix(p))
    .unwrap_or(&message);
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            field: field_of(detail),
            message: message.clone(),
        },
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    (parts, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_taken_from_messages() {
        assert_eq!(
            field_of("at: `x` is not an RFC 3339 instant").as_deref(),
            Some("at")
        );
        assert_eq!(
            field_of("props.kind: needed").as_deref(),
            Some("props.kind")
        );
        assert_eq!(field_of("an event must be a JSON object"), None);
        assert_eq!(field_of("line 3: invalid JSON: x"), None);
    }
}
