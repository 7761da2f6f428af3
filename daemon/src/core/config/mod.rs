//! Configuration: one TOML file, parsed with serde, checked at load.
//!
//! Every section is deserialized on its own so that one bad section does not
//! hide the problems of the others; unknown keys are collected rather than
//! failing the first one; each section then validates itself and `Config`
//! checks references between sections. Every problem is reported with the
//! file, line and column it comes from.

// Primitives: sections (here and in the domain modules) import these and
// nothing above them; this file assembles the sections into `Config`.
mod document;
pub mod duration;
pub mod error;
pub mod path;
pub mod sections;

pub use duration::Duration;
pub use error::{ConfigError, ConfigErrors};
pub use path::{Issues, KeyPath, Seg, Validate, resolve};
pub use sections::{
    ApiConfig, ChannelConfig, ConsentDefault, DaemonConfig, Job, LogConfig, LogFormat, Misfire,
    ScheduleConfig, StoreConfig, TemplateConfig,
};

use crate::adapters::plugins::config::PluginsConfig;
use crate::domain::fatigue::config::FatigueConfig;
use crate::domain::followups::config::FollowupsConfig;
use crate::domain::ingest::range::IngestConfig;
use crate::domain::outbox::config::OutboxConfig;
use crate::domain::scoring::config::ScoringConfig;
use document::{Span, line_col, locate, path_at};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Default configuration path, relative to the working directory.
pub const DEFAULT_PATH: &str = "relance.toml";

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
];

impl Config {
    /// The channels served by the task plugin (the call desk's).
    pub fn task_channels(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| c.plugin == sections::TASK_PLUGIN)
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
        let mut loader = Loader {
            text,
            file,
            errors: Vec::new(),
        };
        let (mut root, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            loader.error_at_span(
                e.span().unwrap_or(0..0),
                String::new(),
                e.message().to_string(),
            );
        }
        if !loader.errors.is_empty() {
            return Err(loader.finish());
        }
        let mut interpolation = Vec::new();
        document::interpolate(root.get_mut(), env, &mut interpolation);
        for e in interpolation {
            let key = path_at(&root, &e.span).to_string();
            loader.error_at_span(e.span, key, e.message);
        }

        for (key, _) in root.get_ref().iter() {
            if !SECTIONS.contains(&key.get_ref().as_ref()) {
                loader.error_at_span(
                    key.span(),
                    key.get_ref().to_string(),
                    format!("unknown section, expected one of: {}", SECTIONS.join(", ")),
                );
            }
        }

        let store = loader.section::<StoreConfig>(&root, "store");
        let log = loader.section::<LogConfig>(&root, "log");
        let scoring = loader.section::<ScoringConfig>(&root, "scoring");
        let fatigue = loader.section::<FatigueConfig>(&root, "fatigue");
        let channels = loader.named::<ChannelConfig>(&root, "channels");
        let templates = loader.named::<TemplateConfig>(&root, "templates");
        let schedules = loader.named::<ScheduleConfig>(&root, "schedules");
        let outbox = loader.section::<OutboxConfig>(&root, "outbox");
        let plugins = loader.section::<PluginsConfig>(&root, "plugins");
        let followups = loader.section::<FollowupsConfig>(&root, "followups");
        let api = loader.section::<ApiConfig>(&root, "api");
        let daemon = loader.section::<DaemonConfig>(&root, "daemon");
        let ingest = loader.section::<IngestConfig>(&root, "ingest");
        let templating =
            loader.section::<crate::domain::templates::TemplatingConfig>(&root, "templating");
        let calls = loader.section::<crate::domain::desk::DeskConfig>(&root, "calls");

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
        ) = (
            store, log, scoring, fatigue, channels, templates, schedules, outbox, plugins,
            followups, api, daemon, ingest, templating, calls,
        )
        else {
            return Err(loader.finish());
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
                } => loader.errors.push(ConfigError {
                    file,
                    line,
                    column,
                    key,
                    message,
                }),
            }
        }
        loader.issues(&root, issues);
        if loader.errors.is_empty() {
            Ok(config)
        } else {
            Err(loader.finish())
        }
    }

    /// Checks that what one section names exists in another.
    fn check_references(&self, issues: &mut Issues) {
        let root = KeyPath::root();
        let builtin = crate::adapters::plugins::builtin::builtin_names();
        for (name, channel) in &self.channels {
            if !builtin.contains(&channel.plugin)
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

struct Loader<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl Loader<'_> {
    fn error_at_span(&mut self, span: Span, key: String, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message,
        });
    }

    fn issues(&mut self, root: &Spanned<DeTable<'_>>, issues: Issues) {
        for (path, message) in issues.0 {
            let at = locate(root, &path);
            self.error_at_span(at.value, path.to_string(), message);
        }
    }

    /// Deserializes one section (its default when absent), then lets it
    /// validate itself.
    fn section<T>(&mut self, root: &Spanned<DeTable<'_>>, name: &str) -> Option<T>
    where
        T: DeserializeOwned + Default + Validate,
    {
        let at = KeyPath::root().key(name);
        match root.get_ref().iter().find(|(k, _)| k.get_ref() == name) {
            None => Some(T::default()),
            Some((_, value)) => self.item(root, value, at),
        }
    }

    /// A table of named items (`[channels.email]`, `[channels.crm]` …): each
    /// item is read on its own, so one bad item does not hide the others.
    fn named<T>(&mut self, root: &Spanned<DeTable<'_>>, name: &str) -> Option<BTreeMap<String, T>>
    where
        T: DeserializeOwned + Validate,
    {
        let at = KeyPath::root().key(name);
        let Some((_, value)) = root.get_ref().iter().find(|(k, _)| k.get_ref() == name) else {
            return Some(BTreeMap::new());
        };
        let DeValue::Table(table) = value.get_ref() else {
            self.error_at_span(
                value.span(),
                at.to_string(),
                format!("`{name}` must be a table of named entries"),
            );
            return None;
        };
        let mut items = Some(BTreeMap::new());
        for (key, value) in table.iter() {
            let item = self.item(root, value, at.key(key.get_ref().as_ref()));
            match (&mut items, item) {
                (Some(map), Some(item)) => {
                    map.insert(key.get_ref().to_string(), item);
                }
                _ => items = None,
            }
        }
        items
    }

    /// Deserializes one value, collecting every unknown key and the first
    /// type error, then runs the value's own checks.
    fn item<T>(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        value: &Spanned<DeValue<'_>>,
        at: KeyPath,
    ) -> Option<T>
    where
        T: DeserializeOwned + Validate,
    {
        let mut unknown: Vec<KeyPath> = Vec::new();
        let deserializer = toml::de::ValueDeserializer::from(value.clone());
        let result: Result<T, _> = serde_ignored::deserialize(deserializer, |p| {
            unknown.push(at_path(&at, &p));
        });
        for path in unknown {
            let located = locate(root, &path);
            self.error_at_span(
                located.key.unwrap_or(located.value),
                path.to_string(),
                "unknown key".into(),
            );
        }
        match result {
            Ok(item) => {
                let mut issues = Issues::default();
                item.validate(&at, &mut issues);
                self.issues(root, issues);
                Some(item)
            }
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let key = path_at(root, &span).to_string();
                self.error_at_span(span, key, e.message().to_string());
                None
            }
        }
    }

    fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors.dedup();
        ConfigErrors::Invalid(self.errors)
    }
}

fn at_path(base: &KeyPath, p: &serde_ignored::Path<'_>) -> KeyPath {
    fn push(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
        use serde_ignored::Path as P;
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                push(parent, out);
                out.push(Seg::Index(*index));
            }
            P::Map { parent, key } => {
                push(parent, out);
                out.push(Seg::Key(key.clone()));
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                push(parent, out);
            }
        }
    }
    let mut path = base.clone();
    push(p, &mut path.0);
    path
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
