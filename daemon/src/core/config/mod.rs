//! Configuration primitives: the spanned TOML document, durations, key
//! paths, errors that name file, line and column, and the sections that
//! belong to no one layer (store, log, channels, plugins, API, daemon).
//!
//! Each layer's own section (`[scoring]`, `[fatigue]`, `[followups]` …)
//! lives with that layer and imports only these; the whole file is
//! assembled into `pipeline::config::Config`, above every section.

mod document;
pub mod duration;
pub mod error;
pub mod loader;
pub mod path;
pub mod plugins;
pub mod sections;

pub use duration::Duration;
pub use error::{ConfigError, ConfigErrors};
pub use loader::Document;
pub use path::{Issues, KeyPath, Seg, Validate, resolve};
pub use plugins::{PluginFile, PluginsConfig};
pub use sections::{
    ApiConfig, ChannelConfig, ConsentDefault, DaemonConfig, Job, LogConfig, LogFormat, Misfire,
    RetentionConfig, ScheduleConfig, StoreConfig, TemplateConfig,
};

/// Default configuration path, relative to the working directory.
pub const DEFAULT_PATH: &str = "relance.toml";
