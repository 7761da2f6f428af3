//! `relance contacts show|list|erase`.

use super::{Failure, exit, open_store, output};
use clap::Subcommand;
use relance::domain::desk::ProspectStatus;
use relance::pipeline::config::Config;

#[derive(Debug, Subcommand)]
pub enum Action {
    /// One contact, with its recent events.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Every contact, or those with one prospect status.
    List {
        /// GAGNÉ, CHAUD, TIÈDE, FROID, ARRÊTÉ or PERDU (accents optional;
        /// won, hot, warm, cold, stopped, lost too).
        #[arg(long, value_parser = ProspectStatus::parse)]
        status: Option<ProspectStatus>,
        #[arg(long)]
        json: bool,
    },
    /// Groups of contacts sharing a normalised email or phone (E.164).
    Duplicates {
        #[arg(long)]
        json: bool,
    },
    /// Remove the contact and everything about it (right to be forgotten).
    Erase { id: String },
}

pub fn run(config: &Config, action: &Action) -> Result<u8, Failure> {
    let store = open_store(config)?;
    match action {
        Action::Show { id, json } => {
            let Some(contact) = store.contact(id).map_err(anyhow::Error::from)? else {
                return Err(Failure::Input(format!("no contact with id `{id}`")));
            };
            let events = store.events_of(id).map_err(anyhow::Error::from)?;
            let prospect = store.prospect_status(id).map_err(anyhow::Error::from)?;
            if *json {
                let mut value = serde_json::to_value(&contact).map_err(anyhow::Error::from)?;
                value["prospect"] = serde_json::to_value(&prospect).map_err(anyhow::Error::from)?;
                value["events"] = serde_json::to_value(&events).map_err(anyhow::Error::from)?;
                output::json(&value)?;
                return Ok(exit::OK);
            }
            println!("{} — {}", contact.id, contact.display_name());
            for (label, value) in [
                ("email", &contact.email),
                ("phone", &contact.phone),
                ("company", &contact.company),
                ("owner", &contact.owner),
                ("tier", &contact.tier),
            ] {
                println!("  {label:<14}{}", output::opt(value));
            }
            println!("  {:<14}{}", "status", contact.status);
            let set_by = prospect.set_by.as_ref().map_or(String::new(), |b| {
                let what = b
                    .outcome
                    .as_ref()
                    .map_or(b.kind.clone(), |o| format!("{} {o}", b.kind));
                format!(
                    " since {} ({what})",
                    prospect.since.map_or("-".into(), |t| t.to_rfc3339())
                )
            });
            println!("  {:<14}{}{set_by}", "prospect", prospect.status);
            println!(
                "  {:<14}{}",
                "timezone",
                contact
                    .timezone
                    .map_or("-".to_string(), |t| t.name().to_string())
            );
            if !contact.consent.is_empty() {
                let c: Vec<String> = contact
                    .consent
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("  {:<14}{}", "consent", c.join(", "));
            }
            if !contact.do_not_contact.is_empty() {
                let d: Vec<&str> = contact.do_not_contact.iter().map(String::as_str).collect();
                println!("  {:<14}{}", "do not contact", d.join(", "));
            }
            for (k, v) in &contact.attributes {
                match v {
                    serde_json::Value::String(s) => println!("  {k:<14}{s}"),
                    other => println!("  {k:<14}{other}"),
                }
            }
            println!("  {} events", events.len());
            let mut table = output::Table::new(&["at", "type", "channel"]);
            for e in events.iter().rev().take(20) {
                table.row(vec![
                    e.at.to_rfc3339(),
                    e.kind.clone(),
                    output::opt(&e.channel),
                ]);
            }
            if !events.is_empty() {
                table.print();
            }
            Ok(exit::OK)
        }
        Action::List { status, json } => {
            let mut contacts = Vec::new();
            let keep: Option<std::collections::BTreeSet<String>> = status
                .map(|s| store.with_status(s))
                .transpose()
                .map_err(anyhow::Error::from)?
                .map(|ids| ids.into_iter().collect());
            store
                .for_each_contact(&mut |c| {
                    if keep.as_ref().is_none_or(|k| k.contains(&c.id)) {
                        contacts.push(c);
                    }
                })
                .map_err(anyhow::Error::from)?;
            if *json {
                output::json(&contacts)?;
                return Ok(exit::OK);
            }
            let mut table =
                output::Table::new(&["id", "name", "email", "company", "status", "tier"]);
            for c in &contacts {
                table.row(vec![
                    c.id.clone(),
                    c.display_name(),
                    output::opt(&c.email),
                    output::opt(&c.company),
                    c.status.to_string(),
                    output::opt(&c.tier),
                ]);
            }
            table.print();
            println!("{} contacts", contacts.len());
            Ok(exit::OK)
        }
        Action::Duplicates { json } => {
            let groups =
                relance::pipeline::report::duplicates(&*store).map_err(anyhow::Error::from)?;
            if *json {
                output::json(&groups)?;
                return Ok(exit::OK);
            }
            let mut table = output::Table::new(&["by", "key", "contacts"]);
            for g in &groups {
                table.row(vec![
                    g.kind.to_string(),
                    g.key.clone(),
                    g.contacts.join(", "),
                ]);
            }
            table.print();
            println!("{} groups of duplicates", groups.len());
            Ok(exit::OK)
        }
        Action::Erase { id } => {
            if store.erase_contact(id).map_err(anyhow::Error::from)? {
                tracing::info!(contact = %id, "contact erased");
                println!("erased contact `{id}` and everything about it");
                Ok(exit::OK)
            } else {
                Err(Failure::Input(format!("no contact with id `{id}`")))
            }
        }
    }
}
