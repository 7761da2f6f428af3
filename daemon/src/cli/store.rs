//! `relance store copy --from SQLITE --to POSTGRES_URL`: moves an
//! installation from SQLite to PostgreSQL, with row counts per table.

use super::{Failure, exit, output};
use relance::adapters::postgres::PgStore;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Copy a SQLite store into a PostgreSQL database (created tables,
    /// rows brought up to date: running it again is safe), then check
    /// the counts of every table.
    Copy {
        /// The SQLite file.
        #[arg(long)]
        from: PathBuf,
        /// A `postgres://` URL (the database must exist).
        #[arg(long, env = "RELANCE_DATABASE_URL")]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(action: &Action) -> Result<u8, Failure> {
    let Action::Copy { from, to, json } = action;
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(Failure::Input(
            "--to: must be a PostgreSQL URL (postgres://user@host:port/database)".into(),
        ));
    }
    let store = PgStore::open(to, 4).map_err(anyhow::Error::from)?;
    let copied = store.copy_from_sqlite(from).map_err(anyhow::Error::from)?;
    if *json {
        output::json(&copied)?;
        return Ok(exit::OK);
    }
    let mut table = output::Table::new(&["table", "sqlite", "postgresql"]);
    for c in &copied {
        table.row(vec![
            c.table.clone(),
            c.sqlite.to_string(),
            c.postgres.to_string(),
        ]);
    }
    table.print();
    println!("copied; every table holds at least the rows of the SQLite store");
    Ok(exit::OK)
}
