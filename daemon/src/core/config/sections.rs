//! The sections owned by the foundation: store, logs, channels, templates and
//! schedules. Scoring and fatigue sections live next to their engines.

use super::duration::Duration;
use super::path::{Issues, KeyPath, Validate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StoreConfig {
    /// SQLite file; a relative path is relative to the configuration file.
    pub path: PathBuf,
    /// How long a writer waits for another one before giving up.
    pub busy_timeout: Duration,
    /// SQLite page cache per connection, in megabytes.
    pub cache_mb: u32,
    /// A `postgres://` URL: the store is then that PostgreSQL database and
    /// `path` is not used. Empty or absent: SQLite. Usually
    /// `"${RELANCE_DATABASE_URL}"`, so that the password stays out of the file.
    pub url: Option<String>,
    /// Connections a process keeps to PostgreSQL at most.
    pub pool: u32,
}

/// The URL may carry a password: never printed.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("busy_timeout", &self.busy_timeout)
            .field("cache_mb", &self.cache_mb)
            .field("url", &self.url.as_ref().map(|_| "redacted"))
            .field("pool", &self.pool)
            .finish()
    }
}

impl StoreConfig {
    /// The PostgreSQL URL, if the store is PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("relance.db"),
            busy_timeout: Duration(chrono::Duration::seconds(30)),
            cache_mb: 16,
            url: None,
            pool: 16,
        }
    }
}

impl Validate for StoreConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.path.as_os_str().is_empty() {
            issues.push(at.key("path"), "must name a file");
        }
        if self.busy_timeout.seconds() <= 0 {
            issues.push(at.key("busy_timeout"), "must be positive");
        }
        if !(2..=16_384).contains(&self.cache_mb) {
            issues.push(at.key("cache_mb"), "must be between 2 and 16384 megabytes");
        }
        if let Some(url) = self.postgres_url() {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                issues.push(
                    at.key("url"),
                    "must be a PostgreSQL URL (postgres://user@host:port/database)",
                );
            } else if let Err(e) = url.parse::<tokio_postgres::Config>() {
                issues.push(at.key("url"), format!("not a valid PostgreSQL URL: {e}"));
            }
        }
        if !(1..=1_000).contains(&self.pool) {
            issues.push(at.key("pool"), "must be between 1 and 1000 connections");
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `relance=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Validate for LogConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            issues.push(at.key("level"), format!("not a valid log filter: {e}"));
        }
    }
}

/// Whether a contact with no recorded consent may be reached on a channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDefault {
    /// Reachable unless they opted out (B2B email under legitimate interest).
    #[default]
    OptOut,
    /// Reachable only after an explicit opt-in (SMS in most countries).
    OptIn,
}

/// The plugin name of the task channel: its sends are call tasks kept by
/// relance itself.
pub const TASK_PLUGIN: &str = "task";

/// A way to reach contacts, served by a channel plugin.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ChannelConfig {
    /// The plugin that delivers on this channel (`email`, `webhook`, `crm` …).
    pub plugin: String,
    /// The event recorded when a send is delivered; it is what the fatigue
    /// guard charges, so sends and imported actions weigh the same.
    pub event: String,
    #[serde(default)]
    pub consent: ConsentDefault,
    /// Plugin-specific settings, handed to the plugin as JSON.
    #[serde(default)]
    pub settings: toml::Table,
    /// Plugin instances working side by side (each on its own thread).
    #[serde(default = "one_instance")]
    pub instances: u32,
}

fn one_instance() -> u32 {
    1
}

impl Validate for ChannelConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.plugin.trim().is_empty() {
            issues.push(at.key("plugin"), "must name a plugin");
        }
        if self.event.trim().is_empty() {
            issues.push(at.key("event"), "must name an event type");
        }
        if !(1..=64).contains(&self.instances) {
            issues.push(at.key("instances"), "must be between 1 and 64");
        }
    }
}

/// Message content for one channel: inline Jinja templates, or files under
/// `[templating] dir` (see `crate::domain::templates`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TemplateConfig {
    pub channel: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
}

/// Checked when the templates compile (`crate::domain::templates::compile`): the
/// parts may come from files.
impl Validate for TemplateConfig {
    fn validate(&self, _at: &KeyPath, _issues: &mut Issues) {}
}

/// What a schedule runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Rescore,
    Plan,
    Dispatch,
    /// The pressure × value grid the dashboard shows (a scan of every
    /// customer: hourly or daily, not every minute).
    Pressure,
    /// Deletes delivered sends, decisions and score snapshots older than
    /// `[retention]` says, in small batches (daily is enough).
    Prune,
}

/// What to do with ticks missed while the daemon was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    Skip,
    #[default]
    RunOnce,
    CatchUp,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ScheduleConfig {
    pub job: Job,
    /// Five-field cron expression (six with seconds), in `timezone`.
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: Tz,
    #[serde(default)]
    pub misfire: Misfire,
    /// With `misfire = "catch_up"`: at most this many missed ticks are run.
    #[serde(default)]
    pub catch_up_limit: Option<u32>,
}

fn utc() -> Tz {
    Tz::UTC
}

impl ScheduleConfig {
    /// The compiled expression. Validation guarantees it parses.
    pub fn compiled(&self) -> Result<croner::Cron, croner::errors::CronError> {
        croner::Cron::from_str(&self.cron)
    }
}

impl Validate for ScheduleConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if let Err(e) = self.compiled() {
            issues.push(
                at.key("cron"),
                format!("invalid cron expression `{}`: {e}", self.cron),
            );
        }
        match (self.misfire, self.catch_up_limit) {
            (Misfire::CatchUp, None) => issues.push(
                at.key("catch_up_limit"),
                "required with misfire = \"catch_up\" (the most missed ticks to run)",
            ),
            (Misfire::CatchUp, Some(0)) => {
                issues.push(at.key("catch_up_limit"), "must be at least 1")
            }
            (Misfire::Skip | Misfire::RunOnce, Some(_)) => issues.push(
                at.key("catch_up_limit"),
                "only meaningful with misfire = \"catch_up\"",
            ),
            _ => {}
        }
    }
}

/// How long the store keeps what only the past needs: a `prune` schedule
/// deletes older rows in batches of `batch`, so that tables and their
/// indexes stop growing with time.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Delivered sends (outbox rows `sent`), from their settlement. Rows
    /// of nurture sequences, and of broadcasts not over yet, are kept:
    /// planning reads them to know what it already sent.
    pub sent: Duration,
    /// The guard's and the planner's logged decisions.
    pub decisions: Duration,
    /// Points of the score history (`relance score --history`, the
    /// contact page's film).
    pub snapshots: Duration,
    /// Rows deleted per transaction: short transactions, so that sends and
    /// passes never wait long behind a prune.
    pub batch: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sent: Duration(chrono::Duration::days(90)),
            decisions: Duration(chrono::Duration::days(90)),
            snapshots: Duration(chrono::Duration::days(365)),
            batch: 1_000,
        }
    }
}

impl Validate for RetentionConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        for (key, d) in [
            ("sent", self.sent),
            ("decisions", self.decisions),
            ("snapshots", self.snapshots),
        ] {
            if d.seconds() < 86_400 {
                issues.push(at.key(key), "must be at least 1d");
            }
        }
        if !(1..=100_000).contains(&self.batch) {
            issues.push(at.key("batch"), "must be between 1 and 100000 rows");
        }
    }
}

/// The `relance run` process itself.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DaemonConfig {
    /// How long a schedule stays claimed without a heartbeat: the running
    /// process renews it every third of it, so a killed process's claim
    /// lapses within this delay and another start takes the schedule over.
    pub schedule_lease: Duration,
}

/// Shortest schedule lease: the heartbeat (a third of it) must not spin.
pub const MIN_SCHEDULE_LEASE_SECS: i64 = 3;

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            schedule_lease: Duration(chrono::Duration::seconds(30)),
        }
    }
}

impl Validate for DaemonConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if !(MIN_SCHEDULE_LEASE_SECS..=3_600).contains(&self.schedule_lease.seconds()) {
            issues.push(
                at.key("schedule_lease"),
                format!("must be between {MIN_SCHEDULE_LEASE_SECS}s and 1h"),
            );
        }
    }
}

/// The HTTP API (`relance run` serves it when enabled). Secrets come from
/// the environment (`${RELANCE_API_TOKEN}`) and are never printed.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiConfig {
    pub enabled: bool,
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// Bearer tokens accepted on everything but health, tracking and unsubscribe.
    #[serde(skip_serializing)]
    pub tokens: Vec<String>,
    /// Signs tracking and unsubscribe links (HMAC-SHA256).
    #[serde(skip_serializing)]
    pub tracking_secret: String,
    /// The secret in force before a rotation: links signed with it keep
    /// working until `previous_tracking_secret_until`.
    #[serde(skip_serializing)]
    pub previous_tracking_secret: String,
    pub previous_tracking_secret_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Public base URL of the API, for the links put in emails.
    pub public_url: String,
    /// Largest accepted request body, in kilobytes.
    pub body_limit_kb: u32,
    /// Most items in one batch request.
    pub max_batch: u32,
    /// `[api.ui]`: the dashboard under `/ui/`.
    pub ui: UiConfig,
}

/// The dashboard (`[api.ui]`). People log in with one of `api.tokens`
/// (full access) or of `read_only_tokens` (pages only: no erase, no
/// outcome); the session cookie is signed with a key derived from
/// `api.tracking_secret`, so there is no other secret to manage.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct UiConfig {
    pub enabled: bool,
    /// Tokens that open a read-only session.
    #[serde(skip_serializing)]
    pub read_only_tokens: Vec<String>,
    /// How long a session lasts, in hours.
    pub session_hours: u32,
    /// Marks the cookie `Secure` (browsers then send it over https only);
    /// on by itself when `public_url` is https.
    pub secure_cookie: bool,
    /// The folder whose `*.toml` files the what-if offers; empty: the
    /// configuration file's folder.
    pub rules_dir: String,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            read_only_tokens: Vec::new(),
            session_hours: 12,
            secure_cookie: false,
            rules_dir: String::new(),
        }
    }
}

impl std::fmt::Debug for UiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiConfig")
            .field("enabled", &self.enabled)
            .field(
                "read_only_tokens",
                &format_args!("[{} redacted]", self.read_only_tokens.len()),
            )
            .field("session_hours", &self.session_hours)
            .field("secure_cookie", &self.secure_cookie)
            .field("rules_dir", &self.rules_dir)
            .finish()
    }
}

/// Shortest accepted token or secret: guessing must stay out of reach.
pub const MIN_SECRET_LEN: usize = 16;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8080".into(),
            tokens: Vec::new(),
            tracking_secret: String::new(),
            previous_tracking_secret: String::new(),
            previous_tracking_secret_until: None,
            public_url: "http://127.0.0.1:8080".into(),
            body_limit_kb: 16 * 1024,
            max_batch: 10_000,
            ui: UiConfig::default(),
        }
    }
}

// Secrets stay out of logs and debug output.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("tracking_secret", &"redacted")
            .field("previous_tracking_secret", &"redacted")
            .field(
                "previous_tracking_secret_until",
                &self.previous_tracking_secret_until,
            )
            .field("public_url", &self.public_url)
            .field("body_limit_kb", &self.body_limit_kb)
            .field("max_batch", &self.max_batch)
            .field("ui", &self.ui)
            .finish()
    }
}

impl Validate for ApiConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            issues.push(
                at.key("listen"),
                format!("`{}` is not an address such as 127.0.0.1:8080", self.listen),
            );
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            issues.push(at.key("public_url"), "must be an http(s) URL");
        }
        if self.body_limit_kb == 0 {
            issues.push(at.key("body_limit_kb"), "must be positive");
        }
        if self.max_batch == 0 {
            issues.push(at.key("max_batch"), "must be positive");
        }
        if !(1..=24 * 31).contains(&self.ui.session_hours) {
            issues.push(
                at.key("ui").key("session_hours"),
                "must be between 1 and 744 (a month)",
            );
        }
        if !self.enabled {
            return;
        }
        for (i, t) in self.ui.read_only_tokens.iter().enumerate() {
            if !t.is_empty()
                && (t.trim().len() < MIN_SECRET_LEN || t.chars().any(char::is_whitespace))
            {
                issues.push(
                    at.key("ui").key("read_only_tokens").index(i),
                    format!("a token needs at least {MIN_SECRET_LEN} characters and no spaces"),
                );
            }
        }
        if self.tokens.is_empty() {
            issues.push(
                at.key("tokens"),
                "the API needs at least one token (tokens = [\"${RELANCE_API_TOKEN}\"])",
            );
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.trim().len() < MIN_SECRET_LEN {
                issues.push(
                    at.key("tokens").index(i),
                    format!(
                        "a token needs at least {MIN_SECRET_LEN} characters other than spaces (is its variable set?)"
                    ),
                );
            } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                issues.push(
                    at.key("tokens").index(i),
                    "a token cannot hold spaces or control characters (it travels in a header)",
                );
            }
        }
        match (
            self.previous_tracking_secret.is_empty(),
            self.previous_tracking_secret_until,
        ) {
            (true, Some(_)) => issues.push(
                at.key("previous_tracking_secret_until"),
                "only meaningful with previous_tracking_secret",
            ),
            (false, None) => issues.push(
                at.key("previous_tracking_secret"),
                "needs previous_tracking_secret_until: how long links signed with it keep working",
            ),
            (false, Some(_)) if self.previous_tracking_secret.trim().len() < MIN_SECRET_LEN => {
                issues.push(
                    at.key("previous_tracking_secret"),
                    format!("at least {MIN_SECRET_LEN} characters other than spaces"),
                )
            }
            _ => {}
        }
        if self.tracking_secret.trim().len() < MIN_SECRET_LEN {
            issues.push(
                at.key("tracking_secret"),
                format!(
                    "required with the API, at least {MIN_SECRET_LEN} characters (tracking_secret = \"${{RELANCE_TRACKING_SECRET}}\")"
                ),
            );
        }
    }
}
