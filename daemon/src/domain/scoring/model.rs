//! The compiled lead-scoring model and its evaluation.
//!
//! score = profile + behaviour + negative + inactivity, each the sum of its
//! rounded contributions.
//!
//! Time granularity, which keeps [`ScoreCard::next_change_at`] finite:
//! - recency weights (`fade_over`, `half_life`) use an event's age in whole
//!   days, so they change only at `event.at + k days`; a half-life weight
//!   below 1/1024 counts as zero, so it ends; `counts_for` ends at
//!   `event.at + period`;
//! - the inactivity malus grows at each whole 30-day month since the last
//!   activity;
//! - `within` / `older_than` conditions flip at `t + period`;
//! - an event or company signal dated after `now` is ignored until its
//!   instant.

use super::config::{RuleConfig, ScoringConfig};
use super::points::Points;
use crate::core::condition::{Condition, Field, Scope, Subject, lower};
use crate::core::config::path::{Issues, KeyPath, Validate};
use crate::core::hasher::WordMap;
use crate::core::model::{Company, Contact, Event, Timestamp};
use serde::{Serialize, Serializer};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const DAY: i64 = 86_400;
const MONTH: i64 = 30 * DAY;
/// Below this weight a half-life fade counts as zero.
const HALF_LIFE_FLOOR: f64 = 1.0 / 1024.0;

/// A scoring configuration that failed to compile; the loader reports the
/// same problems with positions, so this is for configurations built in code.
#[derive(Debug, thiserror::Error)]
#[error("invalid scoring configuration: {}", .0.join("; "))]
pub struct ScoringError(pub Vec<String>);

/// Which part of the score a contribution belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Profile,
    Behaviour,
    Negative,
    Inactivity,
}

/// How an event's points fade with its age.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recency {
    /// Linear to zero over this many days.
    FadeOverDays(f64),
    /// Halves every this many days.
    HalfLifeDays(f64),
    /// Full weight for this many days, then nothing.
    CountsForDays(f64),
}

impl std::fmt::Display for Recency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recency::FadeOverDays(d) => write!(f, "fades to zero over {d} days"),
            Recency::HalfLifeDays(d) => write!(f, "halves every {d} days"),
            Recency::CountsForDays(d) => write!(f, "counts for {d} days"),
        }
    }
}

impl Recency {
    /// The weight of an event of age `age`, and how long until it changes
    /// (none once it is zero for good). Works on the age so that the hot
    /// loop does no calendar arithmetic.
    fn weight(self, age: chrono::Duration) -> (f64, Option<chrono::Duration>) {
        let age = age.max(chrono::Duration::zero());
        let whole_days = age.num_seconds() / DAY;
        let to_next_day = || chrono::Duration::seconds((whole_days + 1) * DAY) - age;
        match self {
            Recency::FadeOverDays(days) => {
                let w = 1.0 - whole_days as f64 / days;
                if w > 0.0 {
                    (w, Some(to_next_day()))
                } else {
                    (0.0, None)
                }
            }
            Recency::HalfLifeDays(days) => {
                let w = 0.5f64.powf(whole_days as f64 / days);
                if w >= HALF_LIFE_FLOOR {
                    (w, Some(to_next_day()))
                } else {
                    (0.0, None)
                }
            }
            Recency::CountsForDays(days) => {
                let span = chrono::Duration::seconds((days * DAY as f64).round() as i64);
                if age < span {
                    (1.0, Some(span - age))
                } else {
                    (0.0, None)
                }
            }
        }
    }
}

/// An event behind a contribution: its position in the slice given to
/// [`ScoringModel::score`] (the integrator maps it back to a stored id), its
/// instant and the weight its recency left it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CountedEvent {
    pub index: usize,
    pub at: Timestamp,
    pub weight: f64,
}

/// One rule's share of a score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contribution {
    #[serde(serialize_with = "arc_str")]
    pub rule: Arc<str>,
    pub kind: RuleKind,
    pub points: Points,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<CountedEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Option<Recency>,
    /// Inactivity only: whole months since the last activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub months: Option<i64>,
}

/// A contact's lead score with its explanation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreCard {
    pub contact: String,
    pub score: Points,
    #[serde(serialize_with = "arc_str")]
    pub band: Arc<str>,
    pub profile: Points,
    pub behaviour: Points,
    pub negative: Points,
    pub inactivity: Points,
    pub contributions: Vec<Contribution>,
    /// The earliest instant at which the score or its explanation may change
    /// with no new event; `None` when it never will. Never later than the
    /// real change, sometimes earlier (then a recomputation finds the same).
    pub next_change_at: Option<Timestamp>,
}

fn arc_str<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

#[derive(Clone, Debug)]
struct Band {
    name: Arc<str>,
    min: Option<Points>,
}

#[derive(Clone, Debug)]
struct ProfileRule {
    name: Arc<str>,
    kind: RuleKind,
    points: Points,
    when: Condition,
    timed: bool,
}

#[derive(Clone, Debug)]
struct EventRule {
    name: Arc<str>,
    kind: RuleKind,
    points: f64,
    when: Option<Condition>,
    timed: bool,
    max_count: u32,
    recency: Option<Recency>,
}

#[derive(Clone, Debug)]
struct UnansweredRule {
    name: Arc<str>,
    points: Points,
    last: u32,
}

/// What one event type means to the model, found with one hash lookup.
#[derive(Clone, Debug, Default)]
struct TypeInfo {
    rules: Vec<usize>,
    activity: bool,
    solicitation: bool,
    response: bool,
    remembered: Option<Remembered>,
}

/// The rules of one event type whose condition reads one event field
/// alone (the page's URL, say): their results are a function of that
/// field's text, so each thread keeps them per distinct text and a regex
/// runs once per URL rather than once per event.
#[derive(Clone, Debug)]
struct Remembered {
    field: Field,
    /// Bit `i`: `TypeInfo::rules[i]` is one of them.
    rules: u64,
    /// This type's place in the thread's memo.
    slot: usize,
}

/// Distinct texts remembered per event type and thread; past this the
/// memo starts over (a field with that many values gains little from it).
const MEMO_TEXTS: usize = 1 << 16;

/// The results of [`Remembered`] rules, per thread: bit `i` of a value is
/// the result of `TypeInfo::rules[i]`.
#[derive(Debug, Default)]
struct Memo {
    model: u64,
    texts: Vec<WordMap<Box<str>, u64>>,
    missing: Vec<Option<u64>>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Tells compiled models apart in the per-thread memo.
static MODELS: AtomicU64 = AtomicU64::new(1);

/// The `[scoring]` section compiled: conditions compiled, event types
/// indexed. Immutable and `Sync`: share one across workers.
#[derive(Clone, Debug)]
pub struct ScoringModel {
    bands: Vec<Band>,
    profile: Vec<ProfileRule>,
    event_rules: Vec<EventRule>,
    unanswered: Vec<UnansweredRule>,
    types: WordMap<Box<str>, TypeInfo>,
    malus_per_month: f64,
    malus_max: Option<f64>,
    inactivity_name: Arc<str>,
    /// The largest `unanswered`: older solicitations need not be kept.
    max_unanswered: usize,
    response_window: chrono::Duration,
    /// Identifies this model's results in the per-thread memo.
    id: u64,
    /// Event types with [`Remembered`] rules.
    remembered_types: usize,
}

/// Per-rule tally while scanning a contact's events.
#[derive(Clone, Debug, Default)]
struct Tally {
    sum: f64,
    /// Events counted (all of them, kept or not in `events`).
    count: u32,
    /// The counted events, when the score is explained.
    events: Vec<CountedEvent>,
}

/// A score's parts as its rules add them: the sums by kind, and the
/// contributions themselves when the score is explained.
struct Parts {
    explain: bool,
    sums: [Points; 4],
    contributions: Vec<Contribution>,
}

impl Parts {
    fn new(explain: bool, capacity: usize) -> Self {
        Self {
            explain,
            sums: [Points::ZERO; 4],
            contributions: Vec::with_capacity(if explain { capacity } else { 0 }),
        }
    }

    /// Adds `points` of `kind`; `contribution` builds the explanation only
    /// when one is wanted.
    fn add(&mut self, kind: RuleKind, points: Points, contribution: impl FnOnce() -> Contribution) {
        self.sums[Self::slot(kind)] += points;
        if self.explain {
            self.contributions.push(contribution());
        }
    }

    fn sum(&self, kind: RuleKind) -> Points {
        self.sums[Self::slot(kind)]
    }

    fn slot(kind: RuleKind) -> usize {
        match kind {
            RuleKind::Profile => 0,
            RuleKind::Behaviour => 1,
            RuleKind::Negative => 2,
            RuleKind::Inactivity => 3,
        }
    }
}

impl ScoringModel {
    /// Compiles a configuration built in code (the loader has already
    /// reported problems with positions for the file's).
    pub fn compile(config: &ScoringConfig) -> Result<Self, ScoringError> {
        let at = KeyPath::root().key("scoring");
        let mut issues = Issues::default();
        config.validate(&at, &mut issues);
        if !issues.is_empty() {
            return Err(ScoringError(
                issues.0.iter().map(|(p, m)| format!("{p}: {m}")).collect(),
            ));
        }
        Self::compile_at(config, &at, &mut issues).ok_or_else(|| {
            ScoringError(issues.0.iter().map(|(p, m)| format!("{p}: {m}")).collect())
        })
    }

    /// Compiles the lead-score part, reporting problems at `at`; also checks
    /// the deal and customer parts. `None` when anything was reported.
    pub(crate) fn compile_at(
        config: &ScoringConfig,
        at: &KeyPath,
        issues: &mut Issues,
    ) -> Option<Self> {
        let before = issues.0.len();
        let mut model = ScoringModel {
            bands: config
                .bands
                .iter()
                .map(|b| Band {
                    name: b.name.as_str().into(),
                    min: b.min.map(Points::from_f64),
                })
                .collect(),
            profile: Vec::new(),
            event_rules: Vec::new(),
            unanswered: Vec::new(),
            types: WordMap::default(),
            malus_per_month: config.inactivity_malus_per_month,
            malus_max: config.inactivity_malus_max,
            inactivity_name: "inactivity".into(),
            max_unanswered: 0,
            response_window: config.response_window.0,
            id: MODELS.fetch_add(1, Ordering::Relaxed),
            remembered_types: 0,
        };
        if config.response_window.seconds() < 0 {
            issues.push(at.key("response_window"), "must not be negative");
        }
        if let Some(max) = config.inactivity_malus_max
            && (!max.is_finite() || max < 0.0)
        {
            issues.push(
                at.key("inactivity_malus_max"),
                "must be zero or a positive number",
            );
        }
        let mut names = BTreeSet::new();
        for (section, kind) in [
            ("profile", RuleKind::Profile),
            ("behaviour", RuleKind::Behaviour),
            ("negative", RuleKind::Negative),
        ] {
            let rules = match kind {
                RuleKind::Profile => &config.profile,
                RuleKind::Behaviour => &config.behaviour,
                _ => &config.negative,
            };
            for (i, rule) in rules.iter().enumerate() {
                let here = at.key(section).index(i);
                if rule.name.trim().is_empty() {
                    issues.push(
                        here.key("name"),
                        "every rule needs a name (shown in explanations)",
                    );
                } else if !names.insert(rule.name.as_str()) || rule.name == "inactivity" {
                    issues.push(
                        here.key("name"),
                        format!("rule name `{}` is already used", rule.name),
                    );
                }
                model.add_rule(rule, kind, &here, issues);
            }
        }
        for (key, list) in [
            ("activity_events", &config.activity_events),
            ("solicitation_events", &config.solicitation_events),
            ("response_events", &config.response_events),
        ] {
            for (i, t) in list.iter().enumerate() {
                if t.trim().is_empty() {
                    issues.push(at.key(key).index(i), "must name an event type");
                }
                let info = model.types.entry(t.as_str().into()).or_default();
                match key {
                    "activity_events" => info.activity = true,
                    "solicitation_events" => info.solicitation = true,
                    _ => info.response = true,
                }
            }
        }
        model.remember();
        model.max_unanswered = model
            .unanswered
            .iter()
            .map(|r| r.last as usize)
            .max()
            .unwrap_or(0);
        super::changes::check(&config.changes, &at.key("changes"), issues);
        let _ = super::deals::DealModel::compile_at(&config.deals, &at.key("deals"), issues);
        super::customers::check(&config.customers, &at.key("customers"), issues);
        (issues.0.len() == before).then_some(model)
    }

    fn add_rule(&mut self, rule: &RuleConfig, kind: RuleKind, at: &KeyPath, issues: &mut Issues) {
        let name: Arc<str> = rule.name.as_str().into();
        if !rule.points.is_finite() {
            issues.push(at.key("points"), "must be a number");
        } else if kind == RuleKind::Negative && rule.points >= 0.0 {
            issues.push(
                at.key("points"),
                "negative criteria take negative points (e.g. -20)",
            );
        }
        let recencies: Vec<(&str, Recency)> = [
            (
                "fade_over",
                rule.fade_over.map(|d| Recency::FadeOverDays(days(d))),
            ),
            (
                "half_life",
                rule.half_life.map(|d| Recency::HalfLifeDays(days(d))),
            ),
            (
                "counts_for",
                rule.counts_for.map(|d| Recency::CountsForDays(days(d))),
            ),
        ]
        .into_iter()
        .filter_map(|(k, r)| r.map(|r| (k, r)))
        .collect();
        for (key, r) in &recencies {
            let (Recency::FadeOverDays(d) | Recency::HalfLifeDays(d) | Recency::CountsForDays(d)) =
                r;
            if *d <= 0.0 {
                issues.push(at.key(*key), "must be a positive duration");
            }
        }
        if recencies.len() > 1 {
            issues.push(
                at.key(recencies[1].0),
                "give one of fade_over, half_life or counts_for",
            );
        }
        let recency = recencies.first().map(|(_, r)| *r);
        let event_only = |issues: &mut Issues, why: &str| {
            for (key, present) in [
                ("max_count", rule.max_count.is_some()),
                ("fade_over", rule.fade_over.is_some()),
                ("half_life", rule.half_life.is_some()),
                ("counts_for", rule.counts_for.is_some()),
            ] {
                if present {
                    issues.push(at.key(key), format!("only meaningful with `event` ({why})"));
                }
            }
        };
        if rule.max_count == Some(0) {
            issues.push(at.key("max_count"), "must be at least 1");
        }
        if let Some(n) = rule.unanswered {
            if kind != RuleKind::Negative {
                issues.push(
                    at.key("unanswered"),
                    "only negative criteria take `unanswered`",
                );
            } else if n == 0 {
                issues.push(at.key("unanswered"), "must be at least 1");
            }
            if rule.event.is_some() || rule.when.is_some() {
                issues.push(
                    at.key("unanswered"),
                    "`unanswered` counts the configured solicitation_events; give no `event` or `when`",
                );
            }
            event_only(issues, "`unanswered` has no event of its own");
            self.unanswered.push(UnansweredRule {
                name,
                points: Points::from_f64(rule.points),
                last: n,
            });
            return;
        }
        match (&rule.event, kind) {
            (None, RuleKind::Behaviour) => {
                issues.push(
                    at.key("event"),
                    "a behaviour rule needs the `event` type it counts",
                );
                if let Some(w) = &rule.when {
                    let _ = w.compile(&at.key("when"), Scope::EVENT, issues);
                }
            }
            (Some(_), RuleKind::Profile) => issues.push(
                at.key("event"),
                "profile rules are about the contact; put event rules under [[scoring.behaviour]]",
            ),
            (None, _) => {
                event_only(issues, "this rule is a condition on the contact");
                let Some(when) = &rule.when else {
                    issues.push(
                        at.clone(),
                        "give a `when` condition (or `event`, or `unanswered`)",
                    );
                    return;
                };
                if let Some(when) = when.compile(&at.key("when"), Scope::PROFILE, issues) {
                    self.profile.push(ProfileRule {
                        name,
                        kind,
                        points: Points::from_f64(rule.points),
                        timed: when.is_time_dependent(),
                        when,
                    });
                }
            }
            (Some(types), _) => {
                if types.0.is_empty() {
                    issues.push(at.key("event"), "name at least one event type");
                }
                let when = match &rule.when {
                    None => None,
                    Some(w) => match w.compile(&at.key("when"), Scope::EVENT, issues) {
                        Some(c) => Some(c),
                        None => return,
                    },
                };
                let index = self.event_rules.len();
                for t in &types.0 {
                    let info = self.types.entry(t.as_str().into()).or_default();
                    if !info.rules.contains(&index) {
                        info.rules.push(index);
                    }
                }
                self.event_rules.push(EventRule {
                    name,
                    kind,
                    points: rule.points,
                    timed: when.as_ref().is_some_and(Condition::is_time_dependent),
                    when,
                    max_count: rule.max_count.unwrap_or(u32::MAX),
                    recency,
                });
            }
        }
    }

    /// Finds, per event type, the rules whose results can be remembered
    /// per value of one event field (the first such rule's field).
    fn remember(&mut self) {
        let mut slot = 0;
        for info in self.types.values_mut() {
            let fields: Vec<Option<&Field>> = info
                .rules
                .iter()
                .map(|&r| {
                    self.event_rules[r]
                        .when
                        .as_ref()
                        .and_then(Condition::event_field)
                })
                .collect();
            let Some(field) = fields.iter().flatten().next().copied() else {
                continue;
            };
            let rules = fields
                .iter()
                .enumerate()
                .filter(|(i, f)| *i < 64 && **f == Some(field))
                .fold(0u64, |bits, (i, _)| bits | 1 << i);
            info.remembered = Some(Remembered {
                field: field.clone(),
                rules,
                slot,
            });
            slot += 1;
        }
        self.remembered_types = slot;
    }

    /// The results of `info`'s remembered rules for `event`, from the
    /// thread's memo or evaluated now; `None` when the field's value is not
    /// a text (the rules are then evaluated one by one).
    fn remembered(&self, info: &TypeInfo, subject: &Subject<'_>, event: &Event) -> Option<u64> {
        let plan = info.remembered.as_ref()?;
        let key = plan.field.event_text(event)?;
        let evaluate = || {
            info.rules
                .iter()
                .enumerate()
                .filter(|(i, _)| plan.rules >> i & 1 == 1)
                .filter(|(_, r)| {
                    self.event_rules[**r]
                        .when
                        .as_ref()
                        .is_none_or(|w| w.eval(subject, Some(event)))
                })
                .fold(0u64, |bits, (i, _)| bits | 1 << i)
        };
        MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            if memo.model != self.id || memo.texts.len() != self.remembered_types {
                memo.model = self.id;
                memo.texts = (0..self.remembered_types)
                    .map(|_| WordMap::default())
                    .collect();
                memo.missing = vec![None; self.remembered_types];
            }
            Some(match key {
                None => *memo.missing[plan.slot].get_or_insert_with(evaluate),
                Some(text) => {
                    let texts = &mut memo.texts[plan.slot];
                    match texts.get(text) {
                        Some(&bits) => bits,
                        None => {
                            if texts.len() >= MEMO_TEXTS {
                                texts.clear();
                            }
                            let bits = evaluate();
                            texts.insert(text.into(), bits);
                            bits
                        }
                    }
                }
            })
        })
    }

    /// The band a score falls in.
    pub fn band(&self, score: Points) -> &Arc<str> {
        let band = self
            .bands
            .iter()
            .find(|b| b.min.is_none_or(|m| score >= m))
            .or(self.bands.last())
            .expect("validation requires at least one band");
        &band.name
    }

    /// Band names, highest first.
    pub fn band_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.bands.iter().map(|b| &b.name)
    }

    /// Scores one contact at `now` from its time-sorted events (events after
    /// `now` are ignored, and bring `next_change_at` to their instant).
    pub fn score(
        &self,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
        now: Timestamp,
    ) -> ScoreCard {
        self.score_card(contact, company, events, now, true)
    }

    /// The same score, parts, band and next change as [`Self::score`],
    /// without the explanation (`contributions` left empty): what a
    /// rescoring pass stores. Building each contribution copies its rule's
    /// shared name, whose reference count both workers of a rebuild would
    /// otherwise bounce between the cores for every rule of every contact.
    pub fn score_unexplained(
        &self,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
        now: Timestamp,
    ) -> ScoreCard {
        self.score_card(contact, company, events, now, false)
    }

    fn score_card(
        &self,
        contact: &Contact,
        company: Option<&Company>,
        events: &[Event],
        now: Timestamp,
        explain: bool,
    ) -> ScoreCard {
        debug_assert!(
            events.windows(2).all(|w| w[0].at <= w[1].at),
            "events must be sorted by time"
        );
        let upto = events.partition_point(|e| e.at <= now);
        let mut next = events.get(upto).map(|e| e.at);
        // A company signal dated later starts counting at its instant.
        for signal in company.map_or(&[][..], |c| &c.signals[..]) {
            if signal.at > now {
                lower(&mut next, signal.at);
            }
        }
        let past = &events[..upto];
        let subject = Subject::new(contact, company, past, now);
        // One allocation: at most one contribution per rule, plus the malus.
        let mut parts = Parts::new(
            explain,
            self.profile.len() + self.event_rules.len() + self.unanswered.len() + 1,
        );

        for rule in self.profile.iter().filter(|r| r.kind == RuleKind::Profile) {
            self.profile_rule(rule, &subject, &mut parts, &mut next);
        }

        // Recency changes, as a delay after `now` (cheaper than instants).
        let mut next_in: Option<chrono::Duration> = None;
        let mut tallies: Vec<Tally> = vec![Tally::default(); self.event_rules.len()];
        let mut last_activity: Option<usize> = None;
        let mut answered = false;
        let mut unanswered: Vec<usize> = Vec::new();
        for (index, event) in past.iter().enumerate().rev() {
            let Some(info) = self.types.get(event.kind.as_str()) else {
                continue;
            };
            if info.activity && last_activity.is_none() {
                last_activity = Some(index);
            }
            if !answered {
                if info.response {
                    answered = true;
                } else if info.solicitation && unanswered.len() < self.max_unanswered {
                    // Too recent to count as ignored: it will at the end of
                    // the response window, unless an answer comes first.
                    let age = now - event.at;
                    if age >= self.response_window {
                        unanswered.push(index);
                    } else {
                        let wait = self.response_window - age;
                        if next_in.is_none_or(|n| wait < n) {
                            next_in = Some(wait);
                        }
                    }
                }
            }
            let mut age = None;
            let mut remembered: Option<Option<u64>> = None;
            for (pos, &r) in info.rules.iter().enumerate() {
                let rule = &self.event_rules[r];
                // Once full, a rule ignores older events for good: they are
                // older than every counted one, so no flip or fade of theirs
                // can bring them in (weights only fall with age).
                if tallies[r].count >= rule.max_count {
                    continue;
                }
                if let Some(when) = &rule.when {
                    if rule.timed {
                        when.next_flip(&subject, Some(event), &mut next);
                    }
                    let known = info
                        .remembered
                        .as_ref()
                        .filter(|p| p.rules >> pos & 1 == 1)
                        .and_then(|_| {
                            *remembered
                                .get_or_insert_with(|| self.remembered(info, &subject, event))
                        });
                    let holds = match known {
                        Some(bits) => bits >> pos & 1 == 1,
                        None => when.eval(&subject, Some(event)),
                    };
                    if !holds {
                        continue;
                    }
                }
                let tally = &mut tallies[r];
                let (weight, change) = match rule.recency {
                    None => (1.0, None),
                    Some(rec) => rec.weight(*age.get_or_insert_with(|| now - event.at)),
                };
                if let Some(c) = change
                    && next_in.is_none_or(|n| c < n)
                {
                    next_in = Some(c);
                }
                if weight > 0.0 {
                    tally.sum += rule.points * weight;
                    tally.count += 1;
                    if explain {
                        tally.events.push(CountedEvent {
                            index,
                            at: event.at,
                            weight,
                        });
                    }
                }
            }
        }
        for kind in [RuleKind::Behaviour, RuleKind::Negative] {
            for (rule, tally) in self.event_rules.iter().zip(tallies.iter_mut()) {
                if rule.kind != kind || tally.count == 0 {
                    continue;
                }
                parts.add(kind, Points::from_f64(tally.sum), || {
                    let mut events = std::mem::take(&mut tally.events);
                    events.reverse();
                    Contribution {
                        rule: rule.name.clone(),
                        kind,
                        points: Points::from_f64(tally.sum),
                        events,
                        decay: rule.recency,
                        months: None,
                    }
                });
            }
            if kind == RuleKind::Negative {
                for rule in self.profile.iter().filter(|r| r.kind == RuleKind::Negative) {
                    self.profile_rule(rule, &subject, &mut parts, &mut next);
                }
                for rule in &self.unanswered {
                    if unanswered.len() >= rule.last as usize {
                        parts.add(kind, rule.points, || {
                            let mut events: Vec<CountedEvent> = unanswered[..rule.last as usize]
                                .iter()
                                .rev()
                                .map(|&i| CountedEvent {
                                    index: i,
                                    at: past[i].at,
                                    weight: 1.0,
                                })
                                .collect();
                            events.sort_by_key(|e| e.index);
                            Contribution {
                                rule: rule.name.clone(),
                                kind,
                                points: rule.points,
                                events,
                                decay: None,
                                months: None,
                            }
                        });
                    }
                }
            }
        }
        if let Some(i) = last_activity {
            self.inactivity(i, past[i].at, now, &mut parts, &mut next);
        }
        if let Some(delay) = next_in {
            lower(&mut next, now + delay);
        }

        let (profile, behaviour, negative, inactivity) = (
            parts.sum(RuleKind::Profile),
            parts.sum(RuleKind::Behaviour),
            parts.sum(RuleKind::Negative),
            parts.sum(RuleKind::Inactivity),
        );
        let score = profile + behaviour + negative + inactivity;
        ScoreCard {
            contact: contact.id.clone(),
            score,
            band: self.band(score).clone(),
            profile,
            behaviour,
            negative,
            inactivity,
            contributions: parts.contributions,
            next_change_at: next,
        }
    }

    fn profile_rule(
        &self,
        rule: &ProfileRule,
        subject: &Subject<'_>,
        out: &mut Parts,
        next: &mut Option<Timestamp>,
    ) {
        if rule.timed {
            rule.when.next_flip(subject, None, next);
        }
        if rule.when.eval(subject, None) {
            out.add(rule.kind, rule.points, || Contribution {
                rule: rule.name.clone(),
                kind: rule.kind,
                points: rule.points,
                events: Vec::new(),
                decay: None,
                months: None,
            });
        }
    }

    fn inactivity(
        &self,
        index: usize,
        last: Timestamp,
        now: Timestamp,
        out: &mut Parts,
        next: &mut Option<Timestamp>,
    ) {
        if self.malus_per_month <= 0.0 {
            return;
        }
        let months = (now - last).num_seconds().max(0) / MONTH;
        let raw = self.malus_per_month * months as f64;
        let capped = self.malus_max.is_some_and(|max| raw >= max);
        let malus = if capped {
            self.malus_max.unwrap_or(raw)
        } else {
            raw
        };
        if !capped {
            lower(next, last + chrono::Duration::seconds((months + 1) * MONTH));
        }
        if months > 0 {
            out.add(RuleKind::Inactivity, -Points::from_f64(malus), || {
                Contribution {
                    rule: self.inactivity_name.clone(),
                    kind: RuleKind::Inactivity,
                    points: -Points::from_f64(malus),
                    events: vec![CountedEvent {
                        index,
                        at: last,
                        weight: 1.0,
                    }],
                    decay: None,
                    months: Some(months),
                }
            });
        }
    }
}

fn days(d: crate::core::config::duration::Duration) -> f64 {
    d.seconds() as f64 / DAY as f64
}
