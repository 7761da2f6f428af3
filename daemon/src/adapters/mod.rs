//! The adapters: the SQLite store, the plugin host and the HTTP API with
//! its pages. They implement or call the ports and the passes.

pub mod api;
pub mod plugins;
pub mod sqlite;
