//! `relance outbox [--status S]`: what is planned, waiting, sent or dead.

use super::{Failure, exit, open_store, output};
use relance::domain::outbox::State;
use relance::pipeline::config::Config;

pub fn run(
    config: &Config,
    status: Option<&str>,
    limit: u32,
    as_json: bool,
) -> Result<u8, Failure> {
    let state = status
        .map(str::parse::<State>)
        .transpose()
        .map_err(Failure::Input)?;
    let store = open_store(config)?;
    let rows = store
        .outbox_rows(state, limit)
        .map_err(anyhow::Error::from)?;
    if as_json {
        output::json(&rows)?;
        return Ok(exit::OK);
    }
    let mut table = output::Table::new(&[
        "due",
        "contact",
        "follow-up",
        "kind",
        "channel",
        "state",
        "attempts",
        "error",
    ]);
    for r in &rows {
        table.row(vec![
            r.due_at.to_rfc3339(),
            r.contact.clone(),
            r.followup.clone(),
            r.kind.as_str().into(),
            r.channel.clone(),
            r.state.to_string(),
            r.attempts.to_string(),
            output::error(&r.last_error),
        ]);
    }
    table.print();
    let depth = store.outbox_depth().map_err(anyhow::Error::from)?;
    let counts: Vec<String> = depth
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "{}",
        if counts.is_empty() {
            "outbox empty".to_string()
        } else {
            counts.join(", ")
        }
    );
    Ok(exit::OK)
}
