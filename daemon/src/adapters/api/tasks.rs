//! The task channel's call desk over HTTP: `GET /v1/tasks` lists delivered
//! call tasks, `POST /v1/tasks/{id}/outcome` records what the call gave,
//! once per task (see [`crate::pipeline::tasks`]).

use super::ApiState;
use super::error::{ApiError, ErrorBody, ErrorDetail};
use crate::pipeline::tasks::{self, CallOutcome, Task, TaskError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TasksQuery {
    /// `open` (default: no outcome yet) or `all`.
    pub status: Option<String>,
    /// At most this many (default 1000).
    pub limit: Option<u32>,
}

fn task_error(e: TaskError) -> Response {
    let e = match e {
        TaskError::Store(s) => return ApiError::from(s).into_response(),
        other => other,
    };
    let (status, code) = match &e {
        TaskError::NotFound(_) | TaskError::NotATask { .. } => (StatusCode::NOT_FOUND, "not_found"),
        TaskError::BadCode { .. } | TaskError::Rejected(_) => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        TaskError::AlreadyRecorded { .. } | TaskError::NotDelivered { .. } => {
            (StatusCode::CONFLICT, "conflict")
        }
        TaskError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
    };
    let field = matches!(e, TaskError::BadCode { .. }).then(|| "code".to_string());
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message: e.to_string(),
            field,
        },
    };
    (status, Json(body)).into_response()
}

/// Delivered call tasks, oldest due first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TasksQuery),
    responses(
        (status = 200, description = "Call tasks with who to call, why, when, and the outcome once recorded", body = Vec<Object>),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get_tasks(
    State(state): State<ApiState>,
    query: Result<Query<TasksQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Task>>, Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()).into_response())?;
    let open = match q.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApiError::BadRequest {
                message: format!("status: `{other}` is not `open` or `all`"),
                field: Some("status".into()),
            }
            .into_response());
        }
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let config = state.config();
    let now = state.clock.now();
    let listed = state
        .db()
        .read(move |s| Ok(tasks::list(s, &config, open, limit, now)))
        .await
        .map_err(IntoResponse::into_response)?;
    listed.map(Json).map_err(task_error)
}

/// Records a call's outcome: a `call` event with `props.outcome` = `code`,
/// exactly once per task.
#[utoipa::path(post, path = "/v1/tasks/{id}/outcome", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    request_body(content = Object, description = "`{\"code\": \"RDV\", \"note\"?, \"callback_at\"?}`; codes RAPP, NRP, OCC, REFUS, REFUS COMM, RDV, PISTE, PROJET, MAIL, HORS CIBLE, ERR"),
    responses(
        (status = 200, description = "Recorded: the task with its outcome", body = Object),
        (status = 400, description = "Unknown code or invalid body", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task already has an outcome, or is not delivered yet: nothing changed", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn post_outcome(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<CallOutcome>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Task>, Response> {
    let Json(outcome) = body.map_err(|e| ApiError::bad_request(e.body_text()).into_response())?;
    let config = state.config();
    let now = state.clock.now();
    let recorded = state
        .db()
        .write(move |s| Ok(tasks::record(s, &config, &id, &outcome, now)))
        .await
        .map_err(IntoResponse::into_response)?;
    let task = recorded.map_err(task_error)?;
    // The call moves the call status: plan again now.
    state.poke();
    Ok(Json(task))
}
