//! Statements prepared once per connection and kept by their text.
//!
//! A pass runs the same few statements once per batch of 1,000 contacts.
//! Sent unprepared (`query_typed`), each is parsed and planned every time:
//! up to 1 ms of the server's time a batch for the planning read's join,
//! 2 ms for all its statements, about as much as running them. Prepared
//! here, PostgreSQL plans a statement for its first executions and then
//! keeps a generic plan when that costs no more (`plan_cache_mode`).
//!
//! Protocol-level prepared statements are what tokio-postgres sends for any
//! statement not typed by hand; PgBouncer in transaction mode carries them
//! since 1.21 (`max_prepared_statements`).

use super::arrays::Param;
use crate::ports::store::StoreError;
use std::collections::HashMap;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement, Transaction};

/// The statements prepared on one connection, by text.
#[derive(Default)]
pub(super) struct Statements {
    by_text: HashMap<String, Statement>,
}

impl Statements {
    /// Statements kept at most; past it the connection starts afresh. The
    /// texts come from the code, with at most a few shapes per statement.
    const MOST: usize = 256;

    /// The statement of `sql` (its parameters typed as `params` are),
    /// prepared on first use: one round trip, once per connection.
    pub(super) async fn get(
        &mut self,
        tx: &Transaction<'_>,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Statement, StoreError> {
        if let Some(s) = self.by_text.get(sql) {
            return Ok(s.clone());
        }
        if self.by_text.len() >= Self::MOST {
            self.by_text.clear();
        }
        let types: Vec<Type> = params.iter().map(|p| p.1.clone()).collect();
        let statement = tx.prepare_typed(sql, &types).await?;
        self.by_text.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Forgets every statement: after an error, a statement may be what
    /// failed (a schema changed under it).
    pub(super) fn clear(&mut self) {
        self.by_text.clear();
    }
}

/// Runs a prepared statement with `params`; no statement, no rows (see
/// [`super::arrays::query`]).
pub(super) async fn query(
    tx: &Transaction<'_>,
    statement: Option<&Statement>,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    let Some(statement) = statement else {
        return Ok(Vec::new());
    };
    let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.0).collect();
    Ok(tx.query(statement, &values).await?)
}
