//! The `[outbox]` section.

use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath, Validate};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// How long a claimed row is reserved for the process that claimed it.
    pub lease: Duration,
    /// Attempts before a row is declared dead.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Rows claimed per dispatch round.
    pub batch: u32,
    /// On shutdown, how long in-flight sends may take before their claims
    /// are released for the next start.
    pub shutdown_grace: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            lease: Duration(chrono::Duration::minutes(5)),
            max_attempts: 8,
            backoff_base: Duration(chrono::Duration::seconds(30)),
            backoff_max: Duration(chrono::Duration::hours(6)),
            batch: 500,
            shutdown_grace: Duration(chrono::Duration::seconds(30)),
        }
    }
}

impl Validate for OutboxConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.lease.seconds() < 1 {
            issues.push(at.key("lease"), "must be at least 1s");
        }
        if self.max_attempts == 0 {
            issues.push(at.key("max_attempts"), "must be at least 1");
        }
        if self.backoff_base.seconds() < 1 {
            issues.push(at.key("backoff_base"), "must be at least 1s");
        }
        if self.backoff_max < self.backoff_base {
            issues.push(
                at.key("backoff_max"),
                "must not be shorter than backoff_base",
            );
        }
        if self.shutdown_grace.seconds() < 0 {
            issues.push(at.key("shutdown_grace"), "must not be negative");
        }
        if self.batch == 0 {
            issues.push(at.key("batch"), "must be at least 1");
        }
    }
}
