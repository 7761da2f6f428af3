//! A contact's older history, folded once: what the planner needs of it
//! (fatigue, the recent sends the caps count, unsubscribes, the call status
//! and the last instant of the event types conditions ask about). A pass
//! then reads only the events of the recent window and those that aged out
//! of it since, instead of every contact's whole history.
//!
//! A memo covers every event at or before its `upto`. It is derived data:
//! when it cannot be trusted (other fatigue or call rules, an event arrived
//! late, a damaged blob) the planner reads the whole history again.

use super::calls::{CallOutcomes, CallStatus};
use crate::core::binary;
use crate::core::model::{Contact, Event, Timestamp};
use crate::domain::fatigue::{ContactState, Guard, StateError};
use std::collections::BTreeSet;

/// Bumped when the stored form changes: older memos are rebuilt.
const FORM: u8 = 1;

/// What a planning pass folded of a contact's older history; the store
/// keeps it in the compact form this module encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMemo {
    /// Every event at or before this instant is folded in.
    pub upto: Timestamp,
    /// Built from an empty contact: only what events change (fatigue,
    /// recent sends, unsubscribes).
    pub state: ContactState,
    pub calls: CallStatus,
    /// The last instant of each kept event type, sorted by type.
    pub last: Vec<(String, Timestamp)>,
}

/// What a memo folds, compiled from the configuration.
#[derive(Clone, Debug)]
pub struct MemoRules<'a> {
    pub guard: &'a Guard,
    pub calls: &'a CallOutcomes,
    /// Event types whose last instant conditions read (`last.*`).
    pub last: &'a BTreeSet<String>,
}

impl HistoryMemo {
    /// Nothing folded yet: the history starts at the beginning.
    pub fn empty(guard: &Guard) -> Self {
        Self {
            upto: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            state: ContactState::new(guard, &Contact::default()),
            calls: CallStatus::Open { unsuccessful: 0 },
            last: Vec::new(),
        }
    }

    /// Folds one event in; events come in time order.
    pub fn fold(&mut self, rules: &MemoRules<'_>, event: &Event) -> Result<(), StateError> {
        self.state.apply(rules.guard, event)?;
        self.calls = rules.calls.after(self.calls, event);
        if rules.last.contains(&event.kind) {
            match self
                .last
                .binary_search_by(|(k, _)| k.as_str().cmp(&event.kind))
            {
                Ok(i) => self.last[i].1 = self.last[i].1.max(event.at),
                Err(i) => self.last.insert(i, (event.kind.clone(), event.at)),
            }
        }
        Ok(())
    }

    /// The guard's state of `contact`: its own consent and lists, with what
    /// the folded history did to it.
    pub fn state_of(&self, guard: &Guard, contact: &Contact) -> ContactState {
        let mut state = ContactState::new(guard, contact);
        state.fatigue = self.state.fatigue;
        state.sends = self.state.sends;
        state.reach.do_not_contact |= self.state.reach.do_not_contact;
        state
    }

    /// The stored form (`upto` is stored beside it).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        binary::put_u8(&mut out, FORM);
        self.state.encode_into(&mut out);
        let (tag, n) = match self.calls {
            CallStatus::Open { unsuccessful } => (0, unsuccessful),
            CallStatus::Won => (1, 0),
            CallStatus::Stopped => (2, 0),
            CallStatus::Lost => (3, 0),
        };
        binary::put_u8(&mut out, tag);
        binary::put_u32(&mut out, n);
        binary::put_u32(&mut out, u32::try_from(self.last.len()).unwrap_or(u32::MAX));
        for (kind, at) in &self.last {
            binary::put_str(&mut out, kind);
            binary::put_i64(&mut out, at.timestamp_micros());
        }
        out
    }

    /// The memo a stored form describes; `None` when it is not one.
    pub fn decode(upto: Timestamp, mut bytes: &[u8]) -> Option<Self> {
        let b = &mut bytes;
        if binary::get_u8(b)? != FORM {
            return None;
        }
        let state = ContactState::decode_from(b)?;
        let calls = match (binary::get_u8(b)?, binary::get_u32(b)?) {
            (0, unsuccessful) => CallStatus::Open { unsuccessful },
            (1, _) => CallStatus::Won,
            (2, _) => CallStatus::Stopped,
            (3, _) => CallStatus::Lost,
            _ => return None,
        };
        let n = binary::get_u32(b)?;
        let mut last = Vec::new();
        for _ in 0..n {
            let kind = binary::get_str(b)?;
            let at = chrono::DateTime::from_timestamp_micros(binary::get_i64(b)?)?;
            last.push((kind, at));
        }
        let sorted = last.windows(2).all(|w| w[0].0 < w[1].0);
        (b.is_empty() && sorted).then_some(Self {
            upto,
            state,
            calls,
            last,
        })
    }
}
