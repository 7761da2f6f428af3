//! Opening the configured channels. A channel whose plugin refuses its
//! settings (the shipped file leaves SMTP, webhook and CRM settings to each
//! installation) is *not configured*: the daemon starts with the others,
//! says which ones wait and what to write, and its follow-ups wait in the
//! outbox instead of failing.

use super::PluginHost;
use crate::core::config::sections::ChannelConfig;
use crate::pipeline::config::Config;
use relance_plugin_api::net::Guard;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A channel that could not be opened, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unconfigured {
    pub channel: String,
    pub plugin: String,
    /// The plugin's own words.
    pub reason: String,
    /// The keys to set, an example and the documentation section.
    pub help: String,
    /// Nurture steps and triggers that send on this channel.
    pub followups: Vec<String>,
}

impl std::fmt::Display for Unconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "channel `{}` (plugin {}) is not configured: {}. {}",
            self.channel, self.plugin, self.reason, self.help
        )
    }
}

/// Opens every configured channel; returns those that could not be opened
/// (also recorded in the host, which then refuses sends on them as
/// [`super::DeliveryError::Unconfigured`]).
pub async fn open_all(host: &PluginHost, config: &Config) -> Vec<Unconfigured> {
    let mut out = Vec::new();
    for (name, channel) in &config.channels {
        if let Err(e) = host.open_channel(name, channel).await {
            let reason = match &e {
                super::HostError::Create { message, .. } => message.clone(),
                other => other.to_string(),
            };
            let u = describe(config, name, &channel.plugin, reason);
            host.mark_unconfigured(name, u.to_string());
            out.push(u);
        }
    }
    out
}

/// The settings handed to the plugin: the relative paths of the built-in
/// plugins (email `dir`, spool `path`) made absolute against the
/// configuration file's folder, like `[store] path`.
pub fn anchor_paths(channel: &ChannelConfig, base: &Path) -> toml::Table {
    let mut settings = channel.settings.clone();
    let key = match channel.plugin.as_str() {
        "email" => "dir",
        "spool" => "path",
        _ => return settings,
    };
    if let Some(toml::Value::String(p)) = settings.get(key)
        && Path::new(p).is_relative()
    {
        let anchored = base.join(p).to_string_lossy().into_owned();
        settings.insert(key.into(), toml::Value::String(anchored));
    }
    settings
}

/// The message for a channel whose plugin refused its settings.
pub fn describe(config: &Config, channel: &str, plugin: &str, reason: String) -> Unconfigured {
    Unconfigured {
        channel: channel.into(),
        plugin: plugin.into(),
        reason,
        help: help(channel, plugin),
        followups: followups_using(config, channel),
    }
}

/// Keys, an example and the documentation section, per built-in plugin.
pub fn help(channel: &str, plugin: &str) -> String {
    let (keys, example) = match plugin {
        "email" => (
            "`host` and `from` (SMTP), or `transport = \"file\"`, `dir` and `from` (.eml files)",
            "host = \"smtp.example.com\", from = \"Sales <sales@example.com>\", username = \"relance\", password = \"${RELANCE_SMTP_PASSWORD}\"",
        ),
        "webhook" => (
            "`url` and `secret`",
            "url = \"https://hooks.example.com/relance\", secret = \"${RELANCE_WEBHOOK_SECRET}\"",
        ),
        "crm" => (
            "`url` and `token`",
            "url = \"https://crm.example.com\", token = \"${CRM_TOKEN}\"",
        ),
        "spool" => ("`path`", "path = \"spool/sends.ndjson\""),
        "task" => ("nothing (the task channel takes no settings)", ""),
        _ => {
            return format!(
                "Set its settings under [channels.{channel}.settings] (see the plugin's documentation and docs/plugins.md#configuration)."
            );
        }
    };
    if example.is_empty() {
        return format!("It needs {keys}: see docs/plugins.md#{plugin}.");
    }
    format!(
        "Set {keys} under [channels.{channel}.settings], e.g. `[channels.{channel}.settings]` {example} (secrets as ${{VAR}}); see docs/plugins.md#{plugin}."
    )
}

/// The follow-ups that send on `channel`: nurture steps and triggers
/// (broadcasts are created at run time and name their channel themselves).
pub fn followups_using(config: &Config, channel: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in &config.followups.nurture {
        for (i, s) in n.steps.iter().enumerate() {
            if s.channel == channel {
                out.push(format!("nurture {} step {}", n.name, i + 1));
            }
        }
    }
    for t in &config.followups.triggers {
        if t.action.channel == channel {
            out.push(format!("trigger {}", t.name));
        }
    }
    out
}

/// Warnings about channel settings that load but are dangerous: an
/// `allow_networks` list that opens several internal ranges of the SSRF
/// guard at once (`0.0.0.0/0`, `::/0`).
pub fn settings_warnings(config: &Config) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (name, channel) in &config.channels {
        let Some(list) = channel.settings.get("allow_networks") else {
            continue;
        };
        let entries: Vec<String> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(guard) = Guard::from_allow(&entries) {
            let w = guard.broad_warnings();
            if !w.is_empty() {
                out.insert(name.clone(), w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(plugin: &str, settings: &str) -> ChannelConfig {
        ChannelConfig {
            plugin: plugin.into(),
            event: "e".into(),
            consent: Default::default(),
            settings: toml::from_str(settings).expect("settings"),
            instances: 1,
        }
    }

    #[test]
    fn built_in_paths_start_at_the_configuration_folder() {
        let base = Path::new("/etc/relance");
        let email = anchor_paths(&channel("email", "dir = \"mail\""), base);
        assert_eq!(email["dir"].as_str(), Some("/etc/relance/mail"));
        let spool = anchor_paths(&channel("spool", "path = \"/var/spool/x.ndjson\""), base);
        assert_eq!(spool["path"].as_str(), Some("/var/spool/x.ndjson"));
        let other = anchor_paths(&channel("webhook", "dir = \"mail\""), base);
        assert_eq!(other["dir"].as_str(), Some("mail"));
    }

    #[test]
    fn help_names_the_keys_an_example_and_the_section() {
        for (plugin, key) in [
            ("email", "`from`"),
            ("webhook", "`secret`"),
            ("crm", "`token`"),
            ("spool", "`path`"),
        ] {
            let h = help("ch", plugin);
            assert!(h.contains(key), "{h}");
            assert!(h.contains("[channels.ch.settings]"), "{h}");
            assert!(h.contains(&format!("docs/plugins.md#{plugin}")), "{h}");
        }
        assert!(help("ch", "acme_sms").contains("[channels.ch.settings]"));
    }
}
