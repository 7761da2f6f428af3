//! The whole configuration: one TOML file, read section by section (see
//! `core::config::Document`), each section checked by itself, then the
//! references between sections. It lives here, above every section, because
//! it assembles the sections of the core, the domain and the plugin host;
//! every pass, adapter and command takes it.

use crate::core::config::plugins::BUILTIN_PLUGINS;
use crate::core::config::{
    ApiConfig, ChannelConfig, ConfigError, ConfigErrors, DaemonConfig, Document, Issues, KeyPath,
    LogConfig, PluginsConfig, RetentionConfig, ScheduleConfig, StoreConfig, TemplateConfig,
    resolve,
};
use crate::domain::fatigue::config::FatigueConfig;
use crate::domain::followups::config::FollowupsConfig;
use crate::domain::ingest::range::IngestConfig;
use crate::domain::outbox::config::OutboxConfig;
use crate::domain::scoring::config::ScoringConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from; relative paths inside are relative to it.
    pub file: PathBuf,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub scoring: ScoringConfig,
    pub fatigue: FatigueConfig,
    pub channels: BTreeMap<String, ChannelConfig>,
    pub templates: BTreeMap<String, TemplateConfig>,
    pub schedules: BTreeMap<String, ScheduleConfig>,
    pub outbox: OutboxConfig,
    pub plugins: PluginsConfig,
    pub followups: FollowupsConfig,
    pub api: ApiConfig,
    pub daemon: DaemonConfig,
    pub ingest: IngestConfig,
    /// `[templating]`: the folder of template files, the default language.
    pub templating: crate::domain::templates::TemplatingConfig,
    /// Every template compiled once at load (and at SIGHUP).
    pub compiled_templates: crate::domain::templates::Templates,
    /// `[calls]`: the call desk and the sales-ops reports.
    pub calls: crate::domain::desk::DeskConfig,
    /// `[retention]`: how long the `prune` job keeps past rows.
    pub retention: RetentionConfig,
}

const SECTIONS: &[&str] = &[
    "store",
    "log",
    "scoring",
    "fatigue",
    "channels",
    "templates",
    "schedules",
    "outbox",
    "plugins",
    "followups",
    "api",
    "daemon",
    "ingest",
    "templating",
    "calls",
    "retention",
];

impl Config {
    /// The fatigue guard these rules build.
    pub fn guard(
        &self,
    ) -> Result<crate::domain::fatigue::Guard, crate::domain::fatigue::guard::GuardError> {
        crate::domain::fatigue::Guard::build(&self.fatigue, &self.channels, &self.followups)
    }

    /// The call desk's rules (`[calls]` with `[followups.calls]`).
    pub fn desk_rules(&self) -> crate::domain::desk::DeskRules {
        crate::domain::desk::DeskRules::new(
            &self.calls,
            &self.followups.calls,
            self.task_channels(),
        )
    }

    /// The channels served by the task plugin (the call desk's).
    pub fn task_channels(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| c.plugin == crate::core::config::sections::TASK_PLUGIN)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Reads, interpolates and validates `file` with the process environment.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigErrors::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(&text, file, &|name| std::env::var(name).ok())
    }

    /// Parses `text` as if read from `file`, with `env` for `${VAR}`.
    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let mut doc = Document::parse(text, file, env, SECTIONS)?;
        let store = doc.section::<StoreConfig>("store");
        let log = doc.section::<LogConfig>("log");
        let scoring = doc.section::<ScoringConfig>("scoring");
        let fatigue = doc.section::<FatigueConfig>("fatigue");
        let channels = doc.named::<ChannelConfig>("channels");
        let templates = doc.named::<TemplateConfig>("templates");
        let schedules = doc.named::<ScheduleConfig>("schedules");
        let outbox = doc.section::<OutboxConfig>("outbox");
        let plugins = doc.section::<PluginsConfig>("plugins");
        let followups = doc.section::<FollowupsConfig>("followups");
        let api = doc.section::<ApiConfig>("api");
        let daemon = doc.section::<DaemonConfig>("daemon");
        let ingest = doc.section::<IngestConfig>("ingest");
        let templating = doc.section::<crate::domain::templates::TemplatingConfig>("templating");
        let calls = doc.section::<crate::domain::desk::DeskConfig>("calls");
        let retention = doc.section::<RetentionConfig>("retention");

        let (
            Some(store),
            Some(log),
            Some(scoring),
            Some(fatigue),
            Some(channels),
            Some(templates),
            Some(schedules),
            Some(outbox),
            Some(plugins),
            Some(followups),
            Some(api),
            Some(daemon),
            Some(ingest),
            Some(templating),
            Some(calls),
            Some(retention),
        ) = (
            store, log, scoring, fatigue, channels, templates, schedules, outbox, plugins,
            followups, api, daemon, ingest, templating, calls, retention,
        )
        else {
            return Err(doc.finish());
        };
        let config = Config {
            file: file.to_path_buf(),
            store,
            log,
            scoring,
            fatigue,
            channels,
            templates,
            schedules,
            outbox,
            plugins,
            followups,
            api,
            daemon,
            ingest,
            templating,
            compiled_templates: Default::default(),
            calls,
            retention,
        };
        let mut config = config;
        let mut issues = Issues::default();
        config.check_references(&mut issues);
        let (compiled, problems) =
            crate::domain::templates::compile(file, &config.templating, &config.templates);
        config.compiled_templates = compiled;
        for p in problems {
            match p {
                crate::domain::templates::TemplateIssue::Inline { at, message } => {
                    issues.push(at, message)
                }
                crate::domain::templates::TemplateIssue::File {
                    file,
                    line,
                    column,
                    key,
                    message,
                } => doc.push(ConfigError {
                    file,
                    line,
                    column,
                    key,
                    message,
                }),
            }
        }
        doc.issues(issues);
        if doc.is_clean() {
            Ok(config)
        } else {
            Err(doc.finish())
        }
    }

    /// Checks that what one section names exists in another.
    fn check_references(&self, issues: &mut Issues) {
        let root = KeyPath::root();
        let builtin = BUILTIN_PLUGINS;
        for (name, channel) in &self.channels {
            if !builtin.contains(&channel.plugin.as_str())
                && !self.plugins.load.contains_key(&channel.plugin)
            {
                issues.push(
                    root.key("channels").key(name).key("plugin"),
                    format!(
                        "unknown plugin `{}`: built in are {}; others must be listed under [plugins.load]",
                        channel.plugin,
                        builtin.join(", ")
                    ),
                );
            }
        }
        for (name, template) in &self.templates {
            if !self.channels.contains_key(&template.channel) {
                issues.push(
                    root.key("templates").key(name).key("channel"),
                    format!(
                        "unknown channel `{}` (configured: {})",
                        template.channel,
                        list(self.channels.keys())
                    ),
                );
            }
        }
        // Fatigue caps and send windows apply to configured channels.
        let fatigue = root.key("fatigue");
        let channel_refs = self
            .fatigue
            .caps
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((fatigue.key("caps").index(i), c.channel.as_ref()?)))
            .chain(
                self.fatigue
                    .windows
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (fatigue.key("windows").index(i), &w.channel)),
            );
        for (at, channel) in channel_refs {
            if !self.channels.contains_key(channel) {
                issues.push(
                    at.key("channel"),
                    format!(
                        "unknown channel `{channel}` (configured: {})",
                        list(self.channels.keys())
                    ),
                );
            }
        }
        // Follow-ups send on configured channels with their templates.
        self.followups.check_references(
            &self.channels.keys().map(String::as_str).collect(),
            &self
                .templates
                .iter()
                .map(|(n, t)| (n.as_str(), t.channel.as_str()))
                .collect(),
            &self.scoring.bands.iter().map(|b| b.name.as_str()).collect(),
            &root.key("followups"),
            issues,
        );
        // The guard keeps the recent sends the caps and the budget count.
        if let Some(b) = &self.followups.arbitration.budget {
            let caps: u64 = self.fatigue.caps.iter().map(|c| u64::from(c.limit)).sum();
            let most = crate::domain::fatigue::config::RECENT_SENDS as u64;
            if caps + u64::from(b.count) > most {
                issues.push(
                    root.key("followups").key("arbitration").key("budget").key("count"),
                    format!(
                        "with the caps' limits ({caps}) it adds up to more than the {most} recent sends the guard keeps per contact"
                    ),
                );
            }
        }
        // Pruning a delivered row planning still reads would send it again.
        let reach = crate::pipeline::plan::sent_reach(&self.followups);
        if self.retention.sent.0 < reach {
            issues.push(
                root.key("retention").key("sent"),
                format!(
                    "must be at least {}: planning reads delivered sends that far back \
                     (7 days of catch-up, then the widest trigger look-back and cool-down)",
                    crate::core::config::Duration(reach)
                ),
            );
        }
        if self.channels.len() > crate::domain::fatigue::config::MAX_CHANNELS {
            issues.push(
                root.key("channels"),
                format!(
                    "the fatigue guard handles at most {} channels",
                    crate::domain::fatigue::config::MAX_CHANNELS
                ),
            );
        }
    }

    /// The store path, resolved against the configuration file's folder.
    pub fn store_path(&self) -> PathBuf {
        resolve(&self.file, &self.store.path)
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("t.toml"), &|n| {
            (n == "SMTP_PASSWORD").then(|| "pw".into())
        })
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        parse(text).expect_err("invalid").errors().to_vec()
    }

    #[test]
    fn reports_unknown_key_wrong_type_and_unordered_levels_together() {
        let text = "\
[store]
path = \"x.db\"
colour = \"blue\"

[scoring]
inactivity_malus_per_month = \"five\"

[fatigue]
decay_per_day = 1.0
[[fatigue.levels]]
name = \"normal\"
[[fatigue.levels]]
name = \"stop\"
above = 25
[[fatigue.levels]]
name = \"reduce\"
from = 20
";
        let errs = errors(text);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert_eq!(
            (errs[0].line, errs[0].column, errs[0].key.as_str()),
            (3, 1, "store.colour")
        );
        assert!(errs[0].message.contains("unknown key"));
        assert_eq!(
            (errs[1].line, errs[1].key.as_str()),
            (6, "scoring.inactivity_malus_per_month")
        );
        assert!(
            errs[1].message.contains("invalid type"),
            "{}",
            errs[1].message
        );
        assert_eq!((errs[2].line, errs[2].column), (17, 8));
        assert_eq!(errs[2].key, "fatigue.levels[2].from");
        assert!(errs[2].message.contains("lowest first"));
        assert!(
            errs[0]
                .to_string()
                .starts_with("t.toml:3:1: `store.colour`")
        );
    }

    #[test]
    fn unknown_sections_and_references_are_reported() {
        let text =
            "[stor]\npath = \"x\"\n\n[templates.hello]\nchannel = \"pigeon\"\ntext = \"hi\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert_eq!((errs[0].line, errs[0].column), (1, 2));
        assert!(errs[0].message.contains("unknown section"));
        assert_eq!(
            (errs[1].line, errs[1].key.as_str()),
            (5, "templates.hello.channel")
        );
        assert!(errs[1].message.contains("unknown channel `pigeon`"));
    }

    #[test]
    fn a_postgres_store_is_checked_and_its_password_never_shown() {
        let errs = errors("[store]\nurl = \"mysql://x\"\npool = 0\n");
        let keys: Vec<(&str, usize, usize)> = errs
            .iter()
            .map(|e| (e.key.as_str(), e.line, e.column))
            .collect();
        assert_eq!(
            keys,
            [("store.url", 2, 7), ("store.pool", 3, 8)],
            "{errs:#?}"
        );
        assert!(errs[0].message.contains("PostgreSQL URL"));
        let ok =
            parse("[store]\nurl = \"postgres://relance:s3cr3t@db:5432/relance?sslmode=require\"\n")
                .expect("valid");
        assert!(ok.store.postgres_url().is_some());
        assert!(!format!("{ok:?}").contains("s3cr3t"));
        // Empty (an unset `${VAR:-}`): SQLite.
        let sqlite = parse("[store]\nurl = \"\"\n").expect("valid");
        assert_eq!(sqlite.store.postgres_url(), None);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let errs = errors("[store]\npath = \n");
        assert_eq!(errs[0].line, 2, "{errs:#?}");
    }

    #[test]
    fn environment_is_interpolated_after_parsing() {
        let text = "[channels.email]\nplugin = \"email\"\nevent = \"email_sent\"\nsettings = { password = \"${SMTP_PASSWORD}\", user = \"${SMTP_USER:-relance}\" }\n";
        let config = parse(text).expect("valid");
        let settings = &config.channels["email"].settings;
        assert_eq!(settings["password"].as_str(), Some("pw"));
        assert_eq!(settings["user"].as_str(), Some("relance"));

        let errs = errors("[store]\npath = \"${DB_PATH}\"\n");
        assert_eq!((errs[0].line, errs[0].column), (2, 8));
        assert!(errs[0].message.contains("DB_PATH"));
    }

    #[test]
    fn an_enabled_api_needs_its_secrets_and_never_shows_them() {
        let errs = errors("[api]\nenabled = true\nlisten = \"nowhere\"\ntokens = [\"short\"]\n");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["api.tracking_secret", "api.listen", "api.tokens[0]"],
            "{errs:#?}"
        );
        assert!(errs[0].message.contains("tracking_secret"), "{errs:#?}");
        let ok = parse(
            "[api]\nenabled = true\ntokens = [\"${RELANCE_TEST_UNSET:-0123456789abcdef}\"]\ntracking_secret = \"s3cr3t-s3cr3t-s3cr3t\"\n",
        )
        .expect("valid");
        assert!(!format!("{ok:?}").contains("s3cr3t"));
        assert!(
            parse("[api]\ntokens = [\"\"]\n").is_ok(),
            "checked only when enabled"
        );
    }

    #[test]
    fn invalid_cron_and_time_zone_are_reported() {
        let text = "[schedules.rescore]\njob = \"rescore\"\ncron = \"*/15 * * *\"\n\n[schedules.nurture]\njob = \"plan\"\ncron = \"30 9 * * TUE\"\ntimezone = \"Europe/Pariss\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.key == "schedules.rescore.cron" && e.line == 3)
        );
        assert!(
            errs.iter()
                .any(|e| e.line == 8 && e.message.contains("Europe/Pariss")),
            "{errs:#?}"
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn shipped_configuration_is_valid() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/relance.toml");
        let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.fatigue.costs["call"], 5.0);
        assert_eq!(config.scoring.bands[0].min, Some(150.0));
    }
}
