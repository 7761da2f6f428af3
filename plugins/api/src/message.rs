//! The versioned JSON messages exchanged over the ABI.
//!
//! A minor protocol bump only adds optional fields, so an older plugin reads
//! a newer request; a major bump may break that, so the host refuses a
//! plugin that speaks a newer major than it does.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol this crate speaks.
pub const PROTOCOL: ProtocolVersion = ProtocolVersion { major: 1, minor: 2 };

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What a plugin says about itself; read by the host at load, before any
/// instance exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub protocol: ProtocolVersion,
    #[serde(default)]
    pub description: String,
    /// The [`Action`]s it handles.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Settings it reads, for documentation and `describe`.
    #[serde(default)]
    pub settings: Vec<SettingDoc>,
    /// How many follow-ups one `deliver_batch` request may carry (protocol
    /// 1.2); 0 or 1: the host sends `deliver` requests one at a time.
    /// Declare more only when a batch takes about as long as one delivery
    /// (its sends go out at once): the host's call timeout covers the
    /// whole call.
    #[serde(default)]
    pub max_batch: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingDoc {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    /// Never echoed back, never logged.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub doc: String,
}

impl SettingDoc {
    /// One documented setting, as a plugin's `describe` lists them.
    pub fn new(name: &str, required: bool, secret: bool, doc: &str) -> Self {
        Self {
            name: name.into(),
            required,
            secret,
            doc: doc.into(),
        }
    }
}

/// A request from the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub protocol: ProtocolVersion,
    #[serde(flatten)]
    pub body: RequestBody,
}

impl Request {
    pub fn new(body: RequestBody) -> Self {
        Self {
            protocol: PROTOCOL,
            body,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestBody {
    Deliver(Box<DeliverRequest>),
    /// Several follow-ups at once (protocol 1.2), only to a plugin whose
    /// manifest declares `max_batch` above 1; answered by
    /// [`ResponseBody::Deliveries`], one outcome per request, in order.
    DeliverBatch {
        requests: Vec<DeliverRequest>,
    },
    Healthcheck(HealthcheckRequest),
    Describe,
}

/// A delivery request as the host writes it, borrowing the follow-ups it
/// carries: the same JSON as a [`Request`] with a `deliver` or
/// `deliver_batch` body, without copying the requests first.
#[derive(Debug, Serialize)]
pub struct DeliveryRef<'a> {
    pub protocol: ProtocolVersion,
    #[serde(flatten)]
    pub body: DeliveryBodyRef<'a>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeliveryBodyRef<'a> {
    Deliver(&'a DeliverRequest),
    DeliverBatch { requests: &'a [DeliverRequest] },
}

impl<'a> DeliveryRef<'a> {
    pub fn one(request: &'a DeliverRequest) -> Self {
        Self {
            protocol: PROTOCOL,
            body: DeliveryBodyRef::Deliver(request),
        }
    }

    pub fn batch(requests: &'a [DeliverRequest]) -> Self {
        Self {
            protocol: PROTOCOL,
            body: DeliveryBodyRef::DeliverBatch { requests },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthcheckRequest {
    /// The host's instant: plugins never read the clock themselves.
    pub now: DateTime<Utc>,
}

/// What a delivery does on its channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send a message to the contact (email, webhook event).
    #[default]
    Message,
    /// Ask a person to call the contact (a CRM task for the owner).
    CallTask,
    /// Push score, band and status to the contact's record.
    ScoreUpdate,
    /// Record a message sent on another channel (a CRM activity).
    Activity,
    /// Pull contact changes made on the remote side since `vars.since`.
    PullChanges,
}

/// One follow-up to deliver. The same `idempotency_key` is sent on every
/// retry, so a plugin can make its side effect happen once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliverRequest {
    pub idempotency_key: String,
    /// The host's instant for this attempt.
    pub now: DateTime<Utc>,
    /// 1 for the first attempt.
    #[serde(default = "one")]
    pub attempt: u32,
    pub channel: String,
    #[serde(default)]
    pub action: Action,
    pub contact: Contact,
    #[serde(default)]
    pub message: Message,
    #[serde(default)]
    pub score: Option<ScoreInfo>,
    /// Extra template fields (`reason`, `since` …).
    #[serde(default)]
    pub vars: Map<String, Value>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub company: Option<Company>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// The message to send. relance renders its templates itself and says so
/// with `rendered`; without it (an older host) `subject`, `text` and `html`
/// are `{{field}}` templates the plugin renders with
/// [`crate::template::part`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub template: Option<String>,
    /// The parts are final: send them as they are (protocol 1.1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rendered: bool,
    /// The template's language variant that was rendered (`fr`, `en` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreInfo {
    pub score: f64,
    pub band: String,
}

/// A plugin's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub protocol: ProtocolVersion,
    #[serde(flatten)]
    pub body: ResponseBody,
}

impl Response {
    pub fn new(body: ResponseBody) -> Self {
        Self {
            protocol: PROTOCOL,
            body,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBody {
    Delivery(Outcome),
    /// The outcomes of a `deliver_batch` request, in its order.
    Deliveries {
        outcomes: Vec<Outcome>,
    },
    Health(Health),
    Description {
        manifest: Manifest,
    },
    /// The request itself was unusable (unknown type, bad JSON).
    Error {
        message: String,
    },
}

/// How a delivery ended, as the outbox needs to know it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done; `remote_id` names what was created remotely (Message-ID, task id).
    Ok {
        #[serde(default)]
        remote_id: Option<String>,
        /// Extra data for the host (pulled changes …).
        #[serde(default)]
        data: Option<Value>,
    },
    /// Try again later, not before `retry_after_secs` when the remote said so.
    Retryable {
        #[serde(default)]
        retry_after_secs: Option<u64>,
        reason: String,
    },
    /// Retrying cannot help.
    Permanent {
        reason: String,
        /// The remote endpoint asked never to be called again (HTTP 410).
        #[serde(default)]
        disable_endpoint: bool,
    },
}

impl Outcome {
    pub fn ok(remote_id: impl Into<String>) -> Self {
        Outcome::Ok {
            remote_id: Some(remote_id.into()),
            data: None,
        }
    }

    pub fn retryable(reason: impl Into<String>) -> Self {
        Outcome::Retryable {
            retry_after_secs: None,
            reason: reason.into(),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Outcome::Permanent {
            reason: reason.into(),
            disable_endpoint: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    #[serde(default)]
    pub detail: String,
}
