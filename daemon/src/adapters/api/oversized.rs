//! Requests that declare a body over the limit get their 413 after the
//! body has been read and dropped.
//!
//! Answering before the body is read makes the server close a connection
//! with unread bytes, which resets it: a client still sending then sees a
//! broken connection instead of the answer. Up to [`DRAIN_MAX`] bytes past
//! the limit are read (and dropped, never held); a larger body is refused
//! at once, as before.

use super::ApiState;
use super::error::ApiError;
use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Bytes past the limit read before refusing.
const DRAIN_MAX: u64 = 1024 * 1024;

pub(super) async fn refuse_oversized(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let limit_kb = state.config().api.body_limit_kb;
    let limit = u64::from(limit_kb) * 1024;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit) else {
        return next.run(req).await;
    };
    if declared <= limit.saturating_add(DRAIN_MAX) {
        let mut body = req.into_body();
        let mut read: u64 = 0;
        while read < declared {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            match frame.await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
                Some(Err(_)) | None => break,
            }
        }
    }
    ApiError::TooLarge { limit_kb }.into_response()
}
