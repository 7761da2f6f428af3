//! Customer scores from purchase events (seed 002): RFM quintiles with named
//! segments, ABC classes by revenue, and a five-level value tier.
//!
//! Quintiles are ranks among the customers scored together: a customer
//! scores `1 + ⌊5 × (customers strictly worse) / n⌋`, so ties share a score
//! and 5 is always the best (most recent, most frequent, largest basket).

use super::config::CustomersConfig;
use crate::core::config::path::{Issues, KeyPath};
use crate::core::model::{Event, Timestamp};
use serde::Serialize;
use std::cmp::Ordering;

pub(super) fn check(c: &CustomersConfig, at: &KeyPath, issues: &mut Issues) {
    if c.purchase_event.trim().is_empty() {
        issues.push(at.key("purchase_event"), "must name an event type");
    }
    let shares = [
        ("abc_a_share", c.abc_a_share),
        ("abc_c_share", c.abc_c_share),
        ("strategic_share", c.strategic_share),
        ("very_important_share", c.very_important_share),
        ("important_share", c.important_share),
    ];
    for (key, v) in shares {
        if !(0.0..=1.0).contains(&v) {
            issues.push(at.key(key), "must be a share between 0 and 1 (0.2 = 20%)");
        }
    }
    if c.abc_a_share + c.abc_c_share > 1.0 {
        issues.push(
            at.key("abc_c_share"),
            "A and C together exceed 100% of customers",
        );
    }
    if c.strategic_share + c.very_important_share + c.important_share > 1.0 {
        issues.push(
            at.key("important_share"),
            "strategic, very important and important together exceed 100% of customers",
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Abc {
    A,
    B,
    C,
}

pub use crate::core::model::ValueTier;

/// Named RFM segments, checked in this order: champions (R, F, M ≥ 4), loyal
/// (R ≥ 3, F ≥ 4), new (R ≥ 4, F ≤ 2), at risk (R ≤ 2, F ≥ 3), lost (R = F
/// = 1), hibernating (R ≤ 2), needs attention (the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RfmSegment {
    Champions,
    Loyal,
    New,
    AtRisk,
    Lost,
    Hibernating,
    NeedsAttention,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rfm {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    pub segment: RfmSegment,
}

impl RfmSegment {
    fn of(r: u8, f: u8, m: u8) -> Self {
        match (r, f, m) {
            (4.., 4.., 4..) => RfmSegment::Champions,
            (3.., 4.., _) => RfmSegment::Loyal,
            (4.., ..=2, _) => RfmSegment::New,
            (..=2, 3.., _) => RfmSegment::AtRisk,
            (1, 1, _) => RfmSegment::Lost,
            (..=2, _, _) => RfmSegment::Hibernating,
            _ => RfmSegment::NeedsAttention,
        }
    }
}

/// One customer's purchase figures and classes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CustomerScore {
    pub customer: String,
    pub purchases: u32,
    pub revenue: f64,
    pub average_basket: f64,
    pub last_purchase: Timestamp,
    /// Sum of `props.margin` when purchases carry one.
    pub margin: Option<f64>,
    pub rfm: Rfm,
    pub abc: Abc,
    pub value: ValueTier,
}

/// Scores every customer that bought something up to `now`, from each
/// customer's events (any order; only `purchase_event` ones are read).
/// Returned in input order.
pub fn score_customers<'a>(
    config: &CustomersConfig,
    customers: impl IntoIterator<Item = (&'a str, &'a [Event])>,
    now: Timestamp,
) -> Vec<CustomerScore> {
    struct Raw {
        id: String,
        count: u32,
        revenue: f64,
        last: Timestamp,
        margin: Option<f64>,
    }
    let mut raw: Vec<Raw> = Vec::new();
    for (id, events) in customers {
        let mut r = Raw {
            id: id.to_string(),
            count: 0,
            revenue: 0.0,
            last: Timestamp::MIN_UTC,
            margin: None,
        };
        for e in events
            .iter()
            .filter(|e| e.at <= now && e.kind == config.purchase_event)
        {
            r.count += 1;
            r.revenue += e.props.get("amount").and_then(number).unwrap_or(0.0);
            if let Some(m) = e.props.get("margin").and_then(number) {
                r.margin = Some(r.margin.unwrap_or(0.0) + m);
            }
            r.last = r.last.max(e.at);
        }
        if r.count > 0 {
            raw.push(r);
        }
    }
    let basket = |r: &Raw| r.revenue / f64::from(r.count);
    let recency = quintiles(&raw, |a, b| a.last.cmp(&b.last));
    let frequency = quintiles(&raw, |a, b| a.count.cmp(&b.count));
    let monetary = quintiles(&raw, |a, b| basket(a).total_cmp(&basket(b)));

    // Positions by revenue, best first; ties take the best position.
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| raw[b].revenue.total_cmp(&raw[a].revenue));
    let mut position = vec![0usize; raw.len()];
    for (pos, &i) in order.iter().enumerate() {
        position[i] = if pos > 0 && raw[order[pos - 1]].revenue == raw[i].revenue {
            position[order[pos - 1]]
        } else {
            pos
        };
    }
    let n = raw.len() as f64;
    let cut = |share: f64| (n * share).round() as usize;
    let a_end = cut(config.abc_a_share);
    let c_start = raw.len() - cut(config.abc_c_share).min(raw.len());
    let tiers = [
        cut(config.strategic_share),
        cut(config.strategic_share + config.very_important_share),
        cut(config.strategic_share + config.very_important_share + config.important_share),
    ];
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            let pos = position[i];
            let abc = if pos < a_end {
                Abc::A
            } else if pos >= c_start {
                Abc::C
            } else {
                Abc::B
            };
            let value = if r.margin.is_some_and(|m| m < 0.0) {
                ValueTier::NegativeMargin
            } else if pos < tiers[0] {
                ValueTier::Strategic
            } else if pos < tiers[1] {
                ValueTier::VeryImportant
            } else if pos < tiers[2] {
                ValueTier::Important
            } else {
                ValueTier::Minor
            };
            let (rs, fs, ms) = (recency[i], frequency[i], monetary[i]);
            CustomerScore {
                customer: r.id.clone(),
                purchases: r.count,
                revenue: r.revenue,
                average_basket: basket(r),
                last_purchase: r.last,
                margin: r.margin,
                rfm: Rfm {
                    recency: rs,
                    frequency: fs,
                    monetary: ms,
                    segment: RfmSegment::of(rs, fs, ms),
                },
                abc,
                value,
            }
        })
        .collect()
}

fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// 1–5 per item, 5 for the best under `cmp` (greater is better).
fn quintiles<T>(items: &[T], cmp: impl Fn(&T, &T) -> Ordering) -> Vec<u8> {
    let n = items.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(&items[a], &items[b]));
    let mut out = vec![0u8; n];
    let mut worse = 0;
    for (pos, &i) in order.iter().enumerate() {
        if pos > 0 && cmp(&items[order[pos - 1]], &items[i]) != Ordering::Equal {
            worse = pos;
        }
        out[i] = (1 + worse * 5 / n) as u8;
    }
    out
}
