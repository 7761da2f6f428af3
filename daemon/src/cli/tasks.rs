//! `relance tasks`: the task channel's call desk (who to call, why, due
//! when) and the outcome of each call, recorded once.

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::pipeline::config::Config;
use relance::pipeline::tasks::{self, CallOutcome, TaskError};

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Delivered call tasks without an outcome (all of them with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Records what a call gave: RAPP, NRP, OCC, REFUS, "REFUS COMM", RDV,
    /// PISTE, PROJET, MAIL, "HORS CIBLE" or ERR. Once per task.
    Outcome {
        id: String,
        code: String,
        #[arg(long)]
        note: Option<String>,
        /// When to call back (RFC 3339), with RAPP.
        #[arg(long, value_parser = super::parse_now)]
        callback_at: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, clock: &Clock, action: &Action) -> Result<u8, Failure> {
    let now = clock.now();
    match action {
        Action::List { all, limit, json } => {
            let store = open_store(config)?;
            let list =
                tasks::list(&*store, config, !all, *limit, now).map_err(anyhow::Error::from)?;
            if *json {
                output::json(&list)?;
                return Ok(exit::OK);
            }
            let mut table = output::Table::new(&[
                "id", "due", "contact", "name", "phone", "company", "why", "outcome",
            ]);
            for t in &list {
                table.row(vec![
                    t.id.clone(),
                    t.due.to_rfc3339(),
                    t.contact.clone(),
                    output::opt(&t.name),
                    output::opt(&t.phone),
                    output::opt(&t.company),
                    t.text.clone().unwrap_or_else(|| t.followup.clone()),
                    t.outcome
                        .as_ref()
                        .map(|o| o.code.clone())
                        .unwrap_or_default(),
                ]);
            }
            table.print();
            println!("{} task(s)", list.len());
            Ok(exit::OK)
        }
        Action::Outcome {
            id,
            code,
            note,
            callback_at,
            json,
        } => {
            let store = open_store(config)?;
            let outcome = CallOutcome {
                code: code.clone(),
                note: note.clone(),
                callback_at: *callback_at,
                at: None,
            };
            match tasks::record(&*store, config, id, &outcome, now) {
                Ok(task) => {
                    if *json {
                        output::json(&task)?;
                    } else {
                        println!(
                            "task {id}: outcome {} recorded for {}",
                            task.outcome.map(|o| o.code).unwrap_or_default(),
                            task.contact
                        );
                    }
                    Ok(exit::OK)
                }
                Err(TaskError::Store(e)) => Err(anyhow::Error::from(e).into()),
                Err(e) => Err(Failure::Input(e.to_string())),
            }
        }
    }
}
