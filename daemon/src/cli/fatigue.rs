//! `relance fatigue`, `relance guard`, `relance pressure`.

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::core::model::{Event, FollowUpKind};
use relance::domain::fatigue::{ContactState, Guard, PressureCategory, Proposal, ValueTier};
use relance::pipeline::config::Config;
use serde_json::json;

/// The contact's state at `now`: what happened after it (a `--now` in
/// the past) does not count yet, as for scores.
fn load(
    config: &Config,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Guard, ContactState, Vec<Event>), Failure> {
    let guard = config.guard().map_err(anyhow::Error::from)?;
    let store = open_store(config)?;
    let Some((contact, mut weighs)) = store.guard_input(id).map_err(anyhow::Error::from)? else {
        return Err(Failure::Input(format!("no contact with id `{id}`")));
    };
    weighs.retain(|e| e.at <= now);
    let state = ContactState::replay(&guard, &contact, &weighs).map_err(anyhow::Error::from)?;
    Ok((guard, state, weighs))
}

pub fn fatigue(config: &Config, clock: &Clock, id: &str, as_json: bool) -> Result<u8, Failure> {
    let now = clock.now();
    let (guard, state, weighs) = load(config, id, now)?;
    let r =
        relance::domain::fatigue::report::report(&config.fatigue, &guard, id, &state, &weighs, now);
    if as_json {
        output::json(&r)?;
        return Ok(exit::OK);
    }
    println!(
        "{id}: fatigue {} ({}) at {}",
        r.fatigue.as_f64(),
        r.level,
        now.to_rfc3339()
    );
    for l in &r.leaves {
        println!(
            "  leaves {} at {}",
            l.level,
            l.left_at.map_or("never".to_string(), rfc3339)
        );
    }
    let mut table = output::Table::new(&["at", "type", "channel", "points"]);
    for c in &r.charges {
        table.row(vec![
            rfc3339(c.at),
            c.kind.clone(),
            output::opt(&c.channel),
            serde_json::Value::from(c.points).to_string(),
        ]);
    }
    table.print();
    Ok(exit::OK)
}

/// As in the JSON output.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub struct GuardArgs<'a> {
    pub id: &'a str,
    pub channel: &'a str,
    pub kind: FollowUpKind,
    pub priority: Option<u32>,
    pub exempt: bool,
    pub json: bool,
}

pub fn guard(config: &Config, clock: &Clock, args: &GuardArgs<'_>) -> Result<u8, Failure> {
    let (guard, state, _) = load(config, args.id, clock.now())?;
    let Some(channel) = guard.channel(args.channel) else {
        let known: Vec<&String> = config.channels.keys().collect();
        return Err(Failure::Input(format!(
            "channel: unknown channel `{}` (configured: {})",
            args.channel,
            known
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let proposal = Proposal {
        channel,
        kind: args.kind,
        priority: args.priority,
        exempt: args.exempt,
        first_proposed: None,
    };
    let decision = guard.decide(&proposal, &state, clock.now());
    if args.json {
        output::json(&decision)?;
        return Ok(exit::OK);
    }
    let verdict = serde_json::to_value(decision.decision).map_err(anyhow::Error::from)?;
    print!("{}", verdict.as_str().unwrap_or_default());
    if let Some(until) = decision.until {
        print!(" until {}", until.to_rfc3339());
    }
    println!();
    for r in &decision.reasons {
        let r = serde_json::to_value(r).map_err(anyhow::Error::from)?;
        println!("  {}", output::reason(&r));
    }
    Ok(exit::OK)
}

pub fn pressure(config: &Config, clock: &Clock, as_json: bool) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let samples = relance::pipeline::pressure::samples(&*store, config, clock.now())
        .map_err(anyhow::Error::from)?;
    let matrix =
        relance::domain::fatigue::matrix::pressure_matrix(&config.fatigue.pressure, samples);
    if as_json {
        output::json(&matrix)?;
        return Ok(exit::OK);
    }
    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut header = vec!["pressure \\ value".to_string()];
    header.extend(ValueTier::ALL.iter().map(|v| name(json!(v))));
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = output::Table::new(&header_refs);
    for p in PressureCategory::ALL.iter().rev() {
        let mut row = vec![name(json!(p))];
        row.extend(
            ValueTier::ALL
                .iter()
                .map(|v| matrix.count(*p, *v).to_string()),
        );
        table.row(row);
    }
    table.print();
    println!(
        "{} over-pressured, {} under-pressured customers",
        matrix.over_pressured.len(),
        matrix.under_pressured.len()
    );
    for m in matrix.over_pressured.iter().take(10) {
        println!(
            "  over:  {} ({} pressure for a {} customer)",
            m.contact,
            name(json!(m.pressure)),
            name(json!(m.value))
        );
    }
    for m in matrix.under_pressured.iter().take(10) {
        println!(
            "  under: {} ({} pressure for a {} customer)",
            m.contact,
            name(json!(m.pressure)),
            name(json!(m.value))
        );
    }
    Ok(exit::OK)
}
