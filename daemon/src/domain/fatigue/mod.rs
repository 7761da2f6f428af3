//! The fatigue guard: decaying contact fatigue and the decision to allow,
//! defer or block a follow-up, plus the pressure-versus-value matrix.
//! Pure: takes plain data and an instant, does no I/O and never reads the
//! clock, so decisions can be replayed and tested at exact instants.
//!
//! Use: build a [`Guard`] once per configuration; hold one [`ContactState`]
//! per contact (from [`ContactState::replay`] of its history, or restored
//! from a snapshot); put each follow-up to [`Guard::decide`] and, when it is
//! allowed and sent, fold it in with [`ContactState::charge`] before the
//! contact's next decision. The delivered event must then not be applied a
//! second time.
//!
//! Arithmetic is exact: fatigue is fixed-point (see [`points`]) and instants
//! are whole seconds, so a `defer` instant is the first second at which the
//! same proposal is allowed.

pub mod admit;
pub mod config;
pub mod guard;
pub mod matrix;
pub mod points;
pub mod report;
pub mod state;
pub mod window;

pub use config::FatigueConfig;
pub use guard::{
    ChannelId, Decision, FollowUpKind, Guard, GuardError, Proposal, Reason, Reasons, Verdict,
};
pub use matrix::{Misfit, PressureCategory, PressureMatrix, PressureSample, ValueTier};
pub use points::{DecayRate, Fatigue, FatiguePoints, OutOfOrder};
pub use state::{ContactState, EXEMPT_PROP, Reach, RecentSends, StateError};

#[cfg(test)]
mod tests;
