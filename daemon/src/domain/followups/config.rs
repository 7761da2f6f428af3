//! The `[followups]` section: nurture sequences, opportunistic triggers,
//! call outcomes and arbitration. Kept as written; [`FollowupsConfig::compile`]
//! turns it into [`CompiledFollowups`], and `validate` runs that same
//! compilation so every mistake is reported at load with its position.

use super::calls::CallOutcomes;
pub use super::calls::CallsConfig;
use crate::core::condition::{Condition, ConditionConfig, Scope, Subject};
use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath, Validate};
use crate::core::model::{Event, FollowUpKind};
pub use crate::domain::fatigue::config::BudgetConfig;
use crate::domain::fatigue::config::Priorities;
use crate::domain::scoring::changes::ChangeKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FollowupsConfig {
    /// Systematic sequences, one per segment.
    pub nurture: Vec<NurtureConfig>,
    /// Opportunistic reactions to events and score changes.
    pub triggers: Vec<TriggerConfig>,
    pub calls: CallsConfig,
    pub arbitration: ArbitrationConfig,
}

/// A nurture sequence: who enters, who leaves, what is sent when.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NurtureConfig {
    /// Unique among nurture sequences and triggers: part of the outbox key.
    pub name: String,
    /// Who the sequence is for (profile fields).
    pub segment: ConditionConfig,
    /// Extra condition to enter; checked only while not yet enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrol: Option<ConditionConfig>,
    /// Score bands that may enter (empty: any band).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<String>,
    /// Leave the sequence when this holds …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ConditionConfig>,
    /// … or when the contact reaches one of these bands (hot: sales take over).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_bands: Vec<String>,
    /// Overrides the systematic priority for every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    pub steps: Vec<StepConfig>,
}

/// What a step's delay counts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepFrom {
    #[default]
    Enrolment,
    Previous,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StepConfig {
    /// Delay from enrolment (or from the previous step with `from = "previous"`).
    #[serde(default = "zero")]
    pub after: Duration,
    #[serde(default)]
    pub from: StepFrom,
    pub channel: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Transactional (a confirmation, an acknowledgment): see [`Exemption`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub exempt: bool,
    /// Exempt only when this holds for the contact at planning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt_when: Option<ConditionConfig>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn zero() -> Duration {
    Duration(chrono::Duration::zero())
}

/// A score change that fires a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOn {
    BandUp,
    BandDown,
    JumpUp,
    JumpDown,
}

impl ChangeOn {
    pub fn matches(self, kind: ChangeKind) -> bool {
        matches!(
            (self, kind),
            (ChangeOn::BandUp, ChangeKind::BandUp)
                | (ChangeOn::BandDown, ChangeKind::BandDown)
                | (ChangeOn::JumpUp, ChangeKind::JumpUp)
                | (ChangeOn::JumpDown, ChangeKind::JumpDown)
        )
    }
}

/// An opportunistic trigger: an event (with a condition on it) or a score
/// change calls for an action.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TriggerConfig {
    pub name: String,
    /// Event types that fire the trigger; exactly one of `event`, `change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<crate::domain::scoring::config::EventTypes>,
    /// Condition on the event (and the contact): `event.props.url` …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<ConditionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeOn>,
    /// Band changes only: the band reached (`hot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_band: Option<String>,
    /// Who may be triggered (profile fields); everyone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<ConditionConfig>,
    /// Only signals this recent fire: an old click found late is no signal.
    #[serde(default = "default_lookback")]
    pub lookback: Duration,
    /// At most one action per contact within this period.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
    pub action: ActionConfig,
    #[serde(default = "opportunistic")]
    pub kind: FollowUpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Transactional (an unsubscribe acknowledgment): see [`Exemption`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub exempt: bool,
    /// Exempt only when this holds (for the contact and, on event
    /// triggers, the event that fired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt_when: Option<ConditionConfig>,
}

fn default_lookback() -> Duration {
    Duration(chrono::Duration::days(2))
}

fn default_cooldown() -> Duration {
    Duration(chrono::Duration::days(7))
}

fn opportunistic() -> FollowUpKind {
    FollowUpKind::Opportunistic
}

/// What a trigger does: a send on a channel with a template (a call task
/// for the owner, an email, a webhook), due within `within` of the signal.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ActionConfig {
    pub channel: String,
    pub template: String,
    /// The action is due at the signal and must be done within this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
}

/// How colliding follow-ups of one contact are ranked and deferred.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ArbitrationConfig {
    /// Follow-ups due within this long of each other are arbitrated together.
    pub window: Duration,
    /// A follow-up deferred beyond this long after it was first planned is
    /// dropped.
    pub max_deferral: Duration,
    /// Default priority per kind; absent, `[fatigue.priorities]` (see
    /// [`CompiledFollowups::from_config`]) so that the guard's levels and
    /// the ranking agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<Priorities>,
    /// At most `count` non-exempt solicitations per contact per `window`
    /// of calendar days in the contact's time zone, whatever its fatigue:
    /// the guard enforces it when planning and again when claiming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
}

impl Default for ArbitrationConfig {
    fn default() -> Self {
        Self {
            window: Duration(chrono::Duration::days(1)),
            max_deferral: Duration(chrono::Duration::days(7)),
            priorities: None,
            budget: None,
        }
    }
}

/// A configuration built in code is invalid (file errors come with positions
/// from the loader instead).
#[derive(Debug, thiserror::Error)]
#[error("invalid [followups]: {}", .0.join("; "))]
pub struct FollowupsError(pub Vec<String>);

impl FollowupsError {
    pub(crate) fn from_issues(issues: &Issues) -> Self {
        Self(issues.0.iter().map(|(p, m)| format!("{p}: {m}")).collect())
    }
}

/// A compiled nurture sequence.
#[derive(Clone, Debug)]
pub struct Nurture {
    pub name: String,
    pub segment: Condition,
    pub enrol: Option<Condition>,
    pub bands: Vec<String>,
    pub exit: Option<Condition>,
    pub exit_bands: Vec<String>,
    pub priority: Option<u32>,
    pub steps: Vec<Step>,
}

/// A compiled nurture step.
#[derive(Clone, Debug)]
pub struct Step {
    pub after: Duration,
    pub from: StepFrom,
    pub channel: String,
    pub template: String,
    pub priority: Option<u32>,
    pub exempt: Exemption,
}

/// Whether a follow-up is exempt: transactional sends (a confirmation, an
/// unsubscribe acknowledgment) are no solicitation. The guard lets them
/// pass fatigue levels, caps and the arbitration budget (not the send
/// windows), and once sent they count toward neither caps nor budget.
#[derive(Clone, Debug, Default)]
pub enum Exemption {
    #[default]
    No,
    Always,
    /// When the condition holds at planning.
    When(Condition),
}

impl Exemption {
    fn compile(
        exempt: bool,
        when: &Option<ConditionConfig>,
        at: &KeyPath,
        scope: Scope,
        issues: &mut Issues,
    ) -> Option<Self> {
        match (exempt, when) {
            (false, None) => Some(Exemption::No),
            (true, None) => Some(Exemption::Always),
            (true, Some(_)) => {
                issues.push(
                    at.key("exempt_when"),
                    "`exempt = true` already exempts every send: give one of the two",
                );
                None
            }
            (false, Some(c)) => c
                .compile(&at.key("exempt_when"), scope, issues)
                .map(Exemption::When),
        }
    }

    /// Whether the send planned for `subject` (fired by `event`) is exempt.
    pub fn holds(&self, subject: &Subject<'_>, event: Option<&Event>) -> bool {
        match self {
            Exemption::No => false,
            Exemption::Always => true,
            Exemption::When(c) => c.eval(subject, event),
        }
    }

    fn last_kinds(&self, out: &mut BTreeSet<String>) {
        if let Exemption::When(c) = self {
            c.last_kinds(out);
        }
    }

    fn condition(&self) -> Option<&Condition> {
        match self {
            Exemption::When(c) => Some(c),
            _ => None,
        }
    }
}

/// The follow-up name of call-backs (part of their outbox key).
pub const CALLBACK: &str = "callback";

/// Call-backs, compiled: codes upper-cased.
#[derive(Clone, Debug)]
pub struct Callback {
    pub codes: BTreeMap<String, Option<chrono::Duration>>,
    pub channel: String,
    pub template: String,
    pub priority: Option<u32>,
}

/// What fires a compiled trigger.
#[derive(Clone, Debug)]
pub enum TriggerOn {
    Event {
        types: Vec<String>,
        when: Option<Condition>,
    },
    Change {
        on: ChangeOn,
        to_band: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct Trigger {
    pub name: String,
    pub on: TriggerOn,
    pub segment: Option<Condition>,
    pub lookback: chrono::Duration,
    pub cooldown: chrono::Duration,
    pub action: ActionConfig,
    pub kind: FollowUpKind,
    pub priority: Option<u32>,
    pub exempt: Exemption,
}

/// `[followups]` compiled: conditions compiled once, shared by every plan.
#[derive(Clone, Debug)]
pub struct CompiledFollowups {
    pub callback: Option<Callback>,
    pub nurture: Vec<Nurture>,
    pub triggers: Vec<Trigger>,
    pub calls: CallOutcomes,
    pub call_channels: Vec<String>,
    pub arbitration: ArbitrationConfig,
    /// The default priority of each kind (opportunistic > event > systematic).
    pub priorities: Priorities,
}

impl CompiledFollowups {
    /// The event types of the `last.*` fields its conditions read.
    pub fn last_kinds(&self, out: &mut BTreeSet<String>) {
        for n in &self.nurture {
            n.segment.last_kinds(out);
            for c in [&n.enrol, &n.exit].into_iter().flatten() {
                c.last_kinds(out);
            }
            for step in &n.steps {
                step.exempt.last_kinds(out);
            }
        }
        for t in &self.triggers {
            t.exempt.last_kinds(out);
            if let Some(c) = &t.segment {
                c.last_kinds(out);
            }
            if let TriggerOn::Event { when: Some(c), .. } = &t.on {
                c.last_kinds(out);
            }
        }
    }

    /// The longest window a `count` of its conditions looks back over.
    pub fn count_window(&self) -> Option<chrono::Duration> {
        let mut all: Vec<&Condition> = Vec::new();
        for n in &self.nurture {
            all.push(&n.segment);
            all.extend(n.enrol.iter().chain(n.exit.iter()));
            all.extend(n.steps.iter().filter_map(|s| s.exempt.condition()));
        }
        for t in &self.triggers {
            all.extend(t.segment.iter().chain(t.exempt.condition()));
            if let TriggerOn::Event { when: Some(c), .. } = &t.on {
                all.push(c);
            }
        }
        all.into_iter().filter_map(Condition::count_window).max()
    }

    /// The longest look-back of the triggers (zero without triggers).
    pub fn widest_lookback(&self) -> chrono::Duration {
        self.triggers
            .iter()
            .map(|t| t.lookback)
            .max()
            .unwrap_or_else(chrono::Duration::zero)
    }

    /// How far back a call may ask for a call-back (the triggers' default
    /// look-back).
    pub fn callback_lookback(&self) -> chrono::Duration {
        default_lookback().0
    }
}

impl FollowupsConfig {
    /// How far before a signal a trigger still looks at what it sent: its
    /// look-back plus its cool-down, the widest of the triggers (and of
    /// the call-backs' look-back). A delivered trigger row older than this
    /// (measured from the pass's look-back start) changes no plan.
    pub fn widest_reach(&self) -> chrono::Duration {
        self.triggers
            .iter()
            .map(|t| t.lookback.0 + t.cooldown.0)
            .chain([default_lookback().0])
            .max()
            .unwrap_or_else(chrono::Duration::zero)
    }

    /// Compiles a configuration built in code.
    pub fn compile(&self) -> Result<CompiledFollowups, FollowupsError> {
        let mut issues = Issues::default();
        let compiled = self.compile_at(&KeyPath::root().key("followups"), &mut issues);
        match compiled {
            Some(c) if issues.is_empty() => Ok(c),
            _ => Err(FollowupsError::from_issues(&issues)),
        }
    }

    /// Compiles, reporting every problem at its key path under `at`.
    pub fn compile_at(&self, at: &KeyPath, issues: &mut Issues) -> Option<CompiledFollowups> {
        let before = issues.0.len();
        let mut names = BTreeSet::new();
        let mut unique = |name: &str, at: KeyPath, issues: &mut Issues| {
            if name.trim().is_empty() {
                issues.push(at, "a name is required");
            } else if !names.insert(name.to_string()) {
                issues.push(at, format!("follow-up `{name}` is defined twice"));
            }
        };
        let mut nurture = Vec::new();
        for (i, n) in self.nurture.iter().enumerate() {
            let at = at.key("nurture").index(i);
            unique(&n.name, at.key("name"), issues);
            let segment = n
                .segment
                .compile(&at.key("segment"), Scope::SEGMENT, issues);
            let enrol = compile_opt(&n.enrol, &at.key("enrol"), Scope::SEGMENT, issues);
            let exit = compile_opt(&n.exit, &at.key("exit"), Scope::SEGMENT, issues);
            if n.steps.is_empty() {
                issues.push(at.key("steps"), "list at least one step");
            }
            let mut steps = Vec::with_capacity(n.steps.len());
            for (j, s) in n.steps.iter().enumerate() {
                let at = at.key("steps").index(j);
                if s.after.seconds() < 0 {
                    issues.push(at.key("after"), "must not be negative");
                }
                if j == 0 && s.from == StepFrom::Previous {
                    issues.push(at.key("from"), "the first step has no previous step");
                }
                let exempt =
                    Exemption::compile(s.exempt, &s.exempt_when, &at, Scope::SEGMENT, issues);
                steps.extend(exempt.map(|exempt| Step {
                    after: s.after,
                    from: s.from,
                    channel: s.channel.clone(),
                    template: s.template.clone(),
                    priority: s.priority,
                    exempt,
                }));
            }
            if let (Some(segment), Some(enrol), Some(exit)) = (segment, enrol, exit)
                && steps.len() == n.steps.len()
            {
                nurture.push(Nurture {
                    name: n.name.clone(),
                    segment,
                    enrol,
                    bands: n.bands.clone(),
                    exit,
                    exit_bands: n.exit_bands.clone(),
                    priority: n.priority,
                    steps,
                });
            }
        }
        let mut triggers = Vec::new();
        for (i, t) in self.triggers.iter().enumerate() {
            let at = at.key("triggers").index(i);
            unique(&t.name, at.key("name"), issues);
            let on = match (&t.event, t.change) {
                (Some(types), None) => {
                    if types.0.is_empty() {
                        issues.push(at.key("event"), "list at least one event type");
                    }
                    if t.to_band.is_some() {
                        issues.push(at.key("to_band"), "goes with `change`, not `event`");
                    }
                    compile_opt(&t.when, &at.key("when"), Scope::TRIGGER, issues).map(|when| {
                        TriggerOn::Event {
                            types: types.0.clone(),
                            when,
                        }
                    })
                }
                (None, Some(on)) => {
                    if t.when.is_some() {
                        issues.push(
                            at.key("when"),
                            "a score change has no event: use `segment` for the contact",
                        );
                    }
                    if t.to_band.is_some() && !matches!(on, ChangeOn::BandUp | ChangeOn::BandDown) {
                        issues.push(at.key("to_band"), "goes with band_up or band_down");
                    }
                    Some(TriggerOn::Change {
                        on,
                        to_band: t.to_band.clone(),
                    })
                }
                _ => {
                    issues.push(
                        at.clone(),
                        "a trigger takes exactly one of `event` or `change`",
                    );
                    None
                }
            };
            let segment = compile_opt(&t.segment, &at.key("segment"), Scope::SEGMENT, issues);
            for (key, d) in [("lookback", t.lookback), ("cooldown", t.cooldown)] {
                if d.seconds() <= 0 {
                    issues.push(at.key(key), "must be a positive duration");
                }
            }
            if t.action.within.is_some_and(|d| d.seconds() <= 0) {
                issues.push(
                    at.key("action").key("within"),
                    "must be a positive duration",
                );
            }
            let scope = match on {
                Some(TriggerOn::Event { .. }) => Scope::TRIGGER,
                _ => Scope::SEGMENT,
            };
            let exempt = Exemption::compile(t.exempt, &t.exempt_when, &at, scope, issues);
            if let (Some(on), Some(segment), Some(exempt)) = (on, segment, exempt) {
                triggers.push(Trigger {
                    name: t.name.clone(),
                    on,
                    segment,
                    lookback: t.lookback.0,
                    cooldown: t.cooldown.0,
                    action: t.action.clone(),
                    kind: t.kind,
                    priority: t.priority,
                    exempt,
                });
            }
        }
        let calls = self.calls.compile(&at.key("calls"), issues);
        let callback = self.compile_callback(&at.key("calls"), issues);
        let arb = at.key("arbitration");
        for (key, d) in [
            ("window", self.arbitration.window),
            ("max_deferral", self.arbitration.max_deferral),
        ] {
            if d.seconds() <= 0 {
                issues.push(arb.key(key), "must be a positive duration");
            }
        }
        if let Some(b) = &self.arbitration.budget {
            let at = arb.key("budget");
            if b.count == 0 {
                issues.push(at.key("count"), "must be at least 1");
            }
            let secs = b.window.seconds();
            if secs <= 0 || secs % 86_400 != 0 {
                issues.push(at.key("window"), "must be a whole number of days (`1d`)");
            }
        }
        (issues.0.len() == before).then(|| CompiledFollowups {
            callback,
            nurture,
            triggers,
            calls,
            call_channels: self.calls.channels.clone(),
            arbitration: self.arbitration.clone(),
            priorities: self.arbitration.priorities.unwrap_or_default(),
        })
    }

    fn compile_callback(&self, at: &KeyPath, issues: &mut Issues) -> Option<Callback> {
        let c = &self.calls;
        let code = |s: &str| s.trim().to_uppercase();
        let mut codes = BTreeMap::new();
        for (i, k) in c.callback.iter().enumerate() {
            if code(k).is_empty() {
                issues.push(
                    at.key("callback").index(i),
                    "an outcome code cannot be empty",
                );
            }
            codes.insert(code(k), None);
        }
        for (k, d) in &c.callback_delay {
            if d.seconds() <= 0 {
                issues.push(
                    at.key("callback_delay").key(k),
                    "must be a positive duration",
                );
            }
            match codes.get_mut(&code(k)) {
                Some(slot) => *slot = Some(d.0),
                None => issues.push(
                    at.key("callback_delay").key(k),
                    format!("`{k}` is not listed in `callback`"),
                ),
            }
        }
        match (&c.callback_channel, &c.callback_template) {
            (Some(channel), Some(template)) if !codes.is_empty() => Some(Callback {
                codes,
                channel: channel.clone(),
                template: template.clone(),
                priority: c.callback_priority,
            }),
            (Some(_), None) => {
                issues.push(at.key("callback_template"), "give the call task's template");
                None
            }
            (None, Some(_)) => {
                issues.push(at.key("callback_channel"), "give the call task's channel");
                None
            }
            _ => None,
        }
    }

    /// Checks that every channel, template and band named exists; `Config`
    /// calls it with its own sections.
    pub fn check_references<'a>(
        &self,
        channels: &BTreeSet<&'a str>,
        templates: &BTreeMap<&'a str, &'a str>,
        bands: &BTreeSet<&'a str>,
        at: &KeyPath,
        issues: &mut Issues,
    ) {
        let send = |channel: &str, template: &str, at: KeyPath, issues: &mut Issues| {
            if !channels.contains(channel) {
                issues.push(
                    at.key("channel"),
                    format!(
                        "unknown channel `{channel}` (configured: {})",
                        join(channels)
                    ),
                );
            }
            match templates.get(template) {
                None => issues.push(
                    at.key("template"),
                    format!(
                        "unknown template `{template}` (configured: {})",
                        join(&templates.keys().copied().collect())
                    ),
                ),
                Some(own) if *own != channel && channels.contains(channel) => issues.push(
                    at.key("template"),
                    format!("template `{template}` is for channel `{own}`, not `{channel}`"),
                ),
                Some(_) => {}
            }
        };
        let band = |name: &str, at: KeyPath, issues: &mut Issues| {
            if !bands.contains(name) {
                issues.push(
                    at,
                    format!("unknown band `{name}` (configured: {})", join(bands)),
                );
            }
        };
        for (i, n) in self.nurture.iter().enumerate() {
            let at = at.key("nurture").index(i);
            for (j, s) in n.steps.iter().enumerate() {
                send(&s.channel, &s.template, at.key("steps").index(j), issues);
            }
            for (j, b) in n.bands.iter().enumerate() {
                band(b, at.key("bands").index(j), issues);
            }
            for (j, b) in n.exit_bands.iter().enumerate() {
                band(b, at.key("exit_bands").index(j), issues);
            }
        }
        for (i, t) in self.triggers.iter().enumerate() {
            let at = at.key("triggers").index(i);
            send(
                &t.action.channel,
                &t.action.template,
                at.key("action"),
                issues,
            );
            if let Some(b) = &t.to_band {
                band(b, at.key("to_band"), issues);
            }
        }
        if let Some(c) = self
            .arbitration
            .budget
            .as_ref()
            .and_then(|b| b.channel.as_ref())
            && !channels.contains(c.as_str())
        {
            issues.push(
                at.key("arbitration").key("budget").key("channel"),
                format!("unknown channel `{c}` (configured: {})", join(channels)),
            );
        }
        if let (Some(channel), Some(template)) =
            (&self.calls.callback_channel, &self.calls.callback_template)
        {
            let at = at.key("calls");
            if !channels.contains(channel.as_str()) {
                issues.push(
                    at.key("callback_channel"),
                    format!(
                        "unknown channel `{channel}` (configured: {})",
                        join(channels)
                    ),
                );
            } else if templates.get(template.as_str()).is_none() {
                issues.push(
                    at.key("callback_template"),
                    format!("unknown template `{template}`"),
                );
            }
        }
        for (i, c) in self.calls.channels.iter().enumerate() {
            if !channels.contains(c.as_str()) {
                issues.push(
                    at.key("calls").key("channels").index(i),
                    format!("unknown channel `{c}` (configured: {})", join(channels)),
                );
            }
        }
    }
}

impl Validate for FollowupsConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        let _ = self.compile_at(at, issues);
    }
}

fn compile_opt(
    c: &Option<ConditionConfig>,
    at: &KeyPath,
    scope: Scope,
    issues: &mut Issues,
) -> Option<Option<Condition>> {
    match c {
        None => Some(None),
        Some(c) => c.compile(at, scope, issues).map(Some),
    }
}

fn join(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.iter().copied().collect::<Vec<_>>().join(", ")
    }
}
