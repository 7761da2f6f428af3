//! Lead, deal and customer scoring. Pure: takes plain data and an instant,
//! does no I/O.

pub mod config;

pub use config::ScoringConfig;
