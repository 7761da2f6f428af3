//! `relance template preview NAME --contact ID`: what the contact would
//! receive now. Writes nothing.

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::pipeline::config::Config;
use relance::pipeline::preview::{PreviewError, preview};

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Renders a template for a contact as it would be sent now: subject,
    /// text and html with the tracking links. Sends nothing, writes nothing.
    Preview {
        /// The template, as named under [templates.NAME].
        name: String,
        /// The contact to render for.
        #[arg(long)]
        contact: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, clock: &Clock, action: &Action) -> Result<u8, Failure> {
    let Action::Preview {
        name,
        contact,
        json,
    } = action;
    let store = open_store(config)?;
    let p = match preview(config, &*store, name, contact, clock.now()) {
        Ok(p) => p,
        Err(e @ PreviewError::Store(_)) => return Err(anyhow::Error::from(e).into()),
        Err(e) => return Err(Failure::Input(e.to_string())),
    };
    if *json {
        output::json(&p)?;
        return Ok(exit::OK);
    }
    println!(
        "template {} for {} on {} ({}{})",
        p.template,
        p.contact,
        p.channel,
        p.language.as_deref().unwrap_or("no language variant"),
        if p.pending {
            format!(", the send waiting in the outbox: {}", p.followup)
        } else {
            String::new()
        }
    );
    for (label, part) in [
        ("subject", &p.subject),
        ("text", &p.text),
        ("html", &p.html),
    ] {
        if let Some(part) = part {
            println!("--- {label}\n{part}");
        }
    }
    if let Some(u) = &p.unsubscribe_url {
        println!("--- unsubscribe\n{u}");
    }
    Ok(exit::OK)
}
