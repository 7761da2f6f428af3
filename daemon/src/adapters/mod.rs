//! The adapters: the SQLite and PostgreSQL stores, the plugin host and the
//! HTTP API with its pages. They implement or call the ports and the passes.

pub mod api;
mod group;
pub mod plugins;
pub mod postgres;
pub mod sqlite;

use crate::pipeline::config::Config;
use crate::ports::store::{StoreError, StoreHandle};

/// Opens the store a configuration names: PostgreSQL when `[store] url` is
/// set, else the SQLite file at `[store] path`.
pub fn open_store(config: &Config) -> Result<StoreHandle, StoreError> {
    if config.store.postgres_url().is_some() {
        postgres::open(config)
    } else {
        sqlite::open(config)
    }
}
