//! The domain: pure decisions. Plain data and an instant in, decisions out;
//! no I/O, no store, no threads.

pub mod desk;
pub mod fatigue;
pub mod followups;
pub mod ingest;
pub mod outbox;
pub mod scoring;
pub mod templates;
