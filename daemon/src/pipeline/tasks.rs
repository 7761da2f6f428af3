//! The built-in task channel's call desk: call tasks kept in relance (who
//! to call, why, due when) and their outcomes.
//!
//! A task is the outbox row a channel with `plugin = "task"` delivered, so
//! it is stored once, with the outbox's guarantees, and its id is the row's
//! idempotency key. Delivering it records the channel's `event` (say
//! `call_task`, which costs no fatigue); the call itself is recorded by
//! its outcome: a `call` event (the `[followups.calls] event`) with
//! `props.outcome` = the result code, whose event id is derived from the
//! task, so the store keeps exactly one outcome per task, even when two
//! arrive at once. That event moves the call status and charges fatigue
//! like an imported call.

use crate::core::model::{Event, Timestamp};
use crate::domain::ingest::Incoming;
use crate::domain::outbox::{Row, State};
use crate::pipeline::config::Config;
use crate::ports::store::{Append, Store, StoreError};
use serde::{Deserialize, Serialize};

/// The call result codes of the trade (seed 003).
pub const CALL_CODES: [&str; 11] = [
    "RAPP",
    "NRP",
    "OCC",
    "REFUS",
    "REFUS COMM",
    "RDV",
    "PISTE",
    "PROJET",
    "MAIL",
    "HORS CIBLE",
    "ERR",
];

/// A call task, as the call desk sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Task {
    /// The task's id (the send's idempotency key).
    pub id: String,
    pub contact: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub owner: Option<String>,
    pub channel: String,
    /// The follow-up that asked for the call.
    pub followup: String,
    /// The task's text (its template, rendered).
    pub text: Option<String>,
    /// When the call should be made by.
    pub due: Timestamp,
    pub outcome: Option<CallOutcome>,
}

/// What a call gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallOutcome {
    /// A call result code: RAPP, NRP, OCC, REFUS, REFUS COMM, RDV, PISTE,
    /// PROJET, MAIL, HORS CIBLE, ERR (or one listed under `[followups.calls]`).
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When to call back (with RAPP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_at: Option<Timestamp>,
    /// When the outcome was recorded (set by relance).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no task `{0}`")]
    NotFound(String),
    #[error("`{id}` is a send on channel `{channel}`, whose plugin is not `task`")]
    NotATask { id: String, channel: String },
    #[error("task `{id}` is not delivered yet (its send is {state})")]
    NotDelivered { id: String, state: State },
    #[error("task `{id}` already has its outcome `{code}`; a call is recorded once")]
    AlreadyRecorded { id: String, code: String },
    #[error("unknown call result code `{code}`; expected one of {expected}")]
    BadCode { code: String, expected: String },
    #[error("the outcome was refused: {0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The codes accepted: the trade's, and any the configuration lists.
pub fn codes(config: &Config) -> Vec<String> {
    let calls = &config.followups.calls;
    let mut all: Vec<String> = CALL_CODES.iter().map(|c| (*c).to_string()).collect();
    for c in calls
        .won
        .iter()
        .chain(&calls.lost)
        .chain(&calls.unsuccessful)
    {
        let c = c.trim().to_uppercase();
        if !all.contains(&c) {
            all.push(c);
        }
    }
    all
}

/// The id of the `call` event recording a task's outcome.
fn outcome_event_id(task: &str) -> String {
    format!("task-outcome:{task}")
}

fn dedup(task: &str) -> [u8; 16] {
    Incoming::Contact(Event {
        id: Some(outcome_event_id(task)),
        contact: String::new(),
        kind: String::new(),
        at: Timestamp::default(),
        channel: None,
        props: serde_json::Map::new(),
    })
    .dedup_key()
}

/// Delivered tasks, oldest due first; `open` keeps those without an outcome.
pub fn list(
    store: &dyn Store,
    config: &Config,
    open: bool,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<Task>, TaskError> {
    let rows = store.delivered_on(&config.task_channels(), limit)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let task = view(store, config, row, now)?;
        if !(open && task.outcome.is_some()) {
            out.push(task);
        }
    }
    Ok(out)
}

/// One task by id.
pub fn get(
    store: &dyn Store,
    config: &Config,
    id: &str,
    now: Timestamp,
) -> Result<Task, TaskError> {
    let row = task_row(store, config, id)?;
    view(store, config, row, now)
}

fn task_row(store: &dyn Store, config: &Config, id: &str) -> Result<Row, TaskError> {
    let row = store
        .outbox_row(id)?
        .ok_or_else(|| TaskError::NotFound(id.into()))?;
    if !config.task_channels().contains(&row.channel) {
        return Err(TaskError::NotATask {
            id: id.into(),
            channel: row.channel,
        });
    }
    if row.state != State::Sent {
        return Err(TaskError::NotDelivered {
            id: id.into(),
            state: row.state,
        });
    }
    Ok(row)
}

fn view(store: &dyn Store, config: &Config, row: Row, now: Timestamp) -> Result<Task, TaskError> {
    let due = row.payload.deadline.unwrap_or(row.first_due);
    let outcome = store
        .event_by_dedup(&dedup(&row.idem_key))?
        .map(|(props, at)| {
            let s = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            CallOutcome {
                code: s("outcome").unwrap_or_default(),
                note: s("note"),
                callback_at: props
                    .get("callback_at")
                    .and_then(|v| serde_json::from_value(v.clone()).ok()),
                at: Some(at),
            }
        });
    let prepared = crate::pipeline::dispatch::prepare(store, config, row, now)
        .map_err(|e| TaskError::Rejected(e.to_string()))?;
    // The template rendered with `{{reason}}` the follow-up, unless the send
    // carries its own (see `crate::domain::templates::context`).
    let r = &prepared.request.map_err(TaskError::Rejected)?;
    let name = [&r.contact.first_name, &r.contact.last_name]
        .iter()
        .filter_map(|n| n.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    use relance_plugin_api::template::{Part, part};
    let text = part(r, Part::Text).or_else(|| part(r, Part::Subject));
    let row = prepared.row;
    Ok(Task {
        id: row.idem_key,
        contact: row.contact,
        name: (!name.is_empty()).then_some(name),
        phone: r.contact.phone.clone(),
        company: r
            .contact
            .company
            .as_ref()
            .map(|c| c.name.clone().unwrap_or_else(|| c.id.clone())),
        owner: r.contact.owner.clone(),
        channel: row.channel,
        followup: row.followup,
        text,
        due,
        outcome,
    })
}

/// Records the outcome of task `id` at `now`: one `call` event with
/// `props.outcome`, exactly once per task. A second outcome changes nothing
/// and is [`TaskError::AlreadyRecorded`].
pub fn record(
    store: &dyn Store,
    config: &Config,
    id: &str,
    outcome: &CallOutcome,
    now: Timestamp,
) -> Result<Task, TaskError> {
    let code = outcome.code.trim().to_uppercase();
    let accepted = codes(config);
    if !accepted.contains(&code) {
        return Err(TaskError::BadCode {
            code: outcome.code.clone(),
            expected: accepted.join(", "),
        });
    }
    let row = task_row(store, config, id)?;
    if store.event_by_dedup(&dedup(id))?.is_some() {
        return Err(already(store, config, id, now));
    }
    let mut props = serde_json::Map::new();
    props.insert("outcome".into(), code.into());
    props.insert("task".into(), id.into());
    props.insert("followup".into(), row.followup.clone().into());
    if let Some(n) = outcome.note.as_ref().filter(|n| !n.trim().is_empty()) {
        props.insert("note".into(), n.clone().into());
    }
    if let Some(at) = outcome.callback_at {
        props.insert("callback_at".into(), serde_json::json!(at));
    }
    let event = Event {
        id: Some(outcome_event_id(id)),
        contact: row.contact.clone(),
        kind: config.followups.calls.event.clone(),
        at: now,
        channel: Some(row.channel.clone()),
        props,
    };
    match store.append_events(&[Incoming::Contact(event)])?.pop() {
        Some(Append::Inserted) => get(store, config, id, now),
        // Another request recorded it between the look and the write.
        Some(Append::Duplicate) => Err(already(store, config, id, now)),
        Some(Append::Rejected(why)) => Err(TaskError::Rejected(why)),
        None => Err(TaskError::Rejected("nothing was written".into())),
    }
}

fn already(store: &dyn Store, config: &Config, id: &str, now: Timestamp) -> TaskError {
    let code = get(store, config, id, now)
        .ok()
        .and_then(|t| t.outcome)
        .map(|o| o.code)
        .unwrap_or_default();
    TaskError::AlreadyRecorded {
        id: id.into(),
        code,
    }
}
