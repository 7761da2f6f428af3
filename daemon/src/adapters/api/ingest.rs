//! Batch ingest: events, contacts, companies and deals, as a JSON array or
//! NDJSON (one JSON object per line), with one result per item. An item
//! rejected anywhere (parsing, validation, the store) writes nothing and
//! does not stop the others; events are idempotent on their id.

use super::ApiState;
use super::error::{ApiError, ErrorDetail, field_of};
use crate::core::metrics::IngestOutcome;
use crate::domain::ingest::{Incoming, Kind, Patch, parse_event, parse_patch};
use crate::ports::store::{Append, Upsert};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// How the body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    JsonArray,
    Ndjson,
}

impl Framing {
    /// From the Content-Type header (JSON when absent).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Ok(Framing::JsonArray);
        };
        let text = value.to_str().unwrap_or_default();
        let mime = text
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Ok(Framing::JsonArray),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Ok(Framing::Ndjson),
            _ => Err(ApiError::UnsupportedMediaType(text.to_string())),
        }
    }
}

/// Splits a body into items. A malformed JSON array fails the request; a
/// malformed NDJSON line fails only its item.
pub fn split_items(
    body: &[u8],
    framing: Framing,
    max: usize,
) -> Result<Vec<Result<Value, String>>, ApiError> {
    let items: Vec<Result<Value, String>> = match framing {
        Framing::JsonArray => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items.into_iter().map(Ok).collect(),
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "the body must be a JSON array of objects (or NDJSON with Content-Type: application/x-ndjson)",
                ));
            }
            Err(e) => return Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
        },
        Framing::Ndjson => body
            .split(|b| *b == b'\n')
            .filter(|line| !line.trim_ascii().is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}")))
            .collect(),
    };
    if items.len() > max {
        return Err(ApiError::bad_request(format!(
            "{} items in one request; at most {max} are accepted",
            items.len()
        )));
    }
    Ok(items)
}

/// The body, or the JSON error a client can act on.
pub fn body(body: Result<Bytes, BytesRejection>, limit_kb: u32) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit_kb }
        } else {
            ApiError::bad_request(format!("unreadable body: {e}"))
        }
    })
}

/// What happened to one item of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ItemResult {
    /// Position in the batch, from 0.
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Events: `accepted`, `duplicate`, `rejected`. Records: `inserted`,
    /// `updated`, `unchanged`, `rejected`.
    pub outcome: String,
    /// Why the item was rejected, naming the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A contact accepted whose normalised email or phone another id has:
    /// the key and every contact sharing it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub duplicates: Vec<crate::ports::store::desk::DuplicateGroup>,
}

impl ItemResult {
    fn new(index: usize, id: Option<String>, outcome: &str) -> Self {
        Self {
            index,
            id,
            outcome: outcome.into(),
            reason: None,
            field: None,
            duplicates: Vec::new(),
        }
    }

    fn rejected(index: usize, id: Option<String>, reason: String) -> Self {
        Self {
            index,
            id,
            outcome: "rejected".into(),
            field: field_of(&reason),
            reason: Some(reason),
            duplicates: Vec::new(),
        }
    }
}

/// The answer to a batch: counts per outcome and one result per item.
/// Status 200 when nothing was rejected, 422 otherwise (with `error`
/// describing the first rejection; the other items were still written).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BatchReport {
    pub counts: BTreeMap<String, usize>,
    pub results: Vec<ItemResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl BatchReport {
    fn new(results: Vec<ItemResult>) -> Self {
        let mut counts = BTreeMap::new();
        for r in &results {
            *counts.entry(r.outcome.clone()).or_insert(0) += 1;
        }
        let rejected = counts.get("rejected").copied().unwrap_or(0);
        let error = results
            .iter()
            .find(|r| r.outcome == "rejected")
            .map(|r| ErrorDetail {
                code: "rejected_items".into(),
                message: format!(
                    "{rejected} of {} items rejected; item {}: {}",
                    results.len(),
                    r.index,
                    r.reason.as_deref().unwrap_or_default()
                ),
                field: r.field.clone(),
            });
        Self {
            counts,
            results,
            error,
        }
    }
}

impl IntoResponse for BatchReport {
    fn into_response(self) -> Response {
        let status = if self.error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        (status, Json(self)).into_response()
    }
}

fn event_id(i: &Incoming) -> Option<String> {
    match i {
        Incoming::Contact(e) => e.id.clone(),
        Incoming::Company { .. } => None,
    }
}

/// Ingests events: idempotent on the event id (or on the content without one).
#[utoipa::path(
    post, path = "/v1/events", tag = "ingest",
    request_body(content = Vec<Object>, description = "Events `{id?, contact, type, at, channel?, props?}` or company signals `{company, type: \"business_signal\", at, props: {kind}}`; a JSON array, or NDJSON with Content-Type application/x-ndjson"),
    responses(
        (status = 200, description = "Every item accepted or duplicate", body = BatchReport),
        (status = 422, description = "Some items rejected (the others were written)", body = BatchReport),
        (status = 400, description = "Body unusable as a whole (invalid JSON, not an array, too many items)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Content type neither JSON nor NDJSON", body = super::error::ErrorBody),
        (status = 503, description = "Store busy: retry", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<BatchReport, ApiError> {
    let config = state.config();
    let raw = body(raw, config.api.body_limit_kb)?;
    let framing = Framing::from_headers(&headers)?;
    let items = split_items(&raw, framing, config.api.max_batch as usize)?;
    let range = config.ingest.range(state.clock.now());
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(items.len());
    let mut valid = Vec::with_capacity(items.len());
    let mut slots = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let checked = item
            .and_then(parse_event)
            .and_then(|i| range.check_incoming(&i).map(|()| i));
        match checked {
            Ok(incoming) => {
                slots.push(index);
                valid.push(incoming);
                results.push(None);
            }
            Err(reason) => results.push(Some(ItemResult::rejected(index, None, reason))),
        }
    }
    let ids: Vec<Option<String>> = valid.iter().map(event_id).collect();
    let written = if valid.is_empty() {
        Vec::new()
    } else {
        state.db().append(valid).await?
    };
    let mut inserted = false;
    for ((index, outcome), id) in slots.into_iter().zip(written).zip(ids) {
        results[index] = Some(match outcome {
            Append::Inserted => {
                inserted = true;
                ItemResult::new(index, id, "accepted")
            }
            Append::Duplicate => ItemResult::new(index, id, "duplicate"),
            Append::Rejected(reason) => ItemResult::rejected(index, id, reason),
        });
    }
    if inserted {
        state.poke();
    }
    let report = BatchReport::new(results.into_iter().flatten().collect());
    for (outcome, key) in [
        (IngestOutcome::Accepted, "accepted"),
        (IngestOutcome::Duplicate, "duplicate"),
        (IngestOutcome::Rejected, "rejected"),
    ] {
        let n = report.counts.get(key).copied().unwrap_or(0) as u64;
        if n > 0 {
            state.metrics.record_ingest(outcome, n);
        }
    }
    Ok(report)
}

async fn upsert(
    state: ApiState,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
    kind: Kind,
) -> Result<BatchReport, ApiError> {
    let config = state.config();
    let raw = body(raw, config.api.body_limit_kb)?;
    let framing = Framing::from_headers(&headers)?;
    let items = split_items(&raw, framing, config.api.max_batch as usize)?;
    let range = config.ingest.range(state.clock.now());
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(items.len());
    let mut valid: Vec<Patch> = Vec::with_capacity(items.len());
    let mut slots = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let checked = item
            .and_then(|v| parse_patch(v, kind))
            .and_then(|p| range.check_signals(&p.signals).map(|()| p));
        match checked {
            Ok(patch) => {
                slots.push(index);
                valid.push(patch);
                results.push(None);
            }
            Err(reason) => results.push(Some(ItemResult::rejected(index, None, reason))),
        }
    }
    let ids: Vec<String> = valid.iter().map(|p| p.id.clone()).collect();
    let (written, mut flagged) = if valid.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        state
            .db()
            .write(move |store| match kind {
                Kind::Contact => store.upsert_contacts_checked(&valid),
                Kind::Company => Ok((store.upsert_companies(&valid)?, Vec::new())),
                Kind::Deal => Ok((store.upsert_deals(&valid)?, Vec::new())),
            })
            .await?
    };
    let mut changed = false;
    for ((index, outcome), id) in slots.into_iter().zip(written).zip(ids) {
        let id = Some(id);
        results[index] = Some(match outcome {
            Upsert::Inserted => {
                changed = true;
                ItemResult::new(index, id, "inserted")
            }
            Upsert::Updated => {
                changed = true;
                ItemResult::new(index, id, "updated")
            }
            Upsert::Unchanged => ItemResult::new(index, id, "unchanged"),
            Upsert::Rejected(reason) => ItemResult::rejected(index, id, reason),
        });
    }
    for r in results.iter_mut().flatten() {
        if r.outcome == "rejected" {
            continue;
        }
        let Some(id) = r.id.as_deref() else { continue };
        r.duplicates = flagged
            .iter()
            .filter(|(of, _)| of == id)
            .map(|(_, g)| g.clone())
            .collect();
    }
    flagged.clear();
    if changed {
        state.poke();
    }
    Ok(BatchReport::new(results.into_iter().flatten().collect()))
}

/// Creates or updates contacts: a key absent from an item keeps its stored value.
#[utoipa::path(
    post, path = "/v1/contacts", tag = "ingest",
    request_body(content = Vec<Object>, description = "Contacts `{id, email?, phone?, first_name?, last_name?, company?, owner?, status?, tier?, timezone?, consent?: {channel: bool}, do_not_contact?: [channel], …attributes}`; JSON array or NDJSON"),
    responses(
        (status = 200, description = "Every item written or unchanged", body = BatchReport),
        (status = 422, description = "Some items rejected", body = BatchReport),
        (status = 400, description = "Body unusable as a whole (invalid JSON, not an array, too many items)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Content type neither JSON nor NDJSON", body = super::error::ErrorBody),
        (status = 503, description = "Store busy: retry", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_contacts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<BatchReport, ApiError> {
    upsert(state, headers, raw, Kind::Contact).await
}

/// Creates or updates companies (attributes and business signals).
#[utoipa::path(
    post, path = "/v1/companies", tag = "ingest",
    request_body(content = Vec<Object>, description = "Companies `{id, name?, signals?: [{kind, at}], …attributes}`; JSON array or NDJSON"),
    responses(
        (status = 200, description = "Every item written or unchanged", body = BatchReport),
        (status = 422, description = "Some items rejected", body = BatchReport),
        (status = 400, description = "Body unusable as a whole (invalid JSON, not an array, too many items)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Content type neither JSON nor NDJSON", body = super::error::ErrorBody),
        (status = 503, description = "Store busy: retry", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_companies(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<BatchReport, ApiError> {
    upsert(state, headers, raw, Kind::Company).await
}

/// Creates or updates deals; `contact` must name a known contact.
#[utoipa::path(
    post, path = "/v1/deals", tag = "ingest",
    request_body(content = Vec<Object>, description = "Deals `{id, name?, contact?, company?, amount?, stage?, …attributes}`; JSON array or NDJSON"),
    responses(
        (status = 200, description = "Every item written or unchanged", body = BatchReport),
        (status = 422, description = "Some items rejected", body = BatchReport),
        (status = 400, description = "Body unusable as a whole (invalid JSON, not an array, too many items)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Content type neither JSON nor NDJSON", body = super::error::ErrorBody),
        (status = 503, description = "Store busy: retry", body = super::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_deals(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<BatchReport, ApiError> {
    upsert(state, headers, raw, Kind::Deal).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No bytes make the parser panic; every refusal says what is wrong.
        #[test]
        fn arbitrary_bytes_never_panic_and_refusals_explain(
            body in prop::collection::vec(any::<u8>(), 0..400),
            ndjson in any::<bool>(),
        ) {
            let framing = if ndjson { Framing::Ndjson } else { Framing::JsonArray };
            match split_items(&body, framing, 1_000) {
                Err(e) => {
                    prop_assert!(e.status().is_client_error());
                    prop_assert!(!e.to_string().is_empty());
                }
                Ok(items) => {
                    for item in items {
                        if let Err(reason) = item.and_then(parse_event) {
                            prop_assert!(!reason.is_empty());
                        }
                    }
                }
            }
        }

        /// Arbitrary JSON values as events: parsed or refused with a reason.
        #[test]
        fn arbitrary_json_events_never_panic(text in "[\\[\\]{}\":,a-z0-9 .TZ-]{0,120}") {
            if let Ok(value) = serde_json::from_str::<Value>(&text)
                && let Err(reason) = parse_event(value)
            {
                prop_assert!(!reason.is_empty());
            }
        }
    }

    #[test]
    fn content_types_choose_the_framing() {
        let mut h = HeaderMap::new();
        assert_eq!(Framing::from_headers(&h).ok(), Some(Framing::JsonArray));
        h.insert(
            CONTENT_TYPE,
            "application/x-ndjson; charset=utf-8".parse().expect("hv"),
        );
        assert_eq!(Framing::from_headers(&h).ok(), Some(Framing::Ndjson));
        h.insert(CONTENT_TYPE, "text/plain".parse().expect("hv"));
        assert!(Framing::from_headers(&h).is_err());
    }
}
