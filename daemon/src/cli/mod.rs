//! Command-line interface. Each command lives in its own module; this one
//! parses arguments, sets up logs and the clock, and maps errors to exit
//! codes (0 ok, 1 partly rejected input, 2 invalid configuration or input
//! that cannot be read at all).

mod calls;
mod check;
mod contacts;
mod daemon;
mod demo;
mod fatigue;
mod import;
mod outbox;
mod output;
mod plan;
mod scoring;
mod store;
mod tasks;
mod template;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use relance::core::clock::Clock;
use relance::core::config::{ConfigErrors, LogFormat};
use relance::pipeline::config::Config;
use relance::ports::store::StoreHandle;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "relance",
    version,
    about = "Lead scoring and fatigue-guarded follow-ups"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "RELANCE_CONFIG", default_value = relance::core::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Evaluate time-based rules at this instant (RFC 3339) instead of now.
    #[arg(long, global = true, value_parser = parse_now)]
    now: Option<DateTime<Utc>>,
    /// Log format, overriding the configuration.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and summarise it (exit code 2 when invalid).
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Import contacts, companies, deals (CSV or JSONL) or events (JSONL).
    Import {
        #[command(subcommand)]
        what: import::What,
    },
    /// Look at, list or erase contacts.
    Contacts {
        #[command(subcommand)]
        action: contacts::Action,
    },
    /// One rescoring pass at --now: incremental unless --full (or the rules changed).
    Rescore {
        /// Rebuild every score from the events.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
    /// A contact's score with every contribution, its history, or what
    /// another configuration's rules would change.
    Score {
        /// The contact (not needed with --what-if or --all).
        id: Option<String>,
        /// Every contact's card, computed at --now.
        #[arg(long, conflicts_with_all = ["id", "history", "what_if"])]
        all: bool,
        /// The film: every stored change of score or band.
        #[arg(long)]
        history: bool,
        /// Compare bands under the rules of another configuration file.
        #[arg(long, value_name = "OTHER_CONFIG")]
        what_if: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Deals ranked by score, best first.
    Deals {
        #[arg(long)]
        json: bool,
    },
    /// Customer scores from purchases: RFM, ABC and value tier.
    Customers {
        #[arg(long)]
        json: bool,
    },
    /// A contact's fatigue: value, level, recent charges, when each level is left.
    Fatigue {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// What the fatigue guard would decide for a follow-up at --now.
    Guard {
        id: String,
        #[arg(long)]
        channel: String,
        #[arg(long, default_value = "systematic", value_parser = parse_kind)]
        kind: relance::core::model::FollowUpKind,
        /// Overrides the kind's priority.
        #[arg(long)]
        priority: Option<u32>,
        /// A transactional follow-up.
        #[arg(long)]
        exempt: bool,
        #[arg(long)]
        json: bool,
    },
    /// Marketing pressure against customer value: the 5×5 matrix and the
    /// over- and under-pressured customers.
    Pressure {
        #[arg(long)]
        json: bool,
    },
    /// The durable outbox: planned, deferred, claimed, sent, retrying, dead,
    /// blocked and dropped sends.
    Outbox {
        /// Only rows in this state.
        #[arg(long)]
        status: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// The daemon: schedules, planning and dispatch until SIGTERM; SIGHUP
    /// reloads the configuration.
    Run {
        /// One scheduler pass (the jobs due at --now), dispatch what is due, exit.
        #[arg(long)]
        once: bool,
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// A dry run of what is due at --now: follow-up, kind, channel and the
    /// guard's decision with its reasons. Sends nothing, writes nothing.
    Plan {
        /// Only this contact.
        #[arg(long)]
        contact: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Broadcasts of our own news (trade show, release) to a segment.
    Broadcast {
        #[command(subcommand)]
        action: plan::Broadcast,
    },
    /// The main job, live: the demo data moved to now in a fresh store, the
    /// daemon with its API on loopback, and a stream of events posted to it;
    /// prints what follows. Ctrl-C stops it.
    Demo(demo::Args),
    /// The store itself: `store copy` moves a SQLite store to PostgreSQL.
    Store {
        #[command(subcommand)]
        action: store::Action,
    },
    /// The task channel's call desk: delivered call tasks and their outcomes.
    Tasks {
        #[command(subcommand)]
        action: tasks::Action,
    },
    /// Message templates: what a contact would receive.
    Template {
        #[command(subcommand)]
        action: template::Action,
    },
    /// The call desk: who to call today, caller lists, call KPIs.
    Calls {
        #[command(subcommand)]
        action: calls::Action,
    },
    /// Lead scores across contacts.
    Scores {
        #[command(subcommand)]
        action: ScoresAction,
    },
    /// Per broadcast and nurture sequence: sent, opened, clicked,
    /// unsubscribed, clickers inside the target, conversions.
    Campaigns {
        #[arg(long)]
        json: bool,
    },
    /// The schedules, their last tick and next one, and the recent job runs.
    Schedules {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ScoresAction {
    /// A histogram of lead scores with the band thresholds, per band
    /// counts and percentiles.
    Distribution {
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
        bins: u32,
        #[arg(long)]
        json: bool,
    },
}

fn parse_kind(s: &str) -> Result<relance::core::model::FollowUpKind, String> {
    s.parse()
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| {
            format!("`{s}` is not an RFC 3339 instant such as 2026-03-01T09:30:00+01:00 ({e})")
        })
}

/// Exit codes shared by all commands.
pub mod exit {
    pub const OK: u8 = 0;
    pub const PARTIAL: u8 = 1;
    pub const INVALID: u8 = 2;
}

/// What a command reports besides success.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// Input that cannot be used at all (unreadable file, bad header).
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let clock = Clock::from_option(cli.now);
    match run(&cli, &clock) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Config(e)) => {
            eprintln!("{e}");
            ExitCode::from(exit::INVALID)
        }
        Err(Failure::Input(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::INVALID)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::INVALID)
        }
    }
}

fn run(cli: &Cli, clock: &Clock) -> Result<u8, Failure> {
    if let Command::Check { json } = &cli.command {
        // `check` reports configuration errors itself, as its output.
        return check::run(&cli.config, clock, *json);
    }
    if let Command::Demo(args) = &cli.command {
        // The demo writes its own configuration from this one.
        return demo::run(&cli.config, clock, args);
    }
    if let Command::Store { action } = &cli.command {
        // Names both stores itself: no configuration needed.
        return store::run(action);
    }
    let config = Config::load(&cli.config)?;
    init_logs(&config, cli.log_format);
    match &cli.command {
        Command::Check { .. } | Command::Demo(_) | Command::Store { .. } => {
            unreachable!("handled above")
        }
        Command::Import { what } => import::run(&config, clock, what),
        Command::Contacts { action } => contacts::run(&config, action),
        Command::Rescore { full, json } => scoring::rescore(&config, clock, *full, *json),
        Command::Score {
            id,
            all,
            history,
            what_if,
            json,
        } => match (id, what_if) {
            _ if *all => scoring::all(&config, clock, *json),
            (_, Some(other)) => scoring::what_if(&config, clock, other, *json),
            (Some(id), None) => scoring::score(&config, clock, id, *history, *json),
            (None, None) => Err(Failure::Input(
                "give a contact id, --all, or --what-if OTHER_CONFIG".into(),
            )),
        },
        Command::Deals { json } => scoring::deals(&config, clock, *json),
        Command::Fatigue { id, json } => fatigue::fatigue(&config, clock, id, *json),
        Command::Guard {
            id,
            channel,
            kind,
            priority,
            exempt,
            json,
        } => fatigue::guard(
            &config,
            clock,
            &fatigue::GuardArgs {
                id,
                channel,
                kind: *kind,
                priority: *priority,
                exempt: *exempt,
                json: *json,
            },
        ),
        Command::Pressure { json } => fatigue::pressure(&config, clock, *json),
        Command::Customers { json } => scoring::customers(&config, clock, *json),
        Command::Outbox {
            status,
            limit,
            json,
        } => outbox::run(&config, status.as_deref(), *limit, *json),
        Command::Run { once, json } => daemon::run(config, clock, *once, *json),
        Command::Plan { contact, json } => plan::plan(&config, clock, contact.as_deref(), *json),
        Command::Broadcast { action } => plan::broadcast(&config, clock, action),
        Command::Tasks { action } => tasks::run(&config, clock, action),
        Command::Template { action } => template::run(&config, clock, action),
        Command::Calls { action } => calls::run(&config, clock, action),
        Command::Scores {
            action: ScoresAction::Distribution { bins, json },
        } => calls::distribution(&config, *bins, *json),
        Command::Campaigns { json } => calls::campaigns(&config, clock, *json),
        Command::Schedules { limit, json } => daemon::schedules(&config, clock, *limit, *json),
    }
}

fn init_logs(config: &Config, flag: Option<LogFormatArg>) {
    let format = match flag {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log.format,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RELANCE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests in one process) is harmless.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Colour only for a person at a terminal: logs piped to a file or another
/// program stay plain text (and `NO_COLOR` turns colour off everywhere).
pub fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Opens the configured store, creating and migrating it as needed: the
/// one handle a command uses.
pub fn open_store(config: &Config) -> anyhow::Result<StoreHandle> {
    let store = relance::adapters::open_store(config);
    if config.store.postgres_url().is_some() {
        // The error names the database, never the password.
        store.context("opening the PostgreSQL store ([store] url)")
    } else {
        store.with_context(|| format!("opening the store {}", config.store_path().display()))
    }
}
