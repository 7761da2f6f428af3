//! The stable boundary between relance and its channel plugins.
//!
//! [`abi`] is the C data that crosses; [`message`] the versioned JSON inside
//! it; [`sdk`] lets a plugin author stay in safe Rust; [`host`] wraps the
//! unsafe calls for the daemon; [`template`] renders message templates;
//! [`net`] is the SSRF guard of plugins that open connections.

pub mod abi;
pub mod host;
pub mod message;
pub mod net;
pub mod sdk;
pub mod template;

pub use message::*;
pub use sdk::{Cancel, Plugin};
