//! The decision to allow, defer or block one proposed follow-up.
//!
//! Rules, in order: do-not-contact and consent block outright; then fatigue
//! level, caps and send window each give the earliest instant at which they
//! pass. Fatigue and caps only get better as time passes (no new event), a
//! send window opens and closes, so the earliest instant where all pass is a
//! fixed point: move to the latest of the rules' instants, re-check, repeat.
//! Exempt (transactional) follow-ups skip fatigue levels and caps but still
//! need consent and the send window.

use super::config::{FatigueConfig, MAX_CHANNELS, Priorities, RECENT_SENDS, to_milli};
use super::points::{DecayRate, FatiguePoints, UNITS_PER_MILLI, instant, secs};
use super::state::ContactState;
use super::window::{Window, Windows, day_start, local, local_days};
use crate::core::config::duration::Duration;
use crate::core::config::sections::{ChannelConfig, ConsentDefault};
use crate::core::model::Timestamp;
use chrono::{Days, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

/// A channel or level name cited by reasons: interned once for the
/// process, so that copying one into a reason costs nothing (no reference
/// count to move on every decision). Names come from the configuration, so
/// the interned set stays as small as the names ever configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Name(&'static str);

impl Name {
    pub fn as_str(&self) -> &str {
        self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let mut names = NAMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = names.iter().find(|n| **n == s) {
            return Self(n);
        }
        let n: &'static str = Box::leak(s.to_owned().into_boxed_str());
        names.push(n);
        Self(n)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// A channel of the guard, by position: cheap to store and compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub u8);

impl ChannelId {
    pub(crate) fn bit(self) -> u32 {
        1u32.checked_shl(u32::from(self.0)).unwrap_or(0)
    }
}

pub use crate::core::model::FollowUpKind;

impl Priorities {
    pub fn of(&self, kind: FollowUpKind) -> u32 {
        match kind {
            FollowUpKind::Systematic => self.systematic,
            FollowUpKind::Event => self.event,
            FollowUpKind::Opportunistic => self.opportunistic,
        }
    }
}

/// A follow-up put to the guard for one contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub channel: ChannelId,
    pub kind: FollowUpKind,
    /// Overrides the kind's default priority.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Transactional: passes every fatigue level and cap.
    #[serde(default)]
    pub exempt: bool,
    /// When this follow-up was first proposed; the maximum deferral counts
    /// from there so a follow-up cannot be pushed back forever. `None`: now.
    #[serde(default)]
    pub first_proposed: Option<Timestamp>,
}

impl Proposal {
    pub fn new(channel: ChannelId, kind: FollowUpKind) -> Self {
        Self {
            channel,
            kind,
            priority: None,
            exempt: false,
            first_proposed: None,
        }
    }
}

/// What is decided for one follow-up: the one word the guard, the
/// arbitration, the claim and the decision log use. The guard answers
/// allow, defer or block; only the arbitration drops (deferred too long).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Defer,
    Drop,
    Block,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Allow,
        Verdict::Defer,
        Verdict::Drop,
        Verdict::Block,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Defer => "defer",
            Verdict::Drop => "drop",
            Verdict::Block => "block",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown verdict `{s}`, expected allow, defer, drop or block"))
    }
}

/// The guard's answer; `until` is set for `defer` only. Serialized as
/// `{"decision": "defer", "until": "…Z", "reasons": [{"rule": …}, …]}` for
/// the decision log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub decision: Verdict,
    /// The earliest instant at which the same proposal would be allowed,
    /// if nothing else happens to the contact meanwhile.
    pub until: Option<Timestamp>,
    /// Allow: the level passed. Defer: every rule that held it back. Block:
    /// the blocking rules.
    pub reasons: Reasons,
}

/// The reasons of one decision, read as a slice and serialized as a list.
/// The guard records them as found (instants as seconds, no local time) and
/// they become [`Reason`]s, with their instants, local times and dates, the
/// first time they are read: a decision whose reasons nobody reads does no
/// calendar work for them and allocates nothing (up to two found reasons
/// are held inline). The list built when read is kept on the heap, so that
/// a decision stays small to move.
#[derive(Clone, Default)]
pub struct Reasons {
    /// As the guard found them; the list when `built` is not set yet.
    found: SmallVec<[Found; 2]>,
    /// The list, once read (or given whole).
    built: OnceLock<Box<[Reason]>>,
}

impl Reasons {
    fn found(found: SmallVec<[Found; 2]>) -> Self {
        Self {
            found,
            built: OnceLock::new(),
        }
    }

    fn list(self) -> SmallVec<[Reason; 2]> {
        match self.built.into_inner() {
            Some(list) => list.into_vec().into_iter().collect(),
            None => self.found.iter().map(Found::reason).collect(),
        }
    }

    pub fn push(&mut self, reason: Reason) {
        let mut list = std::mem::take(self).list();
        list.push(reason);
        *self = list.into_iter().collect();
    }

    pub fn into_vec(self) -> Vec<Reason> {
        self.list().into_vec()
    }
}

impl std::ops::Deref for Reasons {
    type Target = [Reason];
    fn deref(&self) -> &[Reason] {
        self.built
            .get_or_init(|| self.found.iter().map(Found::reason).collect())
    }
}

impl fmt::Debug for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Reasons").field(&&**self).finish()
    }
}

impl PartialEq for Reasons {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<[Reason; N]> for Reasons {
    fn eq(&self, other: &[Reason; N]) -> bool {
        **self == other[..]
    }
}

impl FromIterator<Reason> for Reasons {
    fn from_iter<I: IntoIterator<Item = Reason>>(iter: I) -> Self {
        Self {
            found: SmallVec::new(),
            built: OnceLock::from(iter.into_iter().collect::<Box<[Reason]>>()),
        }
    }
}

impl IntoIterator for Reasons {
    type Item = Reason;
    type IntoIter = smallvec::IntoIter<[Reason; 2]>;
    fn into_iter(self) -> Self::IntoIter {
        self.list().into_iter()
    }
}

impl<'a> IntoIterator for &'a Reasons {
    type Item = &'a Reason;
    type IntoIter = std::slice::Iter<'a, Reason>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Serialize for Reasons {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A [`Reason`] as the guard finds it: the same figures, instants as
/// seconds, local times and dates left to [`Found::reason`].
#[derive(Clone, Copy, Debug)]
enum Found {
    UnknownChannel {
        channel: u8,
    },
    DoNotContact {
        channel: Name,
    },
    Consent {
        channel: Name,
        explicit: Option<bool>,
        default: ConsentDefault,
    },
    Level {
        level: Name,
        units: i64,
        priority: u32,
        exempt: bool,
    },
    Fatigue {
        level: Name,
        units: i64,
        at: i64,
        priority: u32,
        min_priority: Option<u32>,
        exempt_only: bool,
        threshold: i64,
        inclusive: bool,
        passes_at: Option<i64>,
    },
    Cap {
        channel: Option<Name>,
        count: u32,
        limit: u32,
        window: Duration,
        at: i64,
        frees_at: i64,
    },
    Budget {
        channel: Option<Name>,
        count: u32,
        limit: u32,
        days: u32,
        timezone: Tz,
        day: NaiveDate,
        at: i64,
        frees_at: i64,
    },
    SendWindow {
        channel: Name,
        timezone: Tz,
        at: i64,
        opens_at: Option<i64>,
    },
    MaxDeferral {
        first_proposed: i64,
        max_deferral: Duration,
        until: Option<i64>,
    },
}

impl Found {
    fn reason(&self) -> Reason {
        match *self {
            Found::UnknownChannel { channel } => Reason::UnknownChannel { channel },
            Found::DoNotContact { channel } => Reason::DoNotContact { channel },
            Found::Consent {
                channel,
                explicit,
                default,
            } => Reason::Consent {
                channel,
                explicit,
                default,
            },
            Found::Level {
                level,
                units,
                priority,
                exempt,
            } => Reason::Level {
                level,
                fatigue: FatiguePoints::from_units(units),
                priority,
                exempt,
            },
            Found::Fatigue {
                level,
                units,
                at,
                priority,
                min_priority,
                exempt_only,
                threshold,
                inclusive,
                passes_at,
            } => Reason::Fatigue {
                level,
                fatigue: FatiguePoints::from_units(units),
                at: instant(at),
                priority,
                min_priority,
                exempt_only,
                threshold: FatiguePoints::from_units(threshold),
                inclusive,
                passes_at: passes_at.map(instant),
            },
            Found::Cap {
                channel,
                count,
                limit,
                window,
                at,
                frees_at,
            } => Reason::Cap {
                channel,
                count,
                limit,
                window,
                at: instant(at),
                frees_at: instant(frees_at),
            },
            Found::Budget {
                channel,
                count,
                limit,
                days,
                timezone,
                day,
                at,
                frees_at,
            } => Reason::Budget {
                channel,
                count,
                limit,
                days,
                timezone,
                day,
                at: instant(at),
                frees_at: instant(frees_at),
            },
            Found::SendWindow {
                channel,
                timezone,
                at,
                opens_at,
            } => Reason::SendWindow {
                channel,
                timezone,
                at: instant(at),
                local: local(timezone, at),
                opens_at: opens_at.map(instant),
                opens_local: opens_at.and_then(|o| local(timezone, o)),
            },
            Found::MaxDeferral {
                first_proposed,
                max_deferral,
                until,
            } => Reason::MaxDeferral {
                first_proposed: instant(first_proposed),
                max_deferral,
                until: until.map(instant),
            },
        }
    }
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.decision == Verdict::Allow
    }
}

/// Why, with the figures, so that a user can check the decision by hand.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    /// Allowed: the level the contact is in and the figures checked.
    Level {
        level: Name,
        fatigue: FatiguePoints,
        priority: u32,
        exempt: bool,
    },
    /// The proposal names a channel this guard was not built with (a
    /// configuration reload between planning and deciding).
    UnknownChannel { channel: u8 },
    /// The contact asked not to be reached on this channel.
    DoNotContact { channel: Name },
    /// No consent: refused explicitly, or none given on an opt-in channel.
    Consent {
        channel: Name,
        explicit: Option<bool>,
        default: ConsentDefault,
    },
    /// The fatigue level holds this follow-up back until fatigue falls to
    /// `threshold` (to it when `inclusive`, strictly below otherwise): a
    /// level starting `from` 20 (≥) still holds at exactly 20, so with whole
    /// seconds the follow-up passes one second after fatigue reaches 20 —
    /// `passes_at` is an instant at which the guard really allows it.
    Fatigue {
        level: Name,
        fatigue: FatiguePoints,
        at: Timestamp,
        priority: u32,
        min_priority: Option<u32>,
        exempt_only: bool,
        threshold: FatiguePoints,
        inclusive: bool,
        passes_at: Option<Timestamp>,
    },
    /// `count` sends in the rolling window already reach `limit`.
    Cap {
        /// `None`: all channels together.
        channel: Option<Name>,
        count: u32,
        limit: u32,
        window: Duration,
        at: Timestamp,
        frees_at: Timestamp,
    },
    /// The contact's solicitation budget (`[followups.arbitration.budget]`):
    /// `count` sends over the `days` calendar days ending on `day`, in the
    /// contact's time zone, already reach `limit`.
    Budget {
        /// `None`: all channels together.
        channel: Option<Name>,
        count: u32,
        limit: u32,
        days: u32,
        timezone: Tz,
        day: NaiveDate,
        at: Timestamp,
        frees_at: Timestamp,
    },
    /// Outside the channel's send window in the contact's time zone.
    SendWindow {
        channel: Name,
        timezone: Tz,
        at: Timestamp,
        local: Option<NaiveDateTime>,
        opens_at: Option<Timestamp>,
        opens_local: Option<NaiveDateTime>,
    },
    /// The earliest passing instant is too far from the first proposal, or
    /// there is none (`until` null). `until` is where the search stopped: the
    /// follow-up passes no earlier.
    MaxDeferral {
        first_proposed: Timestamp,
        max_deferral: Duration,
        until: Option<Timestamp>,
    },
}

impl Reason {
    /// The rule's name, as serialized.
    pub fn rule(&self) -> &'static str {
        match self {
            Reason::Level { .. } => "level",
            Reason::UnknownChannel { .. } => "unknown_channel",
            Reason::DoNotContact { .. } => "do_not_contact",
            Reason::Consent { .. } => "consent",
            Reason::Fatigue { .. } => "fatigue",
            Reason::Cap { .. } => "cap",
            Reason::Budget { .. } => "budget",
            Reason::SendWindow { .. } => "send_window",
            Reason::MaxDeferral { .. } => "max_deferral",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{0} channels configured; the guard handles at most {MAX_CHANNELS}")]
    TooManyChannels(usize),
    #[error("`{section}` names unknown channel `{channel}`")]
    UnknownChannel {
        section: &'static str,
        channel: String,
    },
    #[error("`{0}` is not a number of points with at most three decimals")]
    Amount(String),
    #[error("the caps need more than {RECENT_SENDS} recent sends per contact")]
    CapsTooLarge,
    #[error("fatigue levels are invalid: {0}")]
    Levels(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    All,
    MinPriority(u32),
    ExemptOnly,
}

#[derive(Clone, Debug)]
struct Level {
    name: Name,
    /// Threshold in units, and whether it is `above` (strict).
    bound: Option<(i64, bool)>,
    policy: Policy,
}

impl Level {
    fn passes(&self, priority: u32) -> bool {
        match self.policy {
            Policy::All => true,
            Policy::MinPriority(m) => priority >= m,
            Policy::ExemptOnly => false,
        }
    }

    fn min_priority(&self) -> Option<u32> {
        match self.policy {
            Policy::MinPriority(m) => Some(m),
            _ => None,
        }
    }
}

/// Marks a recent send that is a call task, not a call (see
/// [`Guard::with_calls`]): the call that follows takes its place.
pub(crate) const CALL_TASK: u8 = 0x80;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cap {
    channel: Option<u8>,
    pub(crate) limit: u32,
    pub(crate) window: i64,
}

impl Cap {
    pub(crate) fn matches(&self, mark: u8) -> bool {
        self.channel.is_none_or(|c| c == mark & !CALL_TASK)
    }
}

/// The per-contact budget, compiled: `limit` sends per `days` local days.
#[derive(Clone, Copy, Debug)]
struct Budget {
    channel: Option<u8>,
    limit: u32,
    days: u32,
}

#[derive(Clone, Debug)]
struct Channel {
    name: Name,
    event: Name,
    cost: i64,
    consent: ConsentDefault,
    windows: Windows,
}

/// What an event type does to a contact's state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Effect {
    /// Units added (cost) or removed (relief).
    pub(crate) delta: i64,
    /// The channel whose sends this event type records, if any.
    pub(crate) send: Option<ChannelId>,
}

/// The compiled `[fatigue]` rules with the channels they refer to. Built once
/// per configuration; deciding allocates only the reasons.
#[derive(Clone, Debug)]
pub struct Guard {
    decay: DecayRate,
    levels: Vec<Level>,
    priorities: Priorities,
    effects: HashMap<String, Effect>,
    channels: Vec<Channel>,
    by_name: HashMap<String, ChannelId>,
    caps: Vec<Cap>,
    cap_windows: Vec<Duration>,
    budget: Option<Budget>,
    /// Channels whose sends are call tasks, one bit each.
    task_channels: u32,
    /// What the recent sends must keep: the caps, and the budget's days.
    keep: Vec<Cap>,
    default_timezone: Tz,
    max_deferral: Duration,
}

/// The outcome of one rule at one instant.
enum Check {
    Pass,
    /// Passes from this second on (as far as this rule knows).
    Wait(i64, Found),
    Never(Found),
}

impl Guard {
    /// The guard of a configuration: its fatigue rules over its channels,
    /// with the call rules and the solicitation budget of `[followups]`.
    pub fn build(
        fatigue: &FatigueConfig,
        channels: &BTreeMap<String, ChannelConfig>,
        followups: &crate::domain::followups::config::FollowupsConfig,
    ) -> Result<Self, GuardError> {
        let guard = Self::new(fatigue, channels)?.with_calls(&followups.calls);
        match &followups.arbitration.budget {
            Some(b) => guard.with_budget(b),
            None => Ok(guard),
        }
    }

    /// One call, one charge (domain: a call costs 5 and counts for the
    /// phone cap). A call channel's own sends are call tasks, not calls:
    /// they cost nothing (unless the channel records the call event
    /// itself) but hold their slot in the caps and the budget. A call
    /// (`calls.event`), imported, posted or recorded by the call desk,
    /// counts as a send on the first call channel, taking the place of
    /// the task before it if any: task and call count once.
    pub fn with_calls(mut self, calls: &crate::domain::followups::config::CallsConfig) -> Self {
        let mut first = None;
        for name in &calls.channels {
            let Some(id) = self.channel(name) else {
                continue;
            };
            first.get_or_insert(id);
            if self.channel_event(id) != Some(calls.event.as_str()) {
                self.task_channels |= id.bit();
                let event = self.channels[usize::from(id.0)].event.to_string();
                if let Some(effect) = self.effects.get_mut(&event) {
                    effect.send = Some(ChannelId(id.0 | CALL_TASK));
                }
            }
        }
        if let Some(id) = first {
            let effect = self.effects.entry(calls.event.clone()).or_insert(Effect {
                delta: 0,
                send: None,
            });
            effect.send.get_or_insert(id);
        }
        self
    }

    /// The mark a send of `channel` leaves among the recent sends.
    pub(crate) fn send_mark(&self, channel: ChannelId) -> ChannelId {
        if self.task_channels & channel.bit() != 0 {
            ChannelId(channel.0 | CALL_TASK)
        } else {
            channel
        }
    }

    /// Adds the per-contact solicitation budget to the rules.
    pub fn with_budget(mut self, config: &super::config::BudgetConfig) -> Result<Self, GuardError> {
        let channel = match &config.channel {
            Some(name) => Some(
                self.channel(name)
                    .ok_or_else(|| GuardError::UnknownChannel {
                        section: "followups.arbitration.budget",
                        channel: name.clone(),
                    })?
                    .0,
            ),
            None => None,
        };
        let days = u32::try_from(config.window.seconds() / 86_400)
            .unwrap_or(u32::MAX)
            .clamp(1, 366);
        let budget = Budget {
            channel,
            limit: config.count.max(1),
            days,
        };
        let total: u64 = self.caps.iter().map(|c| u64::from(c.limit)).sum();
        if total + u64::from(budget.limit) > RECENT_SENDS as u64 {
            return Err(GuardError::CapsTooLarge);
        }
        // A send counts for the local days it falls on; a day lasts at most
        // 25 hours (DST), so keep it that long per day and a margin.
        self.keep.push(Cap {
            channel,
            limit: budget.limit,
            window: i64::from(days) * 90_000 + 3_600,
        });
        self.budget = Some(budget);
        Ok(self)
    }

    pub fn new(
        config: &FatigueConfig,
        channels: &BTreeMap<String, ChannelConfig>,
    ) -> Result<Self, GuardError> {
        if channels.len() > MAX_CHANNELS {
            return Err(GuardError::TooManyChannels(channels.len()));
        }
        let milli = |what: &str, v: f64| to_milli(v).ok_or_else(|| GuardError::Amount(what.into()));
        let decay = DecayRate(milli("decay_per_day", config.decay_per_day)?);

        let mut levels = Vec::with_capacity(config.levels.len());
        for (i, l) in config.levels.iter().enumerate() {
            let bound = match (i, l.threshold()) {
                (0, None) => None,
                (_, Some((v, strict))) if i > 0 => Some((
                    milli(&format!("levels[{i}]"), v)?.saturating_mul(UNITS_PER_MILLI),
                    strict,
                )),
                _ => {
                    return Err(GuardError::Levels(format!(
                        "level `{}` has a bad threshold",
                        l.name
                    )));
                }
            };
            let policy = match (l.exempt_only, l.min_priority) {
                (true, _) => Policy::ExemptOnly,
                (false, Some(m)) => Policy::MinPriority(m),
                (false, None) => Policy::All,
            };
            levels.push(Level {
                name: l.name.as_str().into(),
                bound,
                policy,
            });
        }
        if levels.is_empty() {
            return Err(GuardError::Levels("no level".into()));
        }

        let mut by_name = HashMap::new();
        let mut compiled = Vec::with_capacity(channels.len());
        for (i, (name, ch)) in channels.iter().enumerate() {
            let id = ChannelId(u8::try_from(i).expect("at most MAX_CHANNELS channels"));
            by_name.insert(name.clone(), id);
            let cost = match config.costs.get(&ch.event) {
                Some(&v) => milli(&format!("costs.{}", ch.event), v)?,
                None => 0,
            };
            compiled.push(Channel {
                name: name.as_str().into(),
                event: ch.event.as_str().into(),
                cost: cost.saturating_mul(UNITS_PER_MILLI),
                consent: ch.consent,
                windows: Windows::default(),
            });
        }
        let lookup = |section: &'static str, name: &str| {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| GuardError::UnknownChannel {
                    section,
                    channel: name.into(),
                })
        };

        let mut windows: Vec<Vec<Window>> = vec![Vec::new(); compiled.len()];
        for w in &config.windows {
            windows[usize::from(lookup("windows", &w.channel)?.0)].push(Window::new(w));
        }
        for (ch, w) in compiled.iter_mut().zip(windows) {
            ch.windows = Windows::new(w);
        }

        let mut caps = Vec::with_capacity(config.caps.len());
        let mut total = 0u64;
        for cap in &config.caps {
            let channel = match &cap.channel {
                Some(name) => Some(lookup("caps", name)?.0),
                None => None,
            };
            total += u64::from(cap.limit.max(1));
            caps.push(Cap {
                channel,
                limit: cap.limit.max(1),
                window: cap.window.seconds().max(1),
            });
        }
        if total > RECENT_SENDS as u64 {
            return Err(GuardError::CapsTooLarge);
        }

        let mut effects = HashMap::new();
        for (event, &points) in &config.costs {
            let delta = milli(&format!("costs.{event}"), points)?.saturating_mul(UNITS_PER_MILLI);
            effects.insert(event.clone(), Effect { delta, send: None });
        }
        for (event, &points) in &config.relief {
            let delta = milli(&format!("relief.{event}"), points)?.saturating_mul(UNITS_PER_MILLI);
            effects.insert(
                event.clone(),
                Effect {
                    delta: -delta,
                    send: None,
                },
            );
        }
        // Sends count for caps whether relance or another tool made them;
        // the first channel (by name) recording an event type gets the
        // events that name no channel.
        for (i, ch) in compiled.iter().enumerate().rev() {
            let id = ChannelId(u8::try_from(i).expect("at most MAX_CHANNELS channels"));
            effects
                .entry(ch.event.to_string())
                .or_insert(Effect {
                    delta: 0,
                    send: None,
                })
                .send = Some(id);
        }

        Ok(Self {
            decay,
            levels,
            priorities: config.priorities,
            effects,
            channels: compiled,
            by_name,
            keep: caps.clone(),
            caps,
            cap_windows: config.caps.iter().map(|c| c.window).collect(),
            budget: None,
            task_channels: 0,
            default_timezone: config.default_timezone,
            max_deferral: config.max_deferral,
        })
    }

    /// The id of a configured channel.
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    pub fn channel_name(&self, id: ChannelId) -> Option<&str> {
        self.channels
            .get(usize::from(id.0))
            .map(|c| c.name.as_str())
    }

    pub(crate) fn channel_event(&self, id: ChannelId) -> Option<&str> {
        self.channels
            .get(usize::from(id.0))
            .map(|c| c.event.as_str())
    }

    pub(crate) fn channel_cost(&self, id: ChannelId) -> Option<i64> {
        self.channels.get(usize::from(id.0)).map(|c| c.cost)
    }

    pub(crate) fn effect(&self, kind: &str) -> Option<Effect> {
        self.effects.get(kind).copied()
    }

    /// The event types that change a contact's state: those with a fatigue
    /// effect, and unsubscribes. Other events leave it as it is.
    pub fn weighed_kinds(&self) -> impl Iterator<Item = &str> {
        self.effects
            .keys()
            .map(String::as_str)
            .chain([crate::core::model::event_types::UNSUBSCRIBE])
    }

    /// What the recent sends must keep (caps and budget).
    pub(crate) fn kept_sends(&self) -> &[Cap] {
        &self.keep
    }

    pub fn decay(&self) -> DecayRate {
        self.decay
    }

    pub fn priorities(&self) -> Priorities {
        self.priorities
    }

    pub fn default_timezone(&self) -> Tz {
        self.default_timezone
    }

    /// The name of the level a fatigue value is in.
    pub fn level_name(&self, fatigue: FatiguePoints) -> &str {
        self.levels[self.level_index(fatigue.units())].name.as_str()
    }

    fn level_index(&self, units: i64) -> usize {
        self.levels
            .iter()
            .rposition(|l| match l.bound {
                None => true,
                Some((t, true)) => units > t,
                Some((t, false)) => units >= t,
            })
            .unwrap_or(0)
    }

    /// Allow, defer (with the earliest instant it would pass) or block one
    /// follow-up for one contact at `now`.
    pub fn decide(&self, proposal: &Proposal, state: &ContactState, now: Timestamp) -> Decision {
        self.decide_booked(proposal, state, now, &[])
    }

    /// [`Guard::decide`], with `booked` sends (deferred earlier in the same
    /// arbitration, at their deferred instants) counted by the budget.
    pub fn decide_booked(
        &self,
        proposal: &Proposal,
        state: &ContactState,
        now: Timestamp,
        booked: &[(ChannelId, Timestamp)],
    ) -> Decision {
        let t0 = secs(now);
        let Some(channel) = self.channels.get(usize::from(proposal.channel.0)) else {
            return block(Found::UnknownChannel {
                channel: proposal.channel.0,
            });
        };
        let closed = state.reach.is_do_not_contact(proposal.channel);
        let explicit = state.reach.explicit_consent(proposal.channel);
        let consent = explicit.unwrap_or(channel.consent == ConsentDefault::OptOut);
        if closed || !consent {
            let mut found = SmallVec::new();
            if closed {
                found.push(Found::DoNotContact {
                    channel: channel.name,
                });
            }
            if !consent {
                found.push(Found::Consent {
                    channel: channel.name,
                    explicit,
                    default: channel.consent,
                });
            }
            return blocked(found);
        }

        let priority = proposal
            .priority
            .unwrap_or_else(|| self.priorities.of(proposal.kind));
        let tz = state.timezone.unwrap_or(self.default_timezone);
        let first = proposal.first_proposed.map_or(t0, secs).min(t0);
        let deadline = first.saturating_add(self.max_deferral.seconds());

        // What is known of fatigue, caps and budget, so that the search
        // checks no rule again where it is known to pass.
        let mut known = Known::new();
        if booked.is_empty() && t0 <= deadline {
            let units = state.fatigue.units_at(self.decay, t0);
            let here = self.level_index(units);
            if self.passes_now(proposal, channel, state, priority, here, tz, t0, &mut known) {
                return self.allow(units, here, priority, proposal.exempt);
            }
        }

        // One slot per rule: fatigue, each cap, the budget, the window.
        let budget_slot = 1 + self.caps.len();
        let mut held: Held = SmallVec::new();
        let mut t = t0;
        loop {
            let mut next = t;
            let mut record = |slot: usize, check: Check, next: &mut i64| -> bool {
                match check {
                    Check::Pass => true,
                    Check::Wait(at, found) => {
                        *next = (*next).max(at);
                        remember(&mut held, slot, found);
                        true
                    }
                    Check::Never(found) => {
                        remember(&mut held, slot, found);
                        false
                    }
                }
            };
            let mut possible = true;
            if !proposal.exempt {
                if !known.passes(0, next) {
                    // Fatigue only decays: it passes from where it is
                    // found to pass on.
                    let check = self.check_fatigue(state, priority, next);
                    known.learn(0, next, &check);
                    possible &= record(0, check, &mut next);
                }
                for (i, cap) in self.caps.iter().enumerate() {
                    if possible && cap.matches(proposal.channel.0) && !known.passes(1 + i, next) {
                        let check = self.check_cap(i, cap, state, booked, next);
                        // Without booked sends a cap's count only falls as
                        // time passes, and it frees exactly at `frees_at`.
                        if booked.is_empty() {
                            known.learn(1 + i, next, &check);
                        }
                        possible &= record(1 + i, check, &mut next);
                    }
                }
                if let Some(b) = self.budget
                    && possible
                    && b.channel.is_none_or(|c| c == proposal.channel.0)
                    && !known.passes(budget_slot, next)
                {
                    let check = self.check_budget(b, state, booked, tz, next);
                    possible &= record(budget_slot, check, &mut next);
                }
            }
            if possible {
                let check = check_window(channel, tz, next);
                possible &= record(budget_slot + 1, check, &mut next);
            }
            if !possible || next > deadline {
                let mut found: SmallVec<[Found; 2]> = held.into_iter().map(|(_, f)| f).collect();
                found.push(Found::MaxDeferral {
                    first_proposed: first,
                    max_deferral: self.max_deferral,
                    until: possible.then_some(next),
                });
                return blocked(found);
            }
            if next == t {
                break;
            }
            t = next;
        }

        if t == t0 {
            let units = state.fatigue.units_at(self.decay, t0);
            self.allow(units, self.level_index(units), priority, proposal.exempt)
        } else {
            Decision {
                decision: Verdict::Defer,
                until: Some(instant(t)),
                reasons: Reasons::found(held.into_iter().map(|(_, f)| f).collect()),
            }
        }
    }

    /// Allowed at fatigue `units`, in level `here`.
    fn allow(&self, units: i64, here: usize, priority: u32, exempt: bool) -> Decision {
        let mut found = SmallVec::new();
        found.push(Found::Level {
            level: self.levels[here].name,
            units,
            priority,
            exempt,
        });
        Decision {
            decision: Verdict::Allow,
            until: None,
            reasons: Reasons::found(found),
        }
    }

    /// Whether every rule passes at `t0` with nothing booked, fatigue being
    /// in level `here`: the common case, answered without recording a
    /// reason or converting an instant to local time more than the send
    /// window needs. When it is not, the full search finds when the
    /// proposal passes, and why not now; what is found passing here goes
    /// into `known`, so that the search does not check it again.
    #[allow(clippy::too_many_arguments)]
    fn passes_now(
        &self,
        proposal: &Proposal,
        channel: &Channel,
        state: &ContactState,
        priority: u32,
        here: usize,
        tz: Tz,
        t0: i64,
        known: &mut Known,
    ) -> bool {
        if !proposal.exempt {
            if !self.levels[here].passes(priority) {
                return false;
            }
            known.set(0, t0);
            let ch = proposal.channel.0;
            for (i, cap) in self.caps.iter().enumerate() {
                if cap.matches(ch) {
                    if cap_full(cap, state.sends.newest_first(), t0) {
                        return false;
                    }
                    known.set(1 + i, t0);
                }
            }
            if let Some(b) = self.budget
                && b.channel.is_none_or(|c| c == ch)
            {
                match self.budget_clear(b, state, tz, t0) {
                    Clear::From => known.set(1 + self.caps.len(), t0),
                    Clear::At => known.at = Some((1 + self.caps.len(), t0)),
                    Clear::Held => return false,
                }
            }
        }
        channel.windows.contains(tz, t0)
    }

    /// Whether the budget passes at `t0` with nothing booked. The local
    /// days it counts at an instant `t` lie within four days of
    /// `[t - days, t + 1 day]` whatever the time zone (offsets differ by at
    /// most 29 hours, a skipped local day adds one more): fewer sends than
    /// the limit from `t0 - days - 4 days` on settles it without the
    /// calendar, for `t0` and every later instant; fewer within four days
    /// of the window settles it for `t0`.
    fn budget_clear(&self, b: Budget, state: &ContactState, tz: Tz, t0: i64) -> Clear {
        const MARGIN: i64 = 4 * 86_400;
        let from = t0 - i64::from(b.days) * 86_400 - MARGIN;
        let until = t0 + 86_400 + MARGIN;
        let (mut recent, mut around) = (0u32, 0u32);
        for (c, at) in state.sends.newest_first() {
            if at < from {
                break;
            }
            if b.channel.is_none_or(|m| m == c & !CALL_TASK) {
                recent += 1;
                around += u32::from(at < until);
            }
        }
        if recent < b.limit {
            Clear::From
        } else if around < b.limit
            || matches!(self.check_budget(b, state, &[], tz, t0), Check::Pass)
        {
            Clear::At
        } else {
            Clear::Held
        }
    }

    fn check_fatigue(&self, state: &ContactState, priority: u32, t: i64) -> Check {
        let units = state.fatigue.units_at(self.decay, t);
        let here = self.level_index(units);
        let level = &self.levels[here];
        if level.passes(priority) {
            return Check::Pass;
        }
        // Levels grow stricter upwards (validated), so the first passing
        // level below is reached when fatigue leaves the one above it.
        let target = self.levels[..here].iter().rposition(|l| l.passes(priority));
        let exit = target.and_then(|j| self.levels[j + 1].bound);
        let passes_at = exit.and_then(|(threshold, above)| {
            // Leaving `above T` means reaching ≤ T; leaving `from T`, < T.
            state
                .fatigue
                .first_secs(self.decay, threshold, !above)
                .map(|s| s.max(t))
        });
        let (threshold, inclusive) = exit.unwrap_or((0, true));
        let reason = Found::Fatigue {
            level: level.name,
            units,
            at: t,
            priority,
            min_priority: level.min_priority(),
            exempt_only: level.policy == Policy::ExemptOnly,
            threshold,
            inclusive,
            passes_at,
        };
        match passes_at {
            Some(s) => Check::Wait(s, reason),
            None => Check::Never(reason),
        }
    }

    fn check_cap(
        &self,
        index: usize,
        cap: &Cap,
        state: &ContactState,
        booked: &[(ChannelId, Timestamp)],
        t: i64,
    ) -> Check {
        let (count, frees_at) = if booked.is_empty() {
            cap_count(cap, state.sends.newest_first(), t)
        } else {
            // Sends deferred earlier in this arbitration will happen: they
            // count from their instant on.
            let mut all: Vec<(u8, i64)> = state
                .sends
                .newest_first()
                .chain(booked.iter().map(|(c, at)| (c.0, secs(*at))))
                .filter(|&(_, at)| at <= t)
                .collect();
            all.sort_unstable_by_key(|s| std::cmp::Reverse(s.1));
            cap_count(cap, all.into_iter(), t)
        };
        match frees_at {
            None => Check::Pass,
            Some(frees_at) => Check::Wait(
                frees_at,
                Found::Cap {
                    channel: cap
                        .channel
                        .and_then(|c| self.channels.get(usize::from(c)))
                        .map(|c| c.name),
                    count,
                    limit: cap.limit,
                    window: self.cap_windows[index],
                    at: t,
                    frees_at,
                },
            ),
        }
    }
}

impl Guard {
    /// The budget at `t`: the sends on the local days `[day - days + 1, day]`
    /// (recent ones and `booked` ones); when they reach the limit, it frees
    /// at the start of the local day on which the limit-th newest of them
    /// leaves the window.
    fn check_budget(
        &self,
        b: Budget,
        state: &ContactState,
        booked: &[(ChannelId, Timestamp)],
        tz: Tz,
        t: i64,
    ) -> Check {
        let Some((day, start, end)) = local_days(tz, t, b.days) else {
            return Check::Pass;
        };
        let counted = |&(c, at): &(u8, i64)| {
            b.channel.is_none_or(|m| m == c & !CALL_TASK) && start <= at && at < end
        };
        let booked = booked.iter().map(|(c, at)| (c.0, secs(*at)));
        let count = state
            .sends
            .newest_first()
            .chain(booked.clone())
            .filter(counted)
            .count();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if count < b.limit {
            return Check::Pass;
        }
        let Some(day) = NaiveDate::from_num_days_from_ce_opt(day) else {
            return Check::Pass;
        };
        let span = Days::new(u64::from(b.days));
        let mut inside: SmallVec<[i64; RECENT_SENDS]> = state
            .sends
            .newest_first()
            .chain(booked)
            .filter(counted)
            .map(|(_, at)| at)
            .collect();
        inside.sort_unstable_by(|a, b| b.cmp(a));
        let nth = inside[usize::try_from(b.limit - 1).unwrap_or(0)];
        let frees_at = local(tz, nth)
            .and_then(|l| l.date().checked_add_days(span))
            .and_then(|d| day_start(tz, d))
            .map_or(end, |f| f.max(t + 1));
        Check::Wait(
            frees_at,
            Found::Budget {
                channel: b
                    .channel
                    .and_then(|c| self.channels.get(usize::from(c)))
                    .map(|c| c.name),
                count,
                limit: b.limit,
                days: b.days,
                timezone: tz,
                day,
                at: t,
                frees_at,
            },
        )
    }
}

/// The sends `cap` counts at `t` among `sends` (newest first), and when it
/// frees if they reach its limit.
fn cap_count(cap: &Cap, sends: impl Iterator<Item = (u8, i64)>, t: i64) -> (u32, Option<i64>) {
    let start = t - cap.window;
    let mut count = 0u32;
    let mut frees_at = None;
    for (channel, at) in sends {
        if at <= start {
            break;
        }
        if cap.matches(channel) {
            count += 1;
            if count == cap.limit {
                frees_at = Some(at + cap.window);
            }
        }
    }
    (count, frees_at)
}

/// Whether the sends `cap` counts at `t` among `sends` (newest first)
/// reach its limit: [`cap_count`]'s `frees_at` is set, found without
/// counting past the limit.
fn cap_full(cap: &Cap, sends: impl Iterator<Item = (u8, i64)>, t: i64) -> bool {
    let start = t - cap.window;
    let mut count = 0u32;
    for (channel, at) in sends {
        if at <= start {
            return false;
        }
        if cap.matches(channel) {
            count += 1;
            if count == cap.limit {
                return true;
            }
        }
    }
    false
}

fn check_window(channel: &Channel, tz: Tz, t: i64) -> Check {
    if channel.windows.contains(tz, t) {
        return Check::Pass;
    }
    let opens = channel.windows.next_open_closed(tz, t);
    let reason = Found::SendWindow {
        channel: channel.name,
        timezone: tz,
        at: t,
        opens_at: opens,
    };
    match opens {
        Some(o) => Check::Wait(o, reason),
        None => Check::Never(reason),
    }
}

/// What [`Guard::budget_clear`] found.
enum Clear {
    /// The budget passes at `t0` and at every later instant.
    From,
    /// The budget passes at `t0`.
    At,
    Held,
}

/// What the search for a decision's earliest instant knows of fatigue
/// (slot 0), the caps (1..) and the budget (after the caps) without
/// checking them again: each passes from `from[slot]` on, or at `at`.
/// Fatigue only decays, and without booked sends a cap only frees as time
/// passes, so when one is found passing at an instant, or waiting until
/// one, it passes from there on. The budget is not so simple (a send on a
/// later local day counts once that day comes): it is known only where
/// [`Guard::budget_clear`] settled it.
struct Known {
    from: [i64; KNOWN_SLOTS],
    /// A slot known to pass at one instant.
    at: Option<(usize, i64)>,
}

/// Fatigue, the caps (their limits add up to at most `RECENT_SENDS`, each
/// at least 1) and the budget.
const KNOWN_SLOTS: usize = RECENT_SENDS + 2;

impl Known {
    fn new() -> Self {
        Self {
            from: [i64::MAX; KNOWN_SLOTS],
            at: None,
        }
    }

    /// Whether the rule of `slot` is known to pass at `t`.
    fn passes(&self, slot: usize, t: i64) -> bool {
        self.from.get(slot).is_some_and(|&f| f <= t) || self.at == Some((slot, t))
    }

    /// The rule passes from `t` on.
    fn set(&mut self, slot: usize, t: i64) {
        if let Some(f) = self.from.get_mut(slot) {
            *f = (*f).min(t);
        }
    }

    /// A rule that only gets better as time passes was checked at `t`.
    fn learn(&mut self, slot: usize, t: i64, check: &Check) {
        match check {
            Check::Pass => self.set(slot, t),
            Check::Wait(from, _) => self.set(slot, *from),
            Check::Never(_) => {}
        }
    }
}

/// The latest reason of each rule that held a proposal back, by slot.
type Held = SmallVec<[(usize, Found); 3]>;

/// Keeps the latest reason of each rule.
fn remember(held: &mut Held, slot: usize, reason: Found) {
    match held.iter_mut().find(|(s, _)| *s == slot) {
        Some(entry) => entry.1 = reason,
        None => held.push((slot, reason)),
    }
}

fn block(found: Found) -> Decision {
    let mut list = SmallVec::new();
    list.push(found);
    blocked(list)
}

fn blocked(found: SmallVec<[Found; 2]>) -> Decision {
    Decision {
        decision: Verdict::Block,
        until: None,
        reasons: Reasons::found(found),
    }
}
