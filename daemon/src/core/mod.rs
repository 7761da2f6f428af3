//! The core: plain data, the one clock, the condition language, the
//! configuration's primitives and the small codecs every layer uses.
//! It imports nothing from the layers above it.

pub mod binary;
pub mod clock;
pub mod condition;
pub mod config;
pub mod hasher;
pub mod instant;
pub mod limits;
pub mod links;
pub mod metrics;
pub mod model;
pub mod shutdown;
