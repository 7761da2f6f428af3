//! The SQLite store: the [`Store`](crate::ports::store::Store) port on one
//! database file, with its connections, migrations and writer.

/// The predicate of `outbox_ready` (migrations 18 and 19), the index of
/// the rows still to send: a query names it, written exactly so, to use
/// the index.
/// Comparisons, not `state IN (...)`: SQLite tests a list of more than two
/// constants through a temporary B-tree it builds each time a statement
/// runs, and every write of an outbox row tests the predicate.
/// `ready!("o.")` names the columns of the alias `o`.
macro_rules! ready {
    () => {
        ready!("")
    };
    ($t:literal) => {
        concat!(
            "(",
            $t,
            "state = 'planned' OR ",
            $t,
            "state = 'deferred' OR ",
            $t,
            "state = 'retrying' OR ",
            $t,
            "state = 'claimed')"
        )
    };
}

mod channels;
mod claim;
mod conn;
mod desk;
mod events;
mod migrations;
mod outbox;
mod plan;
mod pool;
mod retention;
mod scores;
mod sums;
mod ui;

pub use events::EventExport;
pub use pool::{PLAN_SNAPSHOT, SqliteStore};

/// How the SQL stores write values: instants in microseconds, records and
/// props as JSON, patches merged into records, the recent scores and the
/// props of a delivered send. The PostgreSQL store writes the same.
pub(crate) mod shared {
    pub(crate) use super::conn::{decode, decode_props, encode, from_micros, merge, to_micros};
    pub(crate) use super::desk::contact_keys;
    pub(crate) use super::migrations::RETENTION_INDEXES;
    pub(crate) use super::outbox::{decode_payload, send_props, settled};
    pub(crate) use super::retention::prune_statements;
    pub(crate) use super::scores::{decode_recent, encode_recent};
}

use crate::pipeline::config::Config;
use crate::ports::store::{StoreError, StoreHandle};
use std::sync::Arc;

/// Opens the store a configuration names (creating and migrating it), with
/// its connections: the one handle of a process.
pub fn open(config: &Config) -> Result<StoreHandle, StoreError> {
    Ok(Arc::new(SqliteStore::from_config(config)?))
}
