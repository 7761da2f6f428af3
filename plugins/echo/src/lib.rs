//! A test plugin that proves the host's isolation: each request picks a
//! fault mode in `vars.fault` (`sleep`, `panic`, `invalid_json`, `huge`,
//! `ignore_cancel`, `retryable`, `permanent`), otherwise the delivery is
//! echoed back as `ok`.

use relance_plugin_api::sdk::handle_typed;
use relance_plugin_api::{
    Action, Cancel, DeliverRequest, Manifest, Outcome, PROTOCOL, Plugin, ProtocolVersion, Request,
    RequestBody, SettingDoc,
};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug)]
pub struct Echo {
    /// Settings are echoed back, to show what the plugin received.
    settings: Value,
}

fn ms(req: &DeliverRequest, key: &str, default: u64) -> u64 {
    req.vars.get(key).and_then(Value::as_u64).unwrap_or(default)
}

fn fault(request: &[u8]) -> Option<(String, DeliverRequest)> {
    let r: Request = serde_json::from_slice(request).ok()?;
    match r.body {
        RequestBody::Deliver(d) => {
            let f = d.vars.get("fault")?.as_str()?.to_owned();
            Some((f, *d))
        }
        _ => None,
    }
}

impl Plugin for Echo {
    fn manifest() -> Manifest {
        Manifest {
            name: "echo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: if cfg!(feature = "future-protocol") {
                ProtocolVersion {
                    major: PROTOCOL.major + 1,
                    minor: 0,
                }
            } else {
                PROTOCOL
            },
            description: "test plugin: echo, with per-request fault modes".into(),
            actions: vec![Action::Message, Action::CallTask, Action::ScoreUpdate],
            settings: vec![SettingDoc {
                name: "fail_create".into(),
                required: false,
                secret: false,
                doc: "refuse to create an instance (tests permanent configuration errors)".into(),
            }],
            max_batch: 0,
        }
    }

    fn create(settings: Value) -> Result<Self, String> {
        if settings.get("fail_create").and_then(Value::as_bool) == Some(true) {
            return Err("fail_create is set".into());
        }
        if settings.get("panic_create").and_then(Value::as_bool) == Some(true) {
            panic!("panic_create is set");
        }
        Ok(Self { settings })
    }

    fn deliver(&self, request: DeliverRequest, cancel: &Cancel) -> Outcome {
        match request.vars.get("fault").and_then(Value::as_str) {
            Some("sleep")
                if cancel.sleep(Duration::from_millis(ms(&request, "sleep_ms", 60_000))) =>
            {
                return Outcome::retryable("cancelled");
            }
            Some("ignore_cancel") => {
                std::thread::sleep(Duration::from_millis(ms(&request, "sleep_ms", 60_000)));
            }
            Some("panic") => panic!("echo: panic requested for {}", request.idempotency_key),
            Some("retryable") => {
                return Outcome::Retryable {
                    retry_after_secs: request.vars.get("retry_after").and_then(Value::as_u64),
                    reason: "echo: retryable requested".into(),
                };
            }
            Some("permanent") => return Outcome::permanent("echo: permanent requested"),
            _ => {}
        }
        Outcome::Ok {
            remote_id: Some(request.idempotency_key.clone()),
            data: Some(json!({
                "contact": request.contact.id,
                "attempt": request.attempt,
                "now": request.now,
                "settings": self.settings,
            })),
        }
    }

    fn handle(&self, request: &[u8], cancel: &Cancel) -> Vec<u8> {
        match fault(request) {
            Some((f, _)) if f == "invalid_json" => b"{this is not json".to_vec(),
            Some((f, d)) if f == "huge" => {
                let size = ms(&d, "size", 64 * 1024 * 1024) as usize;
                vec![b' '; size]
            }
            _ => handle_typed(self, request, cancel),
        }
    }
}

relance_plugin_api::export_plugin!(Echo);

/// A table claiming the next ABI version, to prove the host refuses it.
#[cfg(all(feature = "wrong-abi", not(feature = "export")))]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn relance_plugin_entry() -> *const relance_plugin_api::abi::PluginTable {
    static TABLE: std::sync::OnceLock<relance_plugin_api::abi::PluginTable> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = relance_plugin_api::sdk::build_table::<Echo>();
        t.abi_version = relance_plugin_api::abi::ABI_VERSION + 1;
        t
    })
}
