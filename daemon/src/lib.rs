//! relance keeps every contact's score up to date and pushes follow-ups
//! through channel plugins, with a fatigue guard before every send.
//!
//! Data flows one way: ingest → events → rescoring → score changes →
//! planner → arbitration → fatigue guard → outbox → plugin host → channel,
//! and delivery results come back as events.

pub mod adapters;
pub mod core;
pub mod daemon;
pub mod domain;
pub mod pipeline;
pub mod ports;
pub mod process;
