//! The follow-up planner (seed 004): systematic nurture sequences,
//! event-driven broadcasts and opportunistic triggers, planned per contact
//! and arbitrated before the fatigue guard. Pure: plain data and an instant
//! in, planned sends and decisions out; no I/O, never the clock.
//!
//! Use: compile `[followups]` once ([`FollowupsConfig::compile`]); per
//! contact, [`plan`] the new follow-ups (what earlier passes planned comes
//! in as a [`PlanState`]), insert them in the outbox by their idempotency
//! key, then [`arbitrate`] the contact's pending ones against its fatigue
//! state.

pub mod arbitrate;
pub mod calls;
pub mod config;
pub mod memo;
pub mod plan;

pub use crate::domain::fatigue::admit::DropReason;
pub use arbitrate::{Arbitrated, Arbitration, ArbitrationError, Outcome, arbitrate};
pub use calls::{CallOutcomes, CallStatus};
pub use config::{
    ActionConfig, ArbitrationConfig, BudgetConfig, CallsConfig, ChangeOn, CompiledFollowups,
    FollowupsConfig, FollowupsError, NurtureConfig, StepConfig, StepFrom, TriggerConfig,
};
pub use plan::{
    Broadcast, BroadcastSpec, ContactView, Occurrence, PastPlan, PlanState, Planned, leaving,
    next_wake, plan,
};

#[cfg(test)]
mod tests;
