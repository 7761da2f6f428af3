//! `relance plan` (what is due and what the guard says, without sending)
//! and `relance broadcast create | list`.

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::core::model::Timestamp;
use relance::domain::followups::BroadcastSpec;
use relance::pipeline::config::Config;
use relance::pipeline::plan::dry_run;

pub fn plan(
    config: &Config,
    clock: &Clock,
    contact: Option<&str>,
    as_json: bool,
) -> Result<u8, Failure> {
    let store = open_store(config)?;
    if let Some(id) = contact
        && store
            .contact_key(id)
            .map_err(anyhow::Error::from)?
            .is_none()
    {
        return Err(Failure::Input(format!("no contact `{id}`")));
    }
    let lines = dry_run(config, &*store, clock.now(), contact).map_err(anyhow::Error::from)?;
    if as_json {
        output::json(&lines)?;
        return Ok(exit::OK);
    }
    let mut table = output::Table::new(&[
        "contact",
        "follow-up",
        "kind",
        "channel",
        "due",
        "decision",
        "until",
        "reasons",
    ]);
    for l in &lines {
        table.row(vec![
            l.contact.clone(),
            l.followup.clone(),
            l.kind.as_str().into(),
            l.channel.clone(),
            l.due.to_rfc3339(),
            format!(
                "{}{}",
                l.decision,
                if l.pending { " (pending)" } else { "" }
            ),
            l.until.map_or("-".into(), |u| u.to_rfc3339()),
            output::reasons(&serde_json::to_value(&l.reasons).unwrap_or_default()),
        ]);
    }
    table.print();
    println!("{} follow-ups due", lines.len());
    Ok(exit::OK)
}

/// `relance broadcast create`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Unique id: creating the same id again changes nothing.
    #[arg(long)]
    id: String,
    #[arg(long)]
    name: String,
    /// Who receives it, a condition as in the configuration, e.g.
    /// '{ field = "tier", in = ["target_1", "target_2"] }'.
    #[arg(long)]
    segment: String,
    #[arg(long)]
    channel: String,
    #[arg(long)]
    template: String,
    /// Sends go out from this instant (RFC 3339; default --now) …
    #[arg(long, value_parser = super::parse_now)]
    start: Option<Timestamp>,
    /// … and not at or after this one.
    #[arg(long, value_parser = super::parse_now)]
    end: Timestamp,
    /// Overrides the event-driven priority.
    #[arg(long)]
    priority: Option<u32>,
    /// Transactional (a service notice): fatigue, caps and the daily budget
    /// let it pass; the send windows still hold.
    #[arg(long)]
    exempt: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Broadcast {
    /// Create a broadcast of our own news to a segment.
    Create(CreateArgs),
    /// The broadcasts created so far.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn broadcast(config: &Config, clock: &Clock, action: &Broadcast) -> Result<u8, Failure> {
    match action {
        Broadcast::Create(a) => create(config, clock, a),
        Broadcast::List { json } => {
            let store = open_store(config)?;
            let all = store.broadcasts().map_err(anyhow::Error::from)?;
            if *json {
                output::json(&all)?;
            } else {
                let mut table = output::Table::new(&[
                    "id", "name", "channel", "template", "start", "end", "priority",
                ]);
                for b in &all {
                    table.row(vec![
                        b.id.clone(),
                        b.name.clone(),
                        b.channel.clone(),
                        b.template.clone(),
                        b.start.to_rfc3339(),
                        b.end.to_rfc3339(),
                        b.priority.map_or("-".into(), |p| p.to_string()),
                    ]);
                }
                table.print();
            }
            Ok(exit::OK)
        }
    }
}

fn create(config: &Config, clock: &Clock, a: &CreateArgs) -> Result<u8, Failure> {
    relance::core::limits::check_broadcast(
        &a.id,
        &a.name,
        &a.channel,
        &a.template,
        a.segment.len(),
    )
    .map_err(|e| Failure::Input(format!("broadcast: {e}")))?;
    let segment = toml::from_str::<toml::Table>(&format!("segment = {}", a.segment))
        .map_err(|e| Failure::Input(format!("--segment: {}", e.message())))?
        .remove("segment")
        .ok_or_else(|| Failure::Input("--segment: a condition is required".into()))?;
    let segment = segment
        .try_into()
        .map_err(|e: toml::de::Error| Failure::Input(format!("--segment: {}", e.message())))?;
    let spec = BroadcastSpec {
        id: a.id.clone(),
        name: a.name.clone(),
        segment,
        channel: a.channel.clone(),
        template: a.template.clone(),
        start: a.start.unwrap_or_else(|| clock.now()),
        end: a.end,
        priority: a.priority,
        exempt: a.exempt,
    };
    spec.compile()
        .map_err(|e| Failure::Input(format!("broadcast: {}", e.0.join("; "))))?;
    if !config.channels.contains_key(&spec.channel) {
        return Err(Failure::Input(format!(
            "--channel: no channel `{}` in the configuration",
            spec.channel
        )));
    }
    if !config.templates.contains_key(&spec.template) {
        return Err(Failure::Input(format!(
            "--template: no template `{}` in the configuration",
            spec.template
        )));
    }
    let store = open_store(config)?;
    let created = store
        .create_broadcast(&spec, clock.now())
        .map_err(anyhow::Error::from)?;
    if a.json {
        output::json(&serde_json::json!({ "id": spec.id, "created": created }))?;
    } else if created {
        println!(
            "broadcast `{}` created; the next plan pass sends it",
            spec.id
        );
    } else {
        println!("broadcast `{}` exists already: nothing changed", spec.id);
    }
    Ok(exit::OK)
}
