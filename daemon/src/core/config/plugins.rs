//! The `[plugins]` section: where dynamic plugins may come from and how the
//! host treats them.

use crate::core::config::duration::Duration;
use crate::core::config::path::{Issues, KeyPath, Validate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plugins linked into the daemon, by the name channels use: the
/// configuration checks channels against these (and `[plugins.load]`);
/// the plugin host holds the same list (tested there).
pub const BUILTIN_PLUGINS: [&str; 5] = ["email", "webhook", "crm", "task", "spool"];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// The only folder shared libraries are loaded from; relative to the
    /// configuration file.
    pub dir: PathBuf,
    /// How long the daemon waits for one plugin call before cancelling it.
    pub call_timeout: Duration,
    /// Calls waiting per channel instance; beyond it a send is deferred.
    pub queue: usize,
    /// First wait before recreating a failed instance; doubles each time.
    pub restart_backoff: Duration,
    /// Ceiling of that wait.
    pub restart_backoff_max: Duration,
    /// Responses above this many bytes are refused (a runaway plugin).
    pub max_response_bytes: usize,
    /// Plugins loaded from `dir`, by plugin name; others are the built-in ones.
    pub load: BTreeMap<String, PluginFile>,
}

/// One shared library in the plugin folder.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PluginFile {
    /// File name inside `dir` (e.g. `libacme_sms.so`).
    pub file: PathBuf,
    /// Hex SHA-256 the file must have; unset means any content is accepted.
    #[serde(default)]
    pub sha256: Option<String>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins"),
            call_timeout: secs(30),
            queue: 64,
            restart_backoff: secs(1),
            restart_backoff_max: secs(300),
            max_response_bytes: 1 << 20,
            load: BTreeMap::new(),
        }
    }
}

fn secs(n: i64) -> Duration {
    Duration(chrono::Duration::seconds(n))
}

impl PluginsConfig {
    /// `dir` made absolute against the configuration file's folder.
    pub fn resolved_dir(&self, config_file: &Path) -> PathBuf {
        if self.dir.is_absolute() {
            self.dir.clone()
        } else {
            config_file
                .parent()
                .unwrap_or(Path::new("."))
                .join(&self.dir)
        }
    }
}

/// A std duration for timers; non-positive durations were refused by `validate`.
pub fn to_std(d: Duration) -> std::time::Duration {
    d.0.to_std().unwrap_or_default()
}

impl Validate for PluginsConfig {
    fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.dir.as_os_str().is_empty() {
            issues.push(at.key("dir"), "must name a folder");
        }
        for (key, d) in [
            ("call_timeout", self.call_timeout),
            ("restart_backoff", self.restart_backoff),
            ("restart_backoff_max", self.restart_backoff_max),
        ] {
            if d.0 <= chrono::Duration::zero() {
                issues.push(at.key(key), "must be positive");
            }
        }
        if self.restart_backoff_max < self.restart_backoff {
            issues.push(
                at.key("restart_backoff_max"),
                "must not be shorter than restart_backoff",
            );
        }
        if self.queue == 0 {
            issues.push(at.key("queue"), "must be at least 1");
        }
        if self.max_response_bytes < 1024 {
            issues.push(at.key("max_response_bytes"), "must be at least 1024");
        }
        for (name, p) in &self.load {
            let here = at.key("load").key(name);
            let file = &p.file;
            if file.is_absolute() || file.components().count() != 1 || file.as_os_str().is_empty() {
                issues.push(
                    here.key("file"),
                    "must be a bare file name inside the plugin directory",
                );
            }
            if let Some(h) = &p.sha256
                && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
            {
                issues.push(here.key("sha256"), "must be 64 hexadecimal digits");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let mut issues = Issues::default();
        PluginsConfig::default().validate(&KeyPath::root().key("plugins"), &mut issues);
        assert!(issues.is_empty(), "{issues:?}");

        let c: PluginsConfig = toml::from_str(
            r#"
            queue = 0
            call_timeout = "0s"
            [load.x]
            file = "../x.so"
            sha256 = "abc"
            "#,
        )
        .unwrap();
        let mut issues = Issues::default();
        c.validate(&KeyPath::root().key("plugins"), &mut issues);
        let keys: Vec<String> = issues.0.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            keys,
            [
                "plugins.call_timeout",
                "plugins.queue",
                "plugins.load.x.file",
                "plugins.load.x.sha256"
            ]
        );
    }
}
