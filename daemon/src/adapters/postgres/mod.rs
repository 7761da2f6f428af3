//! The PostgreSQL store: the [`Store`](crate::ports::store::Store) port on
//! one database that several `relance run` processes share. One file per
//! trait; `pool.rs` holds the connections and the blocking bridge,
//! `migrations.rs` the schema.

mod arrays;
mod binary;
mod claim;
mod copy;
mod desk;
mod keys;
mod migrations;
mod outbox;
mod pipelined;
mod plan;
mod pool;
mod records;
mod retention;
mod schedule;
mod scores;
mod statements;
mod ui;

pub use copy::Copied;
pub use pool::{PgStore, describe_url};

use crate::pipeline::config::Config;
use crate::ports::store::{StoreError, StoreHandle};
use std::sync::Arc;

/// Opens the PostgreSQL store a configuration names (`[store] url`),
/// migrating it as needed.
pub fn open(config: &Config) -> Result<StoreHandle, StoreError> {
    Ok(Arc::new(PgStore::from_config(config)?))
}
