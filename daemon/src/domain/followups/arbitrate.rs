//! Arbitration (seed 004): the follow-ups of one contact that collide are
//! ranked, then put to the fatigue guard one by one, each allowed one
//! charged before the next decision, so that a prospect does not get the
//! newsletter, a seminar invitation and a sales call on the same day. The
//! losers are deferred, not dropped, until the deferral grows too long.

use super::config::ArbitrationConfig;
use super::plan::Planned;
use crate::core::model::Timestamp;
use crate::domain::fatigue::admit::DropReason;
use crate::domain::fatigue::{
    ChannelId, ContactState, Guard, Proposal, Reason, Reasons, StateError, Verdict,
};
use serde::Serialize;

/// What happens to one planned follow-up.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Send at `at` (its due instant, or now when overdue).
    Allow { at: Timestamp },
    /// Plan again for `until`, the guard's earliest passing instant.
    Defer { until: Timestamp },
    /// Deferred too long: given up, with why.
    Drop { reason: DropReason },
    /// The guard blocks it outright (do-not-contact, consent).
    Block,
}

impl Outcome {
    /// The verdict, and the instant a deferred follow-up is planned again.
    pub fn verdict(&self) -> (Verdict, Option<Timestamp>) {
        match self {
            Outcome::Allow { .. } => (Verdict::Allow, None),
            Outcome::Defer { until } => (Verdict::Defer, Some(*until)),
            Outcome::Drop { .. } => (Verdict::Drop, None),
            Outcome::Block => (Verdict::Block, None),
        }
    }
}

/// One follow-up with its outcome and the guard's reasons.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Arbitrated {
    pub planned: Planned,
    pub outcome: Outcome,
    pub reasons: Reasons,
}

/// The arbitration of one contact: decisions in the order they were taken
/// (highest priority first), and the follow-ups due after the window, left
/// for a later pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Arbitration {
    pub decided: Vec<Arbitrated>,
    pub later: Vec<Planned>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArbitrationError {
    #[error("follow-up `{followup}` for contact `{contact}`: {source}")]
    Charge {
        contact: String,
        followup: String,
        #[source]
        source: StateError,
    },
}

/// Arbitrates the planned follow-ups of ONE contact at `now`. Those due by
/// `now + window` are ranked by priority (then due instant, then key, so the
/// order is deterministic) and decided at their due instant (now when
/// overdue); `state` is the contact's fatigue state and comes back charged
/// with every allowed send.
pub fn arbitrate(
    config: &ArbitrationConfig,
    guard: &Guard,
    state: &mut ContactState,
    planned: Vec<Planned>,
    now: Timestamp,
) -> Result<Arbitration, ArbitrationError> {
    let horizon = now + config.window.0;
    let (mut batch, later): (Vec<Planned>, Vec<Planned>) =
        planned.into_iter().partition(|p| p.due <= horizon);
    batch.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.due.cmp(&b.due))
            .then_with(|| a.idem_key.cmp(&b.idem_key))
    });
    let mut decided = Vec::with_capacity(batch.len());
    // Deferred sends hold their slot of the budget: the next loser waits
    // for the slot after.
    let mut booked = Vec::new();
    for p in batch {
        let at = p.due.max(now);
        // An unknown channel (configuration reloaded) is blocked by the guard.
        let channel = guard.channel(&p.channel).unwrap_or(ChannelId(u8::MAX));
        let proposal = Proposal {
            channel,
            kind: p.kind,
            priority: Some(p.priority),
            exempt: p.exempt,
            first_proposed: Some(p.first_planned.min(at)),
        };
        let decision = guard.decide_booked(&proposal, state, at, &booked);
        let deadline = p.first_planned + config.max_deferral.0;
        let drop = |until| Outcome::Drop {
            reason: DropReason::MaxDeferral {
                first_planned: p.first_planned,
                max_deferral: config.max_deferral,
                until,
            },
        };
        let outcome = match (decision.decision, decision.until) {
            (Verdict::Allow, _) => {
                // Charges never go back in time: a send decided later in
                // priority order may be due earlier than one already charged.
                let charge_at = at.max(state.fatigue.last_update());
                let charged = if p.exempt {
                    state.charge_exempt(guard, channel, charge_at)
                } else {
                    state.charge(guard, channel, charge_at)
                };
                charged.map_err(|source| ArbitrationError::Charge {
                    contact: p.contact.clone(),
                    followup: p.followup.clone(),
                    source,
                })?;
                Outcome::Allow { at }
            }
            (Verdict::Defer, Some(until)) if until <= deadline => {
                // Exempt sends hold no slot: the budget and caps skip them.
                if !p.exempt {
                    booked.push((channel, until));
                }
                Outcome::Defer { until }
            }
            (Verdict::Defer, until) => drop(until),
            (Verdict::Drop | Verdict::Block, _) => {
                let gave_up = decision.reasons.iter().find_map(|r| match r {
                    Reason::MaxDeferral { until, .. } => Some(*until),
                    _ => None,
                });
                match gave_up {
                    Some(until) => drop(until),
                    None => Outcome::Block,
                }
            }
        };
        decided.push(Arbitrated {
            planned: p,
            outcome,
            reasons: decision.reasons,
        });
    }
    Ok(Arbitration { decided, later })
}
