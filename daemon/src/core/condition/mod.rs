//! The condition language shared by scoring rules, and later by segments,
//! triggers and guard exemptions.
//!
//! A condition is written as a small TOML table a sales-ops person can read:
//!
//! ```toml
//! when = { field = "company.attributes.headcount", gte = 30, lte = 500 }
//! when = { all = [ { field = "tier", eq = "target 2" }, { field = "last.call", older_than = "365d" } ] }
//! ```
//!
//! [`ConditionConfig`] is the plain serde shape (every operator an optional
//! key, so the loader reports unknown keys and positions); it is compiled once
//! at load into a [`Condition`]: field paths resolved to [`Field`] accessors,
//! regexes compiled, attribute paths pre-split. Evaluation does no parsing of
//! the configuration and no name lookup.
//!
//! Fields: contact `id`, `email`, `phone`, `first_name`, `last_name`,
//! `status`, `tier`, `owner`, `timezone`, `company` (its id),
//! `do_not_contact` (list of channels), `consent.<channel>`,
//! `attributes.<name>[.<sub>…]`; company `company.name`,
//! `company.attributes.<name>`, `company.signals` (list of kinds),
//! `company.signal.<kind>` (when it last happened); event rules also
//! `event.type`, `event.channel`, `event.at`, `event.props.<name>`;
//! `last.<event type>` is when the contact last had such an event; deal
//! rules also `deal.id`, `deal.name`, `deal.amount`, `deal.stage`,
//! `deal.attributes.<name>`. Follow-up rules (segments, triggers) also read
//! the contact's standing: `band`, `score`, `call.status` (`open`,
//! `won`, `stopped`, `lost`) and `prospect.status` (`GAGNÉ`, `CHAUD`,
//! `TIÈDE`, `FROID`, `ARRÊTÉ`, `PERDU`, see [`crate::domain::desk`]); a scoring
//! rule cannot read the score it makes.
//!
//! A windowed count tests how many events of a type (optionally matching
//! `where`, a condition on each event) happened in the last `within`:
//!
//! ```toml
//! when = { count = "page_visit", where = { field = "event.props.url", contains = "/produit" }, within = "2d", gte = 4 }
//! ```
//!
//! A contact never called has no `last.call`, so "not called for over a
//! year, or never" reads:
//!
//! ```toml
//! when = { any = [ { field = "last.call", older_than = "365d" }, { field = "last.call", exists = false } ] }
//! ```
//!
//! Semantics worth knowing:
//! - several operators on one field must all hold (`gte` and `lte` make a range);
//! - on a list (`do_not_contact`, `company.signals`, a JSON array attribute)
//!   the test holds when one element satisfies every operator;
//! - a missing field satisfies only `exists = false`;
//! - `contains` is case-insensitive; `eq` and `in` are exact;
//! - numeric operators accept numbers and numeric strings (CSV imports);
//! - `within = "30d"` holds while the instant is less than 30 days old,
//!   `older_than = "365d"` from the moment it is 365 days old; both flip at
//!   exactly `t + d`, which [`Condition::next_flip`] reports.

mod field;
mod literal;

pub use field::Field;
pub use literal::Literal;

use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath};
use crate::core::model::{Company, Contact, Deal, Event, Timestamp};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// A condition as written in the configuration. Exactly one of `field`,
/// `all`, `any` or `not` is given; operators go with `field`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ConditionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<Literal>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_set: Option<Vec<Literal>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionConfig>>,
    /// A windowed count of events of this type (with `within` and numeric
    /// operators on the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    /// With `count`: which events count (a condition on the event).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<Box<ConditionConfig>>,
}

/// Which fields a condition may read: a profile rule has no event, only deal
/// rules see a deal. Checked at load so a misplaced field is an error with a
/// position instead of a rule that silently never matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub event: bool,
    pub deal: bool,
    /// The contact's standing (band, score, call status): follow-up rules.
    pub standing: bool,
}

impl Scope {
    pub const PROFILE: Scope = Scope {
        event: false,
        deal: false,
        standing: false,
    };
    pub const EVENT: Scope = Scope {
        event: true,
        deal: false,
        standing: false,
    };
    pub const DEAL: Scope = Scope {
        event: false,
        deal: true,
        standing: false,
    };
    /// Follow-up segments: profile fields and the standing.
    pub const SEGMENT: Scope = Scope {
        event: false,
        deal: false,
        standing: true,
    };
    /// Follow-up triggers on an event.
    pub const TRIGGER: Scope = Scope {
        event: true,
        deal: false,
        standing: true,
    };
}

/// A compiled condition, cheap to evaluate.
#[derive(Clone, Debug)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test {
        field: Field,
        tests: Vec<Test>,
    },
    /// Events of `kind` (matching `filter`) in `(now - within, now]`,
    /// their number put to `tests`.
    Count {
        kind: Box<str>,
        filter: Option<Box<Condition>>,
        within: chrono::Duration,
        tests: Vec<Test>,
    },
}

/// One compiled operator on a field's value.
#[derive(Clone, Debug)]
pub enum Test {
    Eq(Literal),
    In(Vec<Literal>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    /// Lower-cased needle; matched case-insensitively.
    Contains(String),
    Regex(Regex),
    Exists(bool),
    OlderThan(chrono::Duration),
    Within(chrono::Duration),
}

/// What a condition is evaluated against. `events` is the contact's history
/// sorted by time; events after `now` are ignored (`last.*`). `earlier`
/// holds, sorted by type, the last instant of event types in history that
/// `events` no longer carries (a planner keeps only recent events).
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub contact: &'a Contact,
    pub company: Option<&'a Company>,
    pub events: &'a [Event],
    pub deal: Option<&'a Deal>,
    pub now: Timestamp,
    pub earlier: &'a [(String, Timestamp)],
    pub standing: Standing<'a>,
}

/// Where the contact stands, for follow-up rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standing<'a> {
    pub band: Option<&'a str>,
    pub score: Option<f64>,
    /// `open`, `won`, `stopped` or `lost`.
    pub call: Option<&'a str>,
    /// The prospect status the last scoring pass stored (`GAGNÉ`, `CHAUD`,
    /// `TIÈDE`, `FROID`, `ARRÊTÉ`, `PERDU`).
    pub prospect: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub fn new(
        contact: &'a Contact,
        company: Option<&'a Company>,
        events: &'a [Event],
        now: Timestamp,
    ) -> Self {
        Self {
            contact,
            company,
            events,
            deal: None,
            now,
            earlier: &[],
            standing: Standing::default(),
        }
    }

    /// The same subject, with the contact's standing.
    pub fn with_standing(mut self, standing: Standing<'a>) -> Self {
        self.standing = standing;
        self
    }

    /// The same subject, with the last instants of older history.
    pub fn with_earlier(mut self, earlier: &'a [(String, Timestamp)]) -> Self {
        self.earlier = earlier;
        self
    }
}

/// A field's value as seen by the operators.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Missing,
    Str(&'a str),
    Num(f64),
    Bool(bool),
    Time(Timestamp),
    /// Present but not comparable (a JSON object).
    Present,
}

impl ConditionConfig {
    /// Compiles the condition, reporting every problem at its key path.
    /// Returns `None` when anything was reported.
    pub fn compile(&self, at: &KeyPath, scope: Scope, issues: &mut Issues) -> Option<Condition> {
        let before = issues.0.len();
        let compiled = self.compile_inner(at, scope, issues);
        if issues.0.len() > before {
            None
        } else {
            compiled
        }
    }

    fn has_operator(&self) -> bool {
        self.eq.is_some()
            || self.in_set.is_some()
            || self.gt.is_some()
            || self.gte.is_some()
            || self.lt.is_some()
            || self.lte.is_some()
            || self.contains.is_some()
            || self.regex.is_some()
            || self.exists.is_some()
            || self.older_than.is_some()
            || self.within.is_some()
    }

    fn compile_inner(&self, at: &KeyPath, scope: Scope, issues: &mut Issues) -> Option<Condition> {
        let shapes = [
            self.field.is_some(),
            self.all.is_some(),
            self.any.is_some(),
            self.not.is_some(),
            self.count.is_some(),
        ];
        match shapes.iter().filter(|s| **s).count() {
            0 => {
                issues.push(
                    at.clone(),
                    "a condition needs `field` (with operators), `count`, `all`, `any` or `not`",
                );
                return None;
            }
            1 => {}
            _ => {
                issues.push(
                    at.clone(),
                    "a condition takes only one of `field`, `count`, `all`, `any` or `not` (nest them inside `all`)",
                );
                return None;
            }
        }
        if let Some(kind) = &self.count {
            return self.compile_count(kind, at, scope, issues);
        }
        if self.where_.is_some() {
            issues.push(at.key("where"), "`where` goes with `count`");
            return None;
        }
        if self.field.is_none() && self.has_operator() {
            issues.push(
                at.clone(),
                "operators (eq, in, gte …) go with a `field`, not with all/any/not",
            );
            return None;
        }
        if let Some(list) = &self.all {
            return compile_list(list, &at.key("all"), scope, issues).map(Condition::All);
        }
        if let Some(list) = &self.any {
            return compile_list(list, &at.key("any"), scope, issues).map(Condition::Any);
        }
        if let Some(inner) = &self.not {
            return inner
                .compile_inner(&at.key("not"), scope, issues)
                .map(|c| Condition::Not(Box::new(c)));
        }
        let name = self.field.as_deref().unwrap_or_default();
        let field = match Field::parse(name, scope) {
            Ok(f) => Some(f),
            Err(message) => {
                issues.push(at.key("field"), message);
                None
            }
        };
        if !self.has_operator() {
            issues.push(
                at.clone(),
                format!(
                    "field `{name}` needs an operator: eq, in, gt, gte, lt, lte, contains, regex, exists, older_than or within"
                ),
            );
            return None;
        }
        let tests = self.compile_tests(at, issues);
        Some(Condition::Test {
            field: field?,
            tests,
        })
    }

    /// `{ count = TYPE, where = COND, within = D, gte = N … }`.
    fn compile_count(
        &self,
        kind: &str,
        at: &KeyPath,
        scope: Scope,
        issues: &mut Issues,
    ) -> Option<Condition> {
        if kind.trim().is_empty() {
            issues.push(at.key("count"), "name the event type to count");
        }
        let within = match self.within {
            Some(d) if d.seconds() > 0 => Some(d.0),
            Some(_) => {
                issues.push(at.key("within"), "must be a positive duration");
                None
            }
            None => {
                issues.push(
                    at.clone(),
                    "a count needs `within`, the window it counts over (`2d`)",
                );
                None
            }
        };
        let numeric = self.gt.is_some()
            || self.gte.is_some()
            || self.lt.is_some()
            || self.lte.is_some()
            || self.eq.is_some()
            || self.in_set.is_some();
        if !numeric {
            issues.push(
                at.clone(),
                "a count needs a number to compare with: gte, gt, lte, lt, eq or in",
            );
        }
        for (key, set) in [
            ("contains", self.contains.is_some()),
            ("regex", self.regex.is_some()),
            ("exists", self.exists.is_some()),
            ("older_than", self.older_than.is_some()),
        ] {
            if set {
                issues.push(at.key(key), "does not apply to a count");
            }
        }
        let event_scope = Scope {
            event: true,
            ..scope
        };
        let filter = match &self.where_ {
            Some(w) => Some(Box::new(w.compile_inner(
                &at.key("where"),
                event_scope,
                issues,
            )?)),
            None => None,
        };
        let tests = Self {
            within: None,
            ..self.clone()
        }
        .compile_tests(at, issues);
        Some(Condition::Count {
            kind: kind.trim().into(),
            filter,
            within: within?,
            tests,
        })
    }

    fn compile_tests(&self, at: &KeyPath, issues: &mut Issues) -> Vec<Test> {
        let mut tests = Vec::new();
        if let Some(v) = &self.eq {
            tests.push(Test::Eq(v.clone()));
        }
        if let Some(set) = &self.in_set {
            if set.is_empty() {
                issues.push(at.key("in"), "an empty set never matches; list values");
            }
            tests.push(Test::In(set.clone()));
        }
        for (key, value, make) in [
            ("gt", self.gt, Test::Gt as fn(f64) -> Test),
            ("gte", self.gte, Test::Gte),
            ("lt", self.lt, Test::Lt),
            ("lte", self.lte, Test::Lte),
        ] {
            if let Some(v) = value {
                if v.is_finite() {
                    tests.push(make(v));
                } else {
                    issues.push(at.key(key), "must be a finite number");
                }
            }
        }
        if self.gt.is_some() && self.gte.is_some() {
            issues.push(at.key("gte"), "give either `gt` or `gte`, not both");
        }
        if self.lt.is_some() && self.lte.is_some() {
            issues.push(at.key("lte"), "give either `lt` or `lte`, not both");
        }
        if let Some(needle) = &self.contains {
            if needle.is_empty() {
                issues.push(at.key("contains"), "an empty text matches everything");
            }
            tests.push(Test::Contains(needle.to_lowercase()));
        }
        if let Some(pattern) = &self.regex {
            match Regex::new(pattern) {
                Ok(re) => tests.push(Test::Regex(re)),
                Err(e) => issues.push(at.key("regex"), format!("invalid regular expression: {e}")),
            }
        }
        if let Some(e) = self.exists {
            tests.push(Test::Exists(e));
        }
        for (key, value, make) in [
            (
                "older_than",
                self.older_than,
                Test::OlderThan as fn(chrono::Duration) -> Test,
            ),
            ("within", self.within, Test::Within),
        ] {
            if let Some(d) = value {
                if d.seconds() > 0 {
                    tests.push(make(d.0));
                } else {
                    issues.push(at.key(key), "must be a positive duration");
                }
            }
        }
        tests
    }
}

fn compile_list(
    list: &[ConditionConfig],
    at: &KeyPath,
    scope: Scope,
    issues: &mut Issues,
) -> Option<Vec<Condition>> {
    if list.is_empty() {
        issues.push(at.clone(), "list at least one condition");
        return None;
    }
    let compiled: Vec<Option<Condition>> = list
        .iter()
        .enumerate()
        .map(|(i, c)| c.compile_inner(&at.index(i), scope, issues))
        .collect();
    compiled.into_iter().collect()
}

impl Condition {
    /// Compiles a condition written in TOML; for tests and tools that build
    /// conditions outside the configuration file.
    pub fn from_toml(text: &str, scope: Scope) -> Result<Self, String> {
        let config: ConditionConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut issues = Issues::default();
        config
            .compile(&KeyPath::root(), scope, &mut issues)
            .ok_or_else(|| {
                issues
                    .0
                    .iter()
                    .map(|(p, m)| format!("{p}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    }

    /// The event types of the `last.*` fields it reads, added to `out`.
    pub fn last_kinds(&self, out: &mut std::collections::BTreeSet<String>) {
        match self {
            Condition::All(list) | Condition::Any(list) => {
                list.iter().for_each(|c| c.last_kinds(out));
            }
            Condition::Not(c) => c.last_kinds(out),
            Condition::Test {
                field: Field::Last(kind),
                ..
            } => {
                out.insert(kind.to_string());
            }
            Condition::Count { filter, .. } => {
                if let Some(f) = filter {
                    f.last_kinds(out);
                }
            }
            Condition::Test { .. } => {}
        }
    }

    /// The longest window its counts look back over, if any: a planner
    /// must read that much recent history.
    pub fn count_window(&self) -> Option<chrono::Duration> {
        match self {
            Condition::All(list) | Condition::Any(list) => {
                list.iter().filter_map(Condition::count_window).max()
            }
            Condition::Not(c) => c.count_window(),
            Condition::Count { within, filter, .. } => Some(
                (*within).max(
                    filter
                        .as_ref()
                        .and_then(|f| f.count_window())
                        .unwrap_or_default(),
                ),
            ),
            Condition::Test { .. } => None,
        }
    }

    /// How many events of `kind` matching `filter` happened in
    /// `(now - within, now]`, and the oldest of them.
    fn counted(
        kind: &str,
        filter: Option<&Condition>,
        within: chrono::Duration,
        subject: &Subject<'_>,
    ) -> (usize, Option<Timestamp>) {
        let now = subject.now;
        let upto = subject.events.partition_point(|e| e.at <= now);
        let from = subject.events[..upto].partition_point(|e| e.at <= now - within);
        let mut n = 0;
        let mut oldest = None;
        for e in &subject.events[from..upto] {
            if *e.kind == *kind && filter.is_none_or(|f| f.eval(subject, Some(e))) {
                n += 1;
                oldest.get_or_insert(e.at);
            }
        }
        (n, oldest)
    }

    /// Whether the condition holds for `subject` (and `event`, for event rules).
    pub fn eval(&self, subject: &Subject<'_>, event: Option<&Event>) -> bool {
        match self {
            Condition::All(list) => list.iter().all(|c| c.eval(subject, event)),
            Condition::Any(list) => list.iter().any(|c| c.eval(subject, event)),
            Condition::Not(c) => !c.eval(subject, event),
            Condition::Test { field, tests } => field.any_value(subject, event, &mut |v| {
                tests.iter().all(|t| t.matches(v, subject.now))
            }),
            Condition::Count {
                kind,
                filter,
                within,
                tests,
            } => {
                let (n, _) = Self::counted(kind, filter.as_deref(), *within, subject);
                #[allow(clippy::cast_precision_loss)]
                let v = Val::Num(n as f64);
                tests.iter().all(|t| t.matches(v, subject.now))
            }
        }
    }

    /// Lowers `next` to the earliest instant after `subject.now` at which a
    /// relative-date test (`within`, `older_than`) flips, so that a result
    /// cached at `now` is known valid until then. Conservative: it may name
    /// an instant at which the whole condition keeps its value.
    pub fn next_flip(
        &self,
        subject: &Subject<'_>,
        event: Option<&Event>,
        next: &mut Option<Timestamp>,
    ) {
        match self {
            Condition::All(list) | Condition::Any(list) => {
                for c in list {
                    c.next_flip(subject, event, next);
                }
            }
            Condition::Not(c) => c.next_flip(subject, event, next),
            Condition::Count {
                kind,
                filter,
                within,
                ..
            } => {
                // Each counted event leaves the window at its instant plus
                // `within`; the oldest leaves first.
                if let (_, Some(oldest)) = Self::counted(kind, filter.as_deref(), *within, subject)
                {
                    lower(next, oldest + *within);
                }
                if let Some(f) = filter.as_deref().filter(|f| f.is_time_dependent()) {
                    let upto = subject.events.partition_point(|e| e.at <= subject.now);
                    for e in &subject.events[..upto] {
                        f.next_flip(subject, Some(e), next);
                    }
                }
            }
            Condition::Test { field, tests } => {
                let dated: Vec<chrono::Duration> = tests
                    .iter()
                    .filter_map(|t| match t {
                        Test::OlderThan(d) | Test::Within(d) => Some(*d),
                        _ => None,
                    })
                    .collect();
                if dated.is_empty() {
                    return;
                }
                field.any_value(subject, event, &mut |v| {
                    if let Some(t) = v.as_time() {
                        for d in &dated {
                            let flip = t + *d;
                            if flip > subject.now {
                                lower(next, flip);
                            }
                        }
                    }
                    false
                });
            }
        }
    }

    /// The one field this condition reads when it reads the event alone
    /// (type, channel or a prop) and not the time: its result is then a
    /// function of that field's value, which a caller may remember per
    /// value instead of evaluating again for every event.
    pub fn event_field(&self) -> Option<&Field> {
        fn walk<'a>(c: &'a Condition, seen: &mut Option<&'a Field>) -> bool {
            match c {
                Condition::All(list) | Condition::Any(list) => list.iter().all(|c| walk(c, seen)),
                Condition::Not(c) => walk(c, seen),
                Condition::Count { .. } => false,
                Condition::Test { field, tests } => {
                    field.is_event_value()
                        && !tests
                            .iter()
                            .any(|t| matches!(t, Test::OlderThan(_) | Test::Within(_)))
                        && *seen.get_or_insert(field) == field
                }
            }
        }
        let mut seen = None;
        if walk(self, &mut seen) { seen } else { None }
    }

    /// Whether evaluating this condition may need [`Condition::next_flip`]:
    /// lets callers skip the walk for the common, time-independent rules.
    pub fn is_time_dependent(&self) -> bool {
        match self {
            Condition::All(list) | Condition::Any(list) => {
                list.iter().any(Condition::is_time_dependent)
            }
            Condition::Not(c) => c.is_time_dependent(),
            Condition::Count { .. } => true,
            Condition::Test { tests, .. } => tests
                .iter()
                .any(|t| matches!(t, Test::OlderThan(_) | Test::Within(_))),
        }
    }
}

/// `next = min(next, at)`.
pub fn lower(next: &mut Option<Timestamp>, at: Timestamp) {
    if next.is_none_or(|n| at < n) {
        *next = Some(at);
    }
}

impl Val<'_> {
    fn as_num(self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(n),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn as_time(self) -> Option<Timestamp> {
        match self {
            Val::Time(t) => Some(t),
            Val::Str(s) => parse_time(s),
            _ => None,
        }
    }
}

/// Imported dates come as RFC 3339 or as plain `YYYY-MM-DD` (midnight UTC).
fn parse_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

impl Test {
    fn matches(&self, v: Val<'_>, now: Timestamp) -> bool {
        match self {
            Test::Exists(want) => !matches!(v, Val::Missing) == *want,
            _ if matches!(v, Val::Missing) => false,
            Test::Eq(lit) => lit.matches(v),
            Test::In(set) => set.iter().any(|l| l.matches(v)),
            Test::Gt(x) => v.as_num().is_some_and(|n| n > *x),
            Test::Gte(x) => v.as_num().is_some_and(|n| n >= *x),
            Test::Lt(x) => v.as_num().is_some_and(|n| n < *x),
            Test::Lte(x) => v.as_num().is_some_and(|n| n <= *x),
            Test::Contains(needle) => match v {
                Val::Str(s) => contains_ci(s, needle),
                _ => false,
            },
            Test::Regex(re) => match v {
                Val::Str(s) => re.is_match(s),
                _ => false,
            },
            Test::OlderThan(d) => v.as_time().is_some_and(|t| now >= t + *d),
            Test::Within(d) => v.as_time().is_some_and(|t| now < t + *d),
        }
    }
}

/// Case-insensitive `contains` with an already lower-cased needle; avoids
/// allocating for ASCII haystacks (URLs, titles).
fn contains_ci(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

#[cfg(test)]
mod tests;
