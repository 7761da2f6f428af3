//! `relance check`: validate the configuration and say what it configures.

use super::{Failure, exit, output};
use chrono::Timelike;
use relance::core::clock::Clock;
use relance::core::config::ConfigErrors;
use relance::pipeline::config::Config;
use serde_json::json;
use std::path::Path;

pub fn run(file: &Path, clock: &Clock, as_json: bool) -> Result<u8, Failure> {
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(ConfigErrors::Read { file, source }) => {
            return Err(Failure::Input(format!(
                "cannot read {}: {source}",
                file.display()
            )));
        }
        Err(e) => {
            if as_json {
                output::json(&json!({ "valid": false, "errors": e.errors() }))?;
            } else {
                eprintln!("{e}");
            }
            return Ok(exit::INVALID);
        }
    };
    let now = clock.now().with_nanosecond(0).unwrap_or(clock.now());
    let schedules: Vec<_> = config
        .schedules
        .iter()
        .map(|(name, s)| {
            let next = s.compiled().ok().and_then(|c| {
                c.find_next_occurrence(&now.with_timezone(&s.timezone), false)
                    .ok()
            });
            json!({
                "name": name,
                "job": s.job,
                "cron": s.cron,
                "timezone": s.timezone.name(),
                "misfire": s.misfire,
                "next": next.map(|n| n.to_rfc3339()),
            })
        })
        .collect();
    let unconfigured = unconfigured_channels(&config)?;
    let warnings = relance::adapters::plugins::channels::settings_warnings(&config);
    // A PostgreSQL store is named without its password.
    let store = match config.store.postgres_url() {
        Some(url) => relance::adapters::postgres::describe_url(url),
        None => config.store_path().display().to_string(),
    };
    let summary = json!({
        "valid": true,
        "file": config.file,
        "store": store,
        "bands": config.scoring.bands.iter().map(|b| json!({"name": b.name, "min": b.min})).collect::<Vec<_>>(),
        "fatigue": {
            "decay_per_day": config.fatigue.decay_per_day,
            "costs": config.fatigue.costs,
            "levels": config.fatigue.levels.iter().map(|l| json!({"name": l.name, "from": l.from, "above": l.above})).collect::<Vec<_>>(),
        },
        "channels": config.channels.iter().map(|(n, c)| json!({"name": n, "plugin": c.plugin, "event": c.event})).collect::<Vec<_>>(),
        "templates": config.templates.keys().collect::<Vec<_>>(),
        "schedules": schedules,
        "channels_not_configured": unconfigured,
        "warnings": warnings,
    });
    if as_json {
        output::json(&summary)?;
        return Ok(exit::OK);
    }
    println!("{}: valid", config.file.display());
    println!("store      {store}");
    let bands: Vec<String> = config
        .scoring
        .bands
        .iter()
        .map(|b| match b.min {
            Some(m) => format!("{} ≥ {m}", b.name),
            None => b.name.clone(),
        })
        .collect();
    println!("bands      {}", bands.join(", "));
    let levels: Vec<String> = config
        .fatigue
        .levels
        .iter()
        .map(|l| match (l.from, l.above) {
            (Some(v), _) => format!("{} from {v}", l.name),
            (_, Some(v)) => format!("{} above {v}", l.name),
            _ => l.name.clone(),
        })
        .collect();
    println!(
        "fatigue    decay {}/day; levels {}",
        config.fatigue.decay_per_day,
        levels.join(", ")
    );
    let costs: Vec<String> = config
        .fatigue
        .costs
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("costs      {}", costs.join(", "));
    let channels: Vec<String> = config
        .channels
        .iter()
        .map(|(n, c)| format!("{n} ({})", c.plugin))
        .collect();
    println!("channels   {}", channels.join(", "));
    for u in &unconfigured {
        println!("not configured: {u}");
        if u.followups.is_empty() {
            println!("  no follow-up uses it");
        } else {
            println!("  follow-ups that wait for it: {}", u.followups.join(", "));
        }
    }
    for (channel, list) in &warnings {
        for w in list {
            println!("warning: channel `{channel}`: {w}");
        }
    }
    println!(
        "templates  {}",
        config
            .templates
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &schedules {
        println!(
            "schedule   {} ({}): {} {} next {}",
            s["name"].as_str().unwrap_or_default(),
            s["job"].as_str().unwrap_or_default(),
            s["cron"].as_str().unwrap_or_default(),
            s["timezone"].as_str().unwrap_or_default(),
            s["next"].as_str().unwrap_or("never"),
        );
    }
    Ok(exit::OK)
}

/// Opens every channel the way `relance run` does (the plugins judge their
/// own settings) and returns those that would not open.
fn unconfigured_channels(
    config: &Config,
) -> Result<Vec<relance::adapters::plugins::channels::Unconfigured>, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    let host = relance::adapters::plugins::PluginHost::new(
        config.plugins.clone(),
        &config.file,
        relance::adapters::plugins::builtin_tables(),
    );
    Ok(
        runtime.block_on(relance::adapters::plugins::channels::open_all(
            &host, config,
        )),
    )
}
