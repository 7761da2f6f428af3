//! The fatigue guard: decaying contact pressure and the decision to allow,
//! defer or block a follow-up. Pure: takes plain data and an instant.

pub mod config;

pub use config::FatigueConfig;
