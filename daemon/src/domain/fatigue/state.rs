//! What the guard knows about one contact, compact enough to hold a million
//! in memory (no heap allocation per contact): fatigue, the recent sends the
//! caps need, reachability bits and the time zone.

use super::config::RECENT_SENDS;
use super::guard::{CALL_TASK, Cap, ChannelId, Guard};
use super::points::{Fatigue, FatiguePoints, OutOfOrder, instant, secs};
use crate::core::binary;
use crate::core::model::{Contact, Event, Timestamp, event_types};
use chrono_tz::Tz;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrder),
    /// Send instants are kept as 32-bit seconds since 1970 (until 2106).
    #[error("send at {0} is outside 1970–2106")]
    OutOfRange(Timestamp),
    #[error("channel #{0} is not one of the guard's channels")]
    UnknownChannel(u8),
}

/// The event prop that marks a send as exempt (set by the store on the
/// events that record exempt sends).
pub const EXEMPT_PROP: &str = "exempt";

/// The last sends the caps still need, oldest first: for each cap only the
/// last `limit` matching sends inside its window matter, so the configured
/// limits bound the size (checked by the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RecentSends {
    at: [u32; RECENT_SENDS],
    channel: [u8; RECENT_SENDS],
    len: u8,
}

impl RecentSends {
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (ChannelId, Timestamp)> + '_ {
        (0..self.len()).map(|i| {
            let channel = ChannelId(self.channel[i] & !CALL_TASK);
            (channel, instant(i64::from(self.at[i])))
        })
    }

    /// Newest first, as raw seconds.
    pub(crate) fn newest_first(&self) -> impl Iterator<Item = (u8, i64)> + '_ {
        (0..self.len())
            .rev()
            .map(|i| (self.channel[i], i64::from(self.at[i])))
    }

    /// Inserts a send in time order, then drops what no cap needs any more.
    /// A call takes the place of the latest call task before it on its
    /// channel, if still kept: that task was this call, counted once.
    pub(crate) fn push(&mut self, caps: &[Cap], channel: u8, at: u32) {
        if channel & CALL_TASK == 0 {
            let task = channel | CALL_TASK;
            if let Some(i) = (0..self.len())
                .rev()
                .find(|&i| self.channel[i] == task && self.at[i] <= at)
            {
                let n = self.len();
                self.at.copy_within(i + 1..n, i);
                self.channel.copy_within(i + 1..n, i);
                self.at[n - 1] = 0;
                self.channel[n - 1] = 0;
                self.len -= 1;
            }
        }
        let mut at_buf = [0u32; RECENT_SENDS + 1];
        let mut ch_buf = [0u8; RECENT_SENDS + 1];
        let n = self.len();
        let pos = self.at[..n].partition_point(|&a| a <= at);
        at_buf[..pos].copy_from_slice(&self.at[..pos]);
        ch_buf[..pos].copy_from_slice(&self.channel[..pos]);
        at_buf[pos] = at;
        ch_buf[pos] = channel;
        at_buf[pos + 1..=n].copy_from_slice(&self.at[pos..n]);
        ch_buf[pos + 1..=n].copy_from_slice(&self.channel[pos..n]);
        let total = n + 1;
        let newest = i64::from(at_buf[total - 1]);

        // Newest first: a send is kept if some cap still counts it.
        let mut seen = [0u32; RECENT_SENDS + 1];
        let mut keep = [false; RECENT_SENDS + 1];
        for i in (0..total).rev() {
            for (c, cap) in caps.iter().enumerate().take(RECENT_SENDS + 1) {
                if cap.matches(ch_buf[i]) {
                    if seen[c] < cap.limit && i64::from(at_buf[i]) + cap.window > newest {
                        keep[i] = true;
                    }
                    seen[c] += 1;
                }
            }
        }
        let mut kept = 0;
        for i in 0..total {
            if keep[i] {
                at_buf[kept] = at_buf[i];
                ch_buf[kept] = ch_buf[i];
                kept += 1;
            }
        }
        // The configuration bounds what is kept; if it ever did not, the
        // newest sends are the ones that matter.
        let skip = kept.saturating_sub(RECENT_SENDS);
        let len = kept - skip;
        self.at[..len].copy_from_slice(&at_buf[skip..kept]);
        self.channel[..len].copy_from_slice(&ch_buf[skip..kept]);
        // Slots past `len` are zero, so that equal lists compare equal.
        self.at[len..].fill(0);
        self.channel[len..].fill(0);
        self.len = u8::try_from(len).expect("len ≤ RECENT_SENDS, which fits a byte");
    }
}

/// Per-channel reachability, one bit per channel of the guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reach {
    pub consent_given: u32,
    pub consent_refused: u32,
    pub do_not_contact: u32,
}

impl Reach {
    pub fn explicit_consent(&self, channel: ChannelId) -> Option<bool> {
        let bit = channel.bit();
        if self.consent_refused & bit != 0 {
            Some(false)
        } else if self.consent_given & bit != 0 {
            Some(true)
        } else {
            None
        }
    }

    pub fn set_consent(&mut self, channel: ChannelId, given: bool) {
        let bit = channel.bit();
        self.consent_given &= !bit;
        self.consent_refused &= !bit;
        if given {
            self.consent_given |= bit;
        } else {
            self.consent_refused |= bit;
        }
    }

    pub fn is_do_not_contact(&self, channel: ChannelId) -> bool {
        self.do_not_contact & channel.bit() != 0
    }
}

/// Everything the guard needs about one contact (about 90 bytes). Built from
/// the contact and its history with [`ContactState::new`] and
/// [`ContactState::apply`], kept up to date with [`ContactState::charge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContactState {
    pub fatigue: Fatigue,
    pub sends: RecentSends,
    pub reach: Reach,
    /// `None`: the guard's default time zone.
    pub timezone: Option<Tz>,
}

impl ContactState {
    /// Zero fatigue and no sends, with the contact's consent, do-not-contact
    /// list and time zone. Channels the guard does not know are ignored.
    pub fn new(guard: &Guard, contact: &Contact) -> Self {
        let mut reach = Reach::default();
        for (name, &given) in &contact.consent {
            if let Some(id) = guard.channel(name) {
                reach.set_consent(id, given);
            }
        }
        for name in &contact.do_not_contact {
            if let Some(id) = guard.channel(name) {
                reach.do_not_contact |= id.bit();
            }
        }
        Self {
            timezone: contact.timezone,
            reach,
            ..Self::default()
        }
    }

    /// Folds one event of the contact's history in (in time order for the
    /// events that cost or relieve): imported actions count exactly like
    /// relance's own sends; an unsubscribe closes its channel at once, or
    /// every channel when it names none.
    pub fn apply(&mut self, guard: &Guard, event: &Event) -> Result<(), StateError> {
        if event.kind == event_types::UNSUBSCRIBE {
            match event.channel.as_deref() {
                None => self.reach.do_not_contact = u32::MAX,
                Some(name) => {
                    if let Some(id) = guard.channel(name) {
                        self.reach.do_not_contact |= id.bit();
                    }
                }
            }
            return Ok(());
        }
        let Some(effect) = guard.effect(&event.kind) else {
            return Ok(());
        };
        // Stored before instants were checked on the way in (or written
        // into the store by hand): left out, so that one bad row never
        // makes the whole contact unreadable or unplannable.
        if u32::try_from(secs(event.at)).is_err() {
            tracing::warn!(
                contact = %event.contact,
                kind = %event.kind,
                at = %event.at,
                "event outside 1970–2106 left out of fatigue"
            );
            return Ok(());
        }
        // An exempt send is no solicitation: it costs fatigue like any
        // send but is not counted by the caps and the budget.
        let solicitation = event.props.get(EXEMPT_PROP) != Some(&serde_json::Value::Bool(true));
        let send = effect.send.filter(|_| solicitation).map(|default| {
            event
                .channel
                .as_deref()
                .and_then(|name| guard.channel(name))
                .filter(|&id| guard.channel_event(id) == Some(event.kind.as_str()))
                .map_or(default, |id| guard.send_mark(id))
        });
        self.fold(guard, effect.delta, send, event.at)
    }

    /// The state of a contact from its whole history, events in time order
    /// (the store's order), e.g. when loading contacts at start-up.
    pub fn replay<'e>(
        guard: &Guard,
        contact: &Contact,
        events: impl IntoIterator<Item = &'e Event>,
    ) -> Result<Self, StateError> {
        let mut state = Self::new(guard, contact);
        for event in events {
            state.apply(guard, event)?;
        }
        Ok(state)
    }

    /// Counts an allowed send at once (fatigue cost of the channel's event and
    /// a mark for the caps), so that the next decision for this contact sees
    /// it: a planner puts a contact's follow-ups to the guard in priority
    /// order, charging each one allowed.
    pub fn charge(
        &mut self,
        guard: &Guard,
        channel: ChannelId,
        at: Timestamp,
    ) -> Result<(), StateError> {
        self.charge_send(guard, channel, at, true)
    }

    /// [`ContactState::charge`] for an exempt send: its fatigue cost, and
    /// no mark for the caps and the budget (it is no solicitation).
    pub fn charge_exempt(
        &mut self,
        guard: &Guard,
        channel: ChannelId,
        at: Timestamp,
    ) -> Result<(), StateError> {
        self.charge_send(guard, channel, at, false)
    }

    fn charge_send(
        &mut self,
        guard: &Guard,
        channel: ChannelId,
        at: Timestamp,
        solicitation: bool,
    ) -> Result<(), StateError> {
        let cost = guard
            .channel_cost(channel)
            .ok_or(StateError::UnknownChannel(channel.0))?;
        self.fold(
            guard,
            cost,
            solicitation.then(|| guard.send_mark(channel)),
            at,
        )
    }

    /// Records a send for the caps only, without fatigue: for restoring a
    /// state from a snapshot (fatigue value + instant, and the recent sends).
    pub fn record_send(
        &mut self,
        guard: &Guard,
        channel: ChannelId,
        at: Timestamp,
    ) -> Result<(), StateError> {
        if guard.channel_name(channel).is_none() {
            return Err(StateError::UnknownChannel(channel.0));
        }
        let t = u32::try_from(secs(at)).map_err(|_| StateError::OutOfRange(at))?;
        self.sends
            .push(guard.kept_sends(), guard.send_mark(channel).0, t);
        Ok(())
    }

    fn fold(
        &mut self,
        guard: &Guard,
        delta: i64,
        send: Option<ChannelId>,
        at: Timestamp,
    ) -> Result<(), StateError> {
        let t = secs(at);
        let (_, last) = self.fatigue.snapshot();
        if t < secs(last) && delta != 0 {
            return Err(OutOfOrder { at, last }.into());
        }
        let mark = match send {
            Some(id) => Some((
                id,
                u32::try_from(t).map_err(|_| StateError::OutOfRange(at))?,
            )),
            None => None,
        };
        if delta != 0 {
            self.fatigue.add_secs(guard.decay(), t, delta);
        }
        if let Some((id, t32)) = mark {
            self.sends.push(guard.kept_sends(), id.0, t32);
        }
        Ok(())
    }

    /// Fatigue at `at`, exactly.
    pub fn fatigue_at(&self, guard: &Guard, at: Timestamp) -> FatiguePoints {
        self.fatigue.value_at(guard.decay(), at)
    }

    /// When fatigue will have decayed to `threshold` if nothing happens.
    pub fn when_at_most(&self, guard: &Guard, threshold: FatiguePoints) -> Option<Timestamp> {
        self.fatigue.when_at_most(guard.decay(), threshold)
    }

    /// Appends the state in a compact form: fatigue, recent sends and
    /// reachability, not the time zone (it comes from the contact record).
    /// Channel ids are the guard's: the form is only valid for the
    /// configuration that wrote it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (value, at) = self.fatigue.snapshot();
        binary::put_i64(out, value.units());
        binary::put_i64(out, secs(at));
        binary::put_u8(out, self.sends.len);
        for i in 0..self.sends.len() {
            binary::put_u32(out, self.sends.at[i]);
            binary::put_u8(out, self.sends.channel[i]);
        }
        for bits in [
            self.reach.consent_given,
            self.reach.consent_refused,
            self.reach.do_not_contact,
        ] {
            binary::put_u32(out, bits);
        }
    }

    /// Reads [`ContactState::encode_into`]'s form from the front of
    /// `bytes`; `None` when it is not one.
    pub fn decode_from(bytes: &mut &[u8]) -> Option<Self> {
        let value = FatiguePoints::from_units(binary::get_i64(bytes)?);
        let at = instant(binary::get_i64(bytes)?);
        let mut sends = RecentSends {
            len: binary::get_u8(bytes)?,
            ..RecentSends::default()
        };
        if sends.len() > RECENT_SENDS {
            return None;
        }
        for i in 0..sends.len() {
            sends.at[i] = binary::get_u32(bytes)?;
            sends.channel[i] = binary::get_u8(bytes)?;
        }
        let reach = Reach {
            consent_given: binary::get_u32(bytes)?,
            consent_refused: binary::get_u32(bytes)?,
            do_not_contact: binary::get_u32(bytes)?,
        };
        Some(Self {
            fatigue: Fatigue::new(value, at),
            sends,
            reach,
            timezone: None,
        })
    }
}
