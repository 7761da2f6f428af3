//! relance keeps every contact's score up to date and pushes follow-ups
//! through channel plugins, with a fatigue guard before every send.
//!
//! Data flows one way: ingest → events → rescoring → score changes →
//! planner → arbitration → fatigue guard → outbox → plugin host → channel,
//! and delivery results come back as events.

pub mod api;
pub mod binary;
pub mod clock;
pub mod condition;
pub mod config;
pub mod daemon;
pub mod desk;
pub mod fatigue;
pub mod followups;
pub mod ingest;
pub mod limits;
pub mod links;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod plugins;
pub mod scheduler;
pub mod scoring;
pub mod shutdown;
pub mod store;
pub mod tasks;
pub mod templates;
