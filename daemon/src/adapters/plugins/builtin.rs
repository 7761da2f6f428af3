//! Channels that need no external service, built into the daemon: `task`
//! (call tasks kept in relance for its own call desk) and `spool` (one
//! NDJSON line per send, for staging and dry runs).
//!
//! They implement the same safe [`Plugin`] trait as every plugin and reach
//! the host through the same ABI table, so the host isolates, times out and
//! restarts them like the others and nothing in the dispatch path knows
//! they are special. Neither needs the store: a task is the delivered
//! outbox row itself (see [`crate::pipeline::tasks`]), and the spool only appends to
//! its file.

use crate::core::config::sections::TASK_PLUGIN;
use relance_plugin_api::abi::PluginTable;
use relance_plugin_api::host::Table;
use relance_plugin_api::sdk::build_table;
use relance_plugin_api::{
    Action, Cancel, DeliverRequest, Health, HealthcheckRequest, Manifest, Outcome, PROTOCOL,
    Plugin, SettingDoc,
};
use relance_plugin_webhook::sign::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The task channel: delivering a call task stores it for the call desk
/// (`relance tasks list`, `GET /v1/tasks`); its outcome is recorded later.
#[derive(Debug)]
pub struct TaskPlugin;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSettings {}

impl Plugin for TaskPlugin {
    fn manifest() -> Manifest {
        Manifest {
            name: TASK_PLUGIN.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL,
            description: "call tasks kept in relance for its own call desk".into(),
            actions: vec![Action::CallTask, Action::Message],
            settings: Vec::new(),
            max_batch: 0,
        }
    }

    fn create(settings: Value) -> Result<Self, String> {
        serde_json::from_value::<TaskSettings>(settings)
            .map_err(|e| format!("task settings: {e} (the task channel takes no settings)"))?;
        Ok(Self)
    }

    /// The outbox row that carries this request becomes the task when it
    /// is settled as sent; its id is the idempotency key.
    fn deliver(&self, request: DeliverRequest, _cancel: &Cancel) -> Outcome {
        match request.action {
            Action::CallTask | Action::Message => Outcome::ok(request.idempotency_key),
            other => Outcome::permanent(format!("the task channel cannot {other:?}")),
        }
    }
}

/// The spool channel: each send is one line of NDJSON holding the body a
/// webhook receiver would get and its Standard Webhooks headers.
#[derive(Debug)]
pub struct SpoolPlugin {
    path: PathBuf,
    event_type: String,
    secret: Option<Secret>,
    /// The file, and the ids already in it: a retry writes no second line.
    state: Mutex<(std::fs::File, HashSet<String>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolSettings {
    path: PathBuf,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default = "default_event_type")]
    event_type: String,
}

fn default_event_type() -> String {
    "relance.follow_up".into()
}

impl Plugin for SpoolPlugin {
    fn manifest() -> Manifest {
        let doc = SettingDoc::new;
        Manifest {
            name: "spool".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL,
            description: "one NDJSON line per send, signed like a webhook (staging, dry runs)"
                .into(),
            actions: vec![
                Action::Message,
                Action::CallTask,
                Action::ScoreUpdate,
                Action::Activity,
            ],
            settings: vec![
                doc("path", true, false, "the NDJSON file, created if missing"),
                doc(
                    "secret",
                    false,
                    true,
                    "`whsec_` + base64: each line carries its webhook-signature",
                ),
                doc(
                    "event_type",
                    false,
                    false,
                    "`type` of the body (default relance.follow_up)",
                ),
            ],
            max_batch: 0,
        }
    }

    fn create(settings: Value) -> Result<Self, String> {
        let s: SpoolSettings =
            serde_json::from_value(settings).map_err(|e| format!("spool settings: {e}"))?;
        let secret = s
            .secret
            .as_deref()
            .map(Secret::parse)
            .transpose()
            .map_err(|e| format!("`secret`: {e}"))?;
        if let Some(dir) = s.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("`path` {}: {e}", dir.display()))?;
        }
        let mut seen = HashSet::new();
        if let Ok(f) = std::fs::File::open(&s.path) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| format!("`path` {}: {e}", s.path.display()))?;
                if let Some(id) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
                {
                    seen.insert(id);
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.path)
            .map_err(|e| format!("`path` {}: {e}", s.path.display()))?;
        Ok(Self {
            path: s.path,
            event_type: s.event_type,
            secret,
            state: Mutex::new((file, seen)),
        })
    }

    fn deliver(&self, request: DeliverRequest, _cancel: &Cancel) -> Outcome {
        let id = request.idempotency_key.clone();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.1.contains(&id) {
            return Outcome::ok(id);
        }
        let body = relance_plugin_webhook::payload(&self.event_type, &request);
        let timestamp = request.now.timestamp();
        let signature = self.secret.as_ref().map(|s| {
            s.sign(
                &id,
                timestamp,
                serde_json::to_string(&body).unwrap_or_default().as_bytes(),
            )
        });
        let line = json!({
            "id": id,
            "timestamp": timestamp,
            "signature": signature,
            "body": body,
        });
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        match state.0.write_all(&bytes).and_then(|()| state.0.flush()) {
            Ok(()) => {
                state.1.insert(id.clone());
                Outcome::ok(id)
            }
            Err(e) => Outcome::retryable(format!("cannot write {}: {e}", self.path.display())),
        }
    }

    fn healthcheck(&self, _request: HealthcheckRequest, _cancel: &Cancel) -> Health {
        Health {
            healthy: self.path.exists(),
            detail: format!("writing to {}", self.path.display()),
        }
    }
}

/// The task plugin's ABI table.
pub fn task_table() -> &'static PluginTable {
    static TABLE: OnceLock<PluginTable> = OnceLock::new();
    TABLE.get_or_init(build_table::<TaskPlugin>)
}

/// The spool plugin's ABI table.
pub fn spool_table() -> &'static PluginTable {
    static TABLE: OnceLock<PluginTable> = OnceLock::new();
    TABLE.get_or_init(build_table::<SpoolPlugin>)
}

/// The first-party plugins linked into the daemon, so that it works out of
/// the box; they are still called through their ABI table, exactly like a
/// shared library. A `[plugins.load.NAME]` entry overrides one of them.
pub fn builtin_tables() -> [&'static PluginTable; 5] {
    [
        relance_plugin_email::plugin_table(),
        relance_plugin_webhook::plugin_table(),
        relance_plugin_crm::plugin_table(),
        task_table(),
        spool_table(),
    ]
}

/// The names channels use for the built-in plugins.
pub fn builtin_names() -> Vec<String> {
    builtin_tables()
        .into_iter()
        .filter_map(|t| Table::linked(t).ok())
        .map(|(table, _)| table.name().to_owned())
        .collect()
}

#[cfg(test)]
mod names {
    #[test]
    fn the_configuration_knows_every_built_in_plugin() {
        let linked = super::builtin_names();
        assert_eq!(linked, crate::core::config::plugins::BUILTIN_PLUGINS);
    }
}
