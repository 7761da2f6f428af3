//! The `[scoring]` section: bands, lead-score rules, change detection, deal
//! and customer scoring. Kept as written; [`super::ScoringModel::compile`]
//! turns it into the evaluable model, and `validate` runs that same
//! compilation so every mistake is reported at load with its position.

use crate::core::condition::ConditionConfig;
use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath, Validate};
use crate::core::model::event_types as et;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Named bands, highest first; a contact is in the first band whose
    /// `min` it reaches, the last band has no `min`.
    pub bands: Vec<BandConfig>,
    /// Points lost per full month (30 days) since the last activity.
    pub inactivity_malus_per_month: f64,
    /// The malus never exceeds this many points (no cap when absent), so a
    /// long-dormant contact keeps its profile points visible.
    pub inactivity_malus_max: Option<f64>,
    /// Event types that show the contact is active (engagement, inbound):
    /// the inactivity malus counts from the latest of them.
    pub activity_events: Vec<String>,
    /// Event types that solicit the contact (for `unanswered` rules).
    pub solicitation_events: Vec<String>,
    /// Event types that answer a solicitation (for `unanswered` rules).
    pub response_events: Vec<String>,
    /// A solicitation counts as unanswered only once this old: an email
    /// sent an hour ago has not been ignored yet.
    pub response_window: Duration,
    /// Fit points: a condition on the contact and its company.
    pub profile: Vec<RuleConfig>,
    /// Engagement points per event.
    pub behaviour: Vec<RuleConfig>,
    /// Negative criteria: a condition, an event rule or `unanswered`.
    pub negative: Vec<RuleConfig>,
    pub changes: ChangesConfig,
    pub deals: DealsConfig,
    pub customers: CustomersConfig,
}

/// One scoring rule. Which keys apply depends on the section; the model's
/// compilation says which are missing or out of place.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RuleConfig {
    /// Shown in explanations; unique across the lead-score rules.
    pub name: String,
    /// Points when the condition holds, or per counted event.
    pub points: f64,
    /// The event type(s) the rule counts: `"page_visit"` or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventTypes>,
    /// On the contact (profile) or on each event (event rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionConfig>,
    /// At most this many events count (the most recent ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// Linear fade: an event's points drop to zero over this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fade_over: Option<Duration>,
    /// An event's points halve every period (and stop below 1/1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<Duration>,
    /// An event counts in full for this long, then not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts_for: Option<Duration>,
    /// Negative rules only: the contact answered none of its last N
    /// solicitations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<u32>,
}

/// One event type or several, written `"demo_request"` or `["a", "b"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EventTypes(pub Vec<String>);

impl<'de> Deserialize<'de> for EventTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EventTypes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type or a list of event types")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventTypes, E> {
                Ok(EventTypes(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventTypes, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(EventTypes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// What counts as a score change worth notifying (seed 002: "keep the film").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ChangesConfig {
    /// A rise or fall of at least this many points …
    pub jump_points: f64,
    /// … within this period.
    pub jump_window: Duration,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        Self {
            jump_points: 50.0,
            jump_window: Duration(chrono::Duration::days(7)),
        }
    }
}

/// Deal scoring (seed 000): conditions, amount against the average, stage
/// events.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DealsConfig {
    /// Points when the deal's amount is above the average amount.
    pub above_average: f64,
    /// Points when it is below (usually negative).
    pub below_average: f64,
    /// Conditions on the deal, its contact and company.
    pub rules: Vec<DealRuleConfig>,
    /// The event type that reports a stage (`props.deal`, `props.stage`).
    pub stage_event: String,
    /// Points per stage reported by a stage event.
    pub stages: BTreeMap<String, f64>,
}

impl Default for DealsConfig {
    fn default() -> Self {
        Self {
            above_average: 10.0,
            below_average: -5.0,
            rules: Vec::new(),
            stage_event: "deal_stage".into(),
            stages: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DealRuleConfig {
    pub name: String,
    pub points: f64,
    pub when: ConditionConfig,
}

/// Customer scoring from purchases (seed 002).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct CustomersConfig {
    /// The event type of a purchase (`props.amount`, optional `props.margin`).
    pub purchase_event: String,
    /// Share of customers, by revenue, in class A (the top).
    pub abc_a_share: f64,
    /// Share of customers, by revenue, in class C (the bottom).
    pub abc_c_share: f64,
    /// Shares of customers, by revenue, in the top value tiers; the rest
    /// with a non-negative margin are `minor`.
    pub strategic_share: f64,
    pub very_important_share: f64,
    pub important_share: f64,
}

impl Default for CustomersConfig {
    fn default() -> Self {
        Self {
            purchase_event: et::PURCHASE.into(),
            abc_a_share: 0.2,
            abc_c_share: 0.2,
            strategic_share: 0.05,
            very_important_share: 0.15,
            important_share: 0.3,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BandConfig {
    pub name: String,
    #[serde(default)]
    pub min: Option<f64>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            bands: vec![
                BandConfig {
                    name: "hot".into(),
                    min: Some(150.0),
                },
                BandConfig {
                    name: "warm".into(),
                    min: Some(100.0),
                },
                BandConfig {
                    name: "cold".into(),
                    min: None,
                },
            ],
            inactivity_malus_per_month: 0.0,
            inactivity_malus_max: None,
            activity_events: strings(&[
                et::INBOUND_CALL,
                et::EMAIL_REPLY,
                et::DEMO_REQUEST,
                et::EMAIL_OPEN,
                et::EMAIL_CLICK,
                et::PAGE_VISIT,
                et::FORM_SUBMIT,
                et::DOWNLOAD,
                et::WEBINAR_SIGNUP,
                et::TRADE_SHOW_VISIT,
            ]),
            solicitation_events: strings(&[et::EMAIL_SENT, et::SMS_SENT, et::CALL]),
            response_events: strings(&[
                et::INBOUND_CALL,
                et::EMAIL_REPLY,
                et::DEMO_REQUEST,
                et::EMAIL_CLICK,
                et::FORM_SUBMIT,
            ]),
            response_window: Duration(chrono::Duration::days(3)),
            profile: Vec::new(),
            behaviour: Vec::new(),
            negative: Vec::new(),
            changes: ChangesConfig::default(),
            deals: DealsConfig::default(),
            customers: CustomersConfig::default(),
        }
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

impl Validate for ScoringConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        // Rules, conditions, deals and customers: compiling reports them.
        let _ = super::ScoringModel::compile_at(self, at, issues);
        let bands = at.key("bands");
        if self.bands.is_empty() {
            issues.push(bands.clone(), "at least one band is required");
        }
        let mut names = BTreeSet::new();
        let last = self.bands.len().saturating_sub(1);
        for (i, band) in self.bands.iter().enumerate() {
            if !names.insert(band.name.as_str()) {
                issues.push(
                    bands.index(i).key("name"),
                    format!("band `{}` is defined twice", band.name),
                );
            }
            match (i == last, band.min) {
                (false, None) => issues.push(
                    bands.index(i).key("min"),
                    "every band but the last needs a `min`",
                ),
                (true, Some(_)) if i > 0 => issues.push(
                    bands.index(i).key("min"),
                    "the last band catches every lower score and takes no `min`",
                ),
                _ => {}
            }
            if let (Some(prev), Some(min)) =
                (i.checked_sub(1).and_then(|p| self.bands[p].min), band.min)
                && min >= prev
            {
                issues.push(
                    bands.index(i).key("min"),
                    format!(
                        "bands must be listed highest first: `{}` has min {min}, not below {prev} of `{}`",
                        band.name,
                        self.bands[i - 1].name
                    ),
                );
            }
        }
        if !self.inactivity_malus_per_month.is_finite() || self.inactivity_malus_per_month < 0.0 {
            issues.push(
                at.key("inactivity_malus_per_month"),
                "must be zero or a positive number",
            );
        }
    }
}
