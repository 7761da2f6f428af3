//! Plain data shared by every stage of the pipeline: contacts, companies,
//! deals and events. No behaviour lives here, so scoring, the guard and the
//! planner can be tested on values built by hand.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

pub type Timestamp = DateTime<Utc>;

/// Free attributes, as imported (extra CSV columns, extra JSON fields).
pub type Attributes = BTreeMap<String, Value>;

/// Where a contact stands in the sales relationship (seed 004).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Suspect,
    Prospect,
    Customer,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Suspect, Status::Prospect, Status::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Suspect => "suspect",
            Status::Prospect => "prospect",
            Status::Customer => "customer",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown status `{s}`, expected suspect, prospect or customer"))
    }
}

/// A person relance may score and solicit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact's id in the user's own systems.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Id of the contact's company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The sales person who owns the contact (call tasks go to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub status: Status,
    /// Priority tier (core target, target 1, target 2 …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// IANA time zone: send windows are in the contact's local time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Tz>,
    /// Explicit per-channel consent; a channel absent here falls back to the
    /// channel's configured default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, bool>,
    /// Channels the contact must never be reached on.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub do_not_contact: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Attributes,
}

impl Contact {
    pub fn display_name(&self) -> String {
        match (&self.first_name, &self.last_name) {
            (Some(f), Some(l)) => format!("{f} {l}"),
            (Some(n), None) | (None, Some(n)) => n.clone(),
            (None, None) => self.id.clone(),
        }
    }
}

/// A company: its attributes and business signals count for all its contacts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Attributes,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<BusinessSignal>,
}

/// News about a company (seed 003): one of the nine signal kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusinessSignal {
    pub kind: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
}

/// An opportunity being worked by sales.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Attributes,
}

/// Something that happened to or with a contact. Events are append-only and
/// are the only input of scoring and fatigue: actions done outside relance
/// count once imported, exactly like the ones relance sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Optional id from the producer; re-sending an event with the same id is
    /// a no-op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub contact: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
}

/// The three kinds of follow-up of seed 004. The guard, the planner and the
/// outbox all speak of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpKind {
    /// Automated nurturing, so that nobody is forgotten.
    Systematic,
    /// Our own news (trade show, release, award).
    Event,
    /// A weak signal calls for action now.
    Opportunistic,
}

impl FollowUpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowUpKind::Systematic => "systematic",
            FollowUpKind::Event => "event",
            FollowUpKind::Opportunistic => "opportunistic",
        }
    }
}

impl FromStr for FollowUpKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "systematic" => Ok(FollowUpKind::Systematic),
            "event" => Ok(FollowUpKind::Event),
            "opportunistic" => Ok(FollowUpKind::Opportunistic),
            _ => Err(format!(
                "unknown follow-up kind `{s}`, expected systematic, event or opportunistic"
            )),
        }
    }
}

/// A customer's value to the business (seed 002), lowest first: computed
/// by customer scoring, weighed against marketing pressure by the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueTier {
    NegativeMargin,
    Minor,
    Important,
    VeryImportant,
    Strategic,
}

impl ValueTier {
    pub const ALL: [Self; 5] = [
        Self::NegativeMargin,
        Self::Minor,
        Self::Important,
        Self::VeryImportant,
        Self::Strategic,
    ];

    pub fn rank(self) -> usize {
        self as usize
    }
}

/// The canonical event types the shipped rules and the demo use; users may
/// add their own.
pub mod event_types {
    pub const EMAIL_SENT: &str = "email_sent";
    pub const SMS_SENT: &str = "sms_sent";
    pub const CALL: &str = "call";
    pub const MEETING: &str = "meeting";
    pub const INBOUND_CALL: &str = "inbound_call";
    pub const EMAIL_REPLY: &str = "email_reply";
    pub const DEMO_REQUEST: &str = "demo_request";
    pub const EMAIL_OPEN: &str = "email_open";
    pub const EMAIL_CLICK: &str = "email_click";
    pub const PAGE_VISIT: &str = "page_visit";
    pub const FORM_SUBMIT: &str = "form_submit";
    pub const DOWNLOAD: &str = "download";
    pub const WEBINAR_SIGNUP: &str = "webinar_signup";
    pub const TRADE_SHOW_VISIT: &str = "trade_show_visit";
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    pub const COMPLAINT: &str = "complaint";
    pub const BOUNCE: &str = "bounce";
    pub const PURCHASE: &str = "purchase";
    pub const BUSINESS_SIGNAL: &str = "business_signal";
}
