//! Field paths resolved at load into accessors.

use super::{Scope, Subject, Val};
use crate::core::model::{Event, Timestamp};
use serde_json::Value;

/// A resolved field path. Attribute paths are pre-split on `.`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    ContactId,
    Email,
    Phone,
    FirstName,
    LastName,
    Status,
    Tier,
    Owner,
    Timezone,
    /// The contact's company id (`company` or `company.id`).
    CompanyId,
    /// Channels the contact must never be reached on (a list).
    DoNotContact,
    /// Explicit consent on one channel (a boolean, missing when unrecorded).
    Consent(Box<str>),
    Attribute(Box<[String]>),
    CompanyName,
    CompanyAttribute(Box<[String]>),
    /// Kinds of the company's business signals (a list).
    CompanySignals,
    /// When the company last had a signal of this kind.
    CompanySignal(Box<str>),
    EventType,
    EventChannel,
    EventAt,
    EventProp(Box<[String]>),
    /// When the contact last had an event of this type (up to now).
    Last(Box<str>),
    DealId,
    DealName,
    DealAmount,
    DealStage,
    DealAttribute(Box<[String]>),
    /// The contact's score band (`hot`), missing before a first score.
    Band,
    /// The contact's lead score, in points.
    Score,
    /// Where calls left the prospect: `open`, `won`, `stopped`, `lost`.
    CallStatus,
    /// The prospect status (seed 003): `GAGNÉ`, `CHAUD`, `TIÈDE`, `FROID`,
    /// `ARRÊTÉ`, `PERDU`.
    ProspectStatus,
}

const KNOWN: &str = "id, email, phone, first_name, last_name, status, tier, owner, timezone, \
company, do_not_contact, consent.<channel>, attributes.<name>, company.name, \
company.attributes.<name>, company.signals, company.signal.<kind>, event.type, event.channel, \
event.at, event.props.<name>, last.<event type>, deal.id, deal.name, deal.amount, deal.stage, \
deal.attributes.<name>, band, score, call.status, prospect.status";

fn split(rest: &str) -> Result<Box<[String]>, String> {
    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(format!("`{rest}` has an empty name part"));
    }
    Ok(parts.into_boxed_slice())
}

fn name(rest: &str, what: &str) -> Result<Box<str>, String> {
    if rest.is_empty() {
        Err(format!("{what} name is missing"))
    } else {
        Ok(rest.into())
    }
}

impl Field {
    /// Resolves a dotted path, refusing fields the scope cannot provide.
    pub fn parse(path: &str, scope: Scope) -> Result<Field, String> {
        let path = path.trim();
        let field = match path {
            "id" => Field::ContactId,
            "email" => Field::Email,
            "phone" => Field::Phone,
            "first_name" => Field::FirstName,
            "last_name" => Field::LastName,
            "status" => Field::Status,
            "tier" => Field::Tier,
            "owner" => Field::Owner,
            "timezone" => Field::Timezone,
            "company" | "company.id" => Field::CompanyId,
            "do_not_contact" => Field::DoNotContact,
            "company.name" => Field::CompanyName,
            "company.signals" => Field::CompanySignals,
            "event.type" => Field::EventType,
            "event.channel" => Field::EventChannel,
            "event.at" => Field::EventAt,
            "deal.id" => Field::DealId,
            "deal.name" => Field::DealName,
            "deal.amount" => Field::DealAmount,
            "deal.stage" => Field::DealStage,
            "band" => Field::Band,
            "score" => Field::Score,
            "call.status" => Field::CallStatus,
            "prospect.status" => Field::ProspectStatus,
            _ => {
                if let Some(rest) = path.strip_prefix("attributes.") {
                    Field::Attribute(split(rest)?)
                } else if let Some(rest) = path.strip_prefix("company.attributes.") {
                    Field::CompanyAttribute(split(rest)?)
                } else if let Some(rest) = path.strip_prefix("company.signal.") {
                    Field::CompanySignal(name(rest, "signal kind")?)
                } else if let Some(rest) = path.strip_prefix("consent.") {
                    Field::Consent(name(rest, "channel")?)
                } else if let Some(rest) = path.strip_prefix("event.props.") {
                    Field::EventProp(split(rest)?)
                } else if let Some(rest) = path.strip_prefix("last.") {
                    Field::Last(name(rest, "event type")?)
                } else if let Some(rest) = path.strip_prefix("deal.attributes.") {
                    Field::DealAttribute(split(rest)?)
                } else {
                    return Err(format!("unknown field `{path}`; known fields: {KNOWN}"));
                }
            }
        };
        if field.needs_event() && !scope.event {
            return Err(format!(
                "`{path}` reads the event, but this condition is not about an event (give the rule an `event`)"
            ));
        }
        if matches!(
            field,
            Field::Band | Field::Score | Field::CallStatus | Field::ProspectStatus
        ) && !scope.standing
        {
            return Err(format!(
                "`{path}` is known to follow-up rules (segments, triggers, broadcasts), not here: a scoring rule cannot read the score it computes"
            ));
        }
        if field.needs_deal() && !scope.deal {
            return Err(format!("`{path}` is only available in deal rules"));
        }
        Ok(field)
    }

    fn needs_event(&self) -> bool {
        matches!(
            self,
            Field::EventType | Field::EventChannel | Field::EventAt | Field::EventProp(_)
        )
    }

    /// Type, channel or prop of the event: what [`Field::event_text`] reads.
    pub(super) fn is_event_value(&self) -> bool {
        matches!(
            self,
            Field::EventType | Field::EventChannel | Field::EventProp(_)
        )
    }

    /// The value of an event field ([`Condition::event_field`]) when it is a
    /// text (`Some(Some)`) or absent (`Some(None)`); `None` for any other
    /// value (a number, a list …) or any other field.
    ///
    /// [`Condition::event_field`]: super::Condition::event_field
    pub fn event_text<'e>(&self, event: &'e Event) -> Option<Option<&'e str>> {
        let value = match self {
            Field::EventType => return Some(Some(&event.kind)),
            Field::EventChannel => return Some(event.channel.as_deref()),
            Field::EventProp(path) => path[1..]
                .iter()
                .try_fold(event.props.get(&path[0]), |v, key| Some(v?.get(key)))
                .flatten(),
            _ => return None,
        };
        match value {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => None,
        }
    }

    fn needs_deal(&self) -> bool {
        matches!(
            self,
            Field::DealId
                | Field::DealName
                | Field::DealAmount
                | Field::DealStage
                | Field::DealAttribute(_)
        )
    }

    /// Calls `f` on each value of the field (once with `Missing` when there
    /// is none) and tells whether one call returned true.
    pub(super) fn any_value(
        &self,
        s: &Subject<'_>,
        event: Option<&Event>,
        f: &mut dyn FnMut(Val<'_>) -> bool,
    ) -> bool {
        let c = s.contact;
        let single = match self {
            Field::ContactId => Val::Str(&c.id),
            Field::Email => opt(c.email.as_ref()),
            Field::Phone => opt(c.phone.as_ref()),
            Field::FirstName => opt(c.first_name.as_ref()),
            Field::LastName => opt(c.last_name.as_ref()),
            Field::Status => Val::Str(c.status.as_str()),
            Field::Tier => opt(c.tier.as_ref()),
            Field::Owner => opt(c.owner.as_ref()),
            Field::Timezone => c.timezone.map_or(Val::Missing, |tz| Val::Str(tz.name())),
            Field::CompanyId => opt(c.company.as_ref()),
            Field::DoNotContact => {
                return list(c.do_not_contact.iter().map(|s| Val::Str(s)), f);
            }
            Field::Consent(channel) => c
                .consent
                .get(&**channel)
                .map_or(Val::Missing, |b| Val::Bool(*b)),
            Field::Attribute(path) => return json_path(c.attributes.get(&path[0]), &path[1..], f),
            Field::CompanyName => opt(s.company.and_then(|co| co.name.as_ref())),
            Field::CompanyAttribute(path) => {
                return json_path(
                    s.company.and_then(|co| co.attributes.get(&path[0])),
                    &path[1..],
                    f,
                );
            }
            Field::CompanySignals => {
                let signals = s.company.map_or(&[][..], |co| &co.signals[..]);
                return list(
                    signals
                        .iter()
                        .filter(|sig| sig.at <= s.now)
                        .map(|sig| Val::Str(&sig.kind)),
                    f,
                );
            }
            Field::CompanySignal(kind) => s
                .company
                .and_then(|co| {
                    co.signals
                        .iter()
                        .filter(|sig| sig.at <= s.now && *sig.kind == **kind)
                        .map(|sig| sig.at)
                        .max()
                })
                .map_or(Val::Missing, Val::Time),
            Field::EventType => event.map_or(Val::Missing, |e| Val::Str(&e.kind)),
            Field::EventChannel => opt(event.and_then(|e| e.channel.as_ref())),
            Field::EventAt => event.map_or(Val::Missing, |e| Val::Time(e.at)),
            Field::EventProp(path) => {
                return json_path(event.and_then(|e| e.props.get(&path[0])), &path[1..], f);
            }
            Field::Last(kind) => last_of(s.events, kind, s.now)
                .max(earlier_of(s.earlier, kind, s.now))
                .map_or(Val::Missing, Val::Time),
            Field::DealId => s.deal.map_or(Val::Missing, |d| Val::Str(&d.id)),
            Field::DealName => opt(s.deal.and_then(|d| d.name.as_ref())),
            Field::DealAmount => s.deal.and_then(|d| d.amount).map_or(Val::Missing, Val::Num),
            Field::DealStage => opt(s.deal.and_then(|d| d.stage.as_ref())),
            Field::DealAttribute(path) => {
                return json_path(
                    s.deal.and_then(|d| d.attributes.get(&path[0])),
                    &path[1..],
                    f,
                );
            }
            Field::Band => s.standing.band.map_or(Val::Missing, Val::Str),
            Field::Score => s.standing.score.map_or(Val::Missing, Val::Num),
            Field::CallStatus => s.standing.call.map_or(Val::Missing, Val::Str),
            Field::ProspectStatus => s.standing.prospect.map_or(Val::Missing, Val::Str),
        };
        f(single)
    }
}

fn opt(v: Option<&String>) -> Val<'_> {
    v.map_or(Val::Missing, |v| Val::Str(v))
}

/// The latest event of `kind` at or before `now` in a time-sorted history.
pub fn last_of(events: &[Event], kind: &str, now: Timestamp) -> Option<Timestamp> {
    let upto = events.partition_point(|e| e.at <= now);
    events[..upto]
        .iter()
        .rev()
        .find(|e| e.kind == kind)
        .map(|e| e.at)
}

/// The last instant of `kind` in a list sorted by type, unless after `now`.
fn earlier_of(earlier: &[(String, Timestamp)], kind: &str, now: Timestamp) -> Option<Timestamp> {
    let i = earlier
        .binary_search_by(|(k, _)| k.as_str().cmp(kind))
        .ok()?;
    Some(earlier[i].1).filter(|&at| at <= now)
}

fn list<'a>(mut values: impl Iterator<Item = Val<'a>>, f: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
    let mut any = false;
    let mut seen = false;
    for v in values.by_ref() {
        seen = true;
        if f(v) {
            any = true;
            break;
        }
    }
    if seen { any } else { f(Val::Missing) }
}

fn json_path(root: Option<&Value>, rest: &[String], f: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
    let mut value = root;
    for key in rest {
        value = value.and_then(|v| v.get(key));
    }
    match value {
        None | Some(Value::Null) => f(Val::Missing),
        Some(Value::Array(items)) => list(items.iter().map(json_val), f),
        Some(v) => f(json_val(v)),
    }
}

fn json_val(v: &Value) -> Val<'_> {
    match v {
        Value::Null => Val::Missing,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => n.as_f64().map_or(Val::Missing, Val::Num),
        Value::String(s) => Val::Str(s),
        Value::Array(_) | Value::Object(_) => Val::Present,
    }
}
