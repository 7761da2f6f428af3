//! Deal scoring (seed 000): every deal starts at 0; conditions (priority
//! segment, brought by a customer …), its amount against the average amount
//! of the deals being ranked, and stage events adjust it. Sales work their
//! deals in descending score order.

use super::config::DealsConfig;
use super::model::ScoringError;
use super::points::Points;
use crate::core::condition::{Condition, Scope, Subject};
use crate::core::config::path::{Issues, KeyPath};
use crate::core::model::{Company, Contact, Deal, Event, Timestamp};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Clone, Debug)]
struct DealRule {
    name: String,
    points: Points,
    when: Condition,
}

/// `[scoring.deals]` compiled.
#[derive(Clone, Debug)]
pub struct DealModel {
    above: Points,
    below: Points,
    rules: Vec<DealRule>,
    stage_event: String,
    stages: HashMap<String, Points>,
}

/// A deal with what its conditions may read: its contact, company and the
/// contact's time-sorted events (stage events carry `props.deal`).
#[derive(Clone, Copy, Debug)]
pub struct DealInput<'a> {
    pub deal: &'a Deal,
    pub contact: Option<&'a Contact>,
    pub company: Option<&'a Company>,
    pub events: &'a [Event],
}

/// One deal's score with the rules behind it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DealScore {
    pub deal: String,
    pub score: Points,
    pub contributions: Vec<DealContribution>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DealContribution {
    pub rule: String,
    pub points: Points,
}

fn no_contact() -> &'static Contact {
    static EMPTY: OnceLock<Contact> = OnceLock::new();
    EMPTY.get_or_init(Contact::default)
}

impl DealModel {
    pub fn compile(config: &DealsConfig) -> Result<Self, ScoringError> {
        let mut issues = Issues::default();
        Self::compile_at(
            config,
            &KeyPath::root().key("scoring").key("deals"),
            &mut issues,
        )
        .ok_or_else(|| ScoringError(issues.0.iter().map(|(p, m)| format!("{p}: {m}")).collect()))
    }

    pub(super) fn compile_at(
        config: &DealsConfig,
        at: &KeyPath,
        issues: &mut Issues,
    ) -> Option<Self> {
        let before = issues.0.len();
        for (key, v) in [
            ("above_average", config.above_average),
            ("below_average", config.below_average),
        ] {
            if !v.is_finite() {
                issues.push(at.key(key), "must be a number");
            }
        }
        if config.stage_event.trim().is_empty() {
            issues.push(at.key("stage_event"), "must name an event type");
        }
        let mut rules = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let here = at.key("rules").index(i);
            if rule.name.trim().is_empty() {
                issues.push(here.key("name"), "every rule needs a name");
            }
            if !rule.points.is_finite() {
                issues.push(here.key("points"), "must be a number");
            }
            if let Some(when) = rule.when.compile(&here.key("when"), Scope::DEAL, issues) {
                rules.push(DealRule {
                    name: rule.name.clone(),
                    points: Points::from_f64(rule.points),
                    when,
                });
            }
        }
        let mut stages = HashMap::new();
        for (stage, points) in &config.stages {
            if !points.is_finite() {
                issues.push(at.key("stages").key(stage), "must be a number");
            }
            stages.insert(stage.clone(), Points::from_f64(*points));
        }
        (issues.0.len() == before).then(|| DealModel {
            above: Points::from_f64(config.above_average),
            below: Points::from_f64(config.below_average),
            rules,
            stage_event: config.stage_event.clone(),
            stages,
        })
    }

    /// The average amount of the deals that have one.
    pub fn average_amount(deals: &[DealInput<'_>]) -> Option<f64> {
        let amounts: Vec<f64> = deals.iter().filter_map(|d| d.deal.amount).collect();
        (!amounts.is_empty()).then(|| amounts.iter().sum::<f64>() / amounts.len() as f64)
    }

    /// Scores one deal against `average` (see [`DealModel::average_amount`]).
    pub fn score(&self, input: &DealInput<'_>, average: Option<f64>, now: Timestamp) -> DealScore {
        let mut contributions = Vec::new();
        let subject = Subject {
            contact: input.contact.unwrap_or(no_contact()),
            company: input.company,
            events: input.events,
            deal: Some(input.deal),
            now,
            earlier: &[],
            standing: crate::core::condition::Standing::default(),
        };
        for rule in &self.rules {
            if rule.when.eval(&subject, None) {
                contributions.push(DealContribution {
                    rule: rule.name.clone(),
                    points: rule.points,
                });
            }
        }
        if let (Some(amount), Some(avg)) = (input.deal.amount, average) {
            if amount > avg {
                contributions.push(DealContribution {
                    rule: "amount above average".into(),
                    points: self.above,
                });
            } else if amount < avg {
                contributions.push(DealContribution {
                    rule: "amount below average".into(),
                    points: self.below,
                });
            }
        }
        for event in input.events.iter().take_while(|e| e.at <= now) {
            if event.kind != self.stage_event
                || event.props.get("deal").and_then(|v| v.as_str()) != Some(&input.deal.id)
            {
                continue;
            }
            let Some(stage) = event.props.get("stage").and_then(|v| v.as_str()) else {
                continue;
            };
            if let Some(points) = self.stages.get(stage) {
                contributions.push(DealContribution {
                    rule: format!("stage: {stage}"),
                    points: *points,
                });
            }
        }
        DealScore {
            deal: input.deal.id.clone(),
            score: contributions.iter().map(|c| c.points).sum(),
            contributions,
        }
    }

    /// Scores and orders deals, best first (ties by deal id, so the order is
    /// stable from one run to the next).
    pub fn rank(&self, deals: &[DealInput<'_>], now: Timestamp) -> Vec<DealScore> {
        let average = Self::average_amount(deals);
        let mut scores: Vec<DealScore> =
            deals.iter().map(|d| self.score(d, average, now)).collect();
        scores.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.deal.cmp(&b.deal)));
        scores
    }
}
