//! The SQLite store: the [`Store`](crate::ports::store::Store) port on one
//! database file, with its connections, migrations and writer.

mod channels;
mod conn;
mod desk;
mod migrations;
mod outbox;
mod plan;
mod pool;
mod scores;
mod ui;

pub use pool::SqliteStore;

use crate::pipeline::config::Config;
use crate::ports::store::{StoreError, StoreHandle};
use std::sync::Arc;

/// Opens the store a configuration names (creating and migrating it), with
/// its connections: the one handle of a process.
pub fn open(config: &Config) -> Result<StoreHandle, StoreError> {
    Ok(Arc::new(SqliteStore::from_config(config)?))
}
