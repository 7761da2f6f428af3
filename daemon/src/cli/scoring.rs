//! `relance rescore`, `relance score`, `relance deals`, `relance customers`.

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::core::model::{Company, Event};
use relance::domain::desk::distribution::distribution;
use relance::domain::scoring::{DealInput, DealModel, ScoringModel, score_customers};
use relance::pipeline::config::Config;
use relance::pipeline::rescore::{self, PassReport};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

fn hundredths(v: i64) -> String {
    relance::domain::scoring::Points(v).to_string()
}

/// A score card as JSON with the stored prospect status beside it.
fn with_prospect(
    card: &relance::domain::scoring::ScoreCard,
    prospect: &relance::domain::desk::StatusView,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut value = serde_json::to_value(card)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("prospect".into(), serde_json::to_value(prospect)?);
    }
    Ok(value)
}

pub fn rescore(config: &Config, clock: &Clock, full: bool, as_json: bool) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let store = open_store(config)?;
    let report: PassReport =
        rescore::rescore(&*store, config, clock.now(), full).map_err(anyhow::Error::from)?;
    let bands = store.band_counts().map_err(anyhow::Error::from)?;
    if as_json {
        output::json(&json!({
            "full": report.full,
            "examined": report.examined,
            "changed": report.changed,
            "changes": report.changes,
            "written": report.written,
            "bands": bands,
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
        return Ok(exit::OK);
    }
    println!(
        "{} pass: {} contacts scored, {} changed, {} band crossings or jumps, {} written ({:.2} s)",
        if report.full { "full" } else { "incremental" },
        report.examined,
        report.changed,
        report.changes,
        report.written,
        started.elapsed().as_secs_f64()
    );
    let counts: Vec<String> = bands.iter().map(|(b, n)| format!("{b} {n}")).collect();
    println!("bands: {}", counts.join(", "));
    Ok(exit::OK)
}

pub fn score(
    config: &Config,
    clock: &Clock,
    id: &str,
    history: bool,
    as_json: bool,
) -> Result<u8, Failure> {
    let model = ScoringModel::compile(&config.scoring).map_err(anyhow::Error::from)?;
    let store = open_store(config)?;
    let Some((contact, company, events)) = store.scoring_input(id).map_err(anyhow::Error::from)?
    else {
        return Err(Failure::Input(format!("no contact with id `{id}`")));
    };
    if history {
        let film = store.score_history(id, None).map_err(anyhow::Error::from)?;
        if as_json {
            output::json(&json!({ "contact": id, "history": film }))?;
            return Ok(exit::OK);
        }
        let mut table = output::Table::new(&["at", "score", "band"]);
        for s in &film {
            table.row(vec![s.at.to_rfc3339(), hundredths(s.score), s.band.clone()]);
        }
        table.print();
        if film.is_empty() {
            println!("no snapshot yet: run `relance rescore`");
        }
        return Ok(exit::OK);
    }
    let card = model.score(&contact, company.as_ref(), &events, clock.now());
    let prospect = store.prospect_status(id).map_err(anyhow::Error::from)?;
    if as_json {
        output::json(&with_prospect(&card, &prospect).map_err(anyhow::Error::from)?)?;
        return Ok(exit::OK);
    }
    println!(
        "{} — {}: {} ({})",
        contact.id,
        contact.display_name(),
        card.score,
        card.band
    );
    println!(
        "  profile {}, behaviour {}, negative {}, inactivity {}",
        card.profile, card.behaviour, card.negative, card.inactivity
    );
    println!("  prospect {}", prospect.status);
    let mut table = output::Table::new(&["rule", "points", "events", "detail"]);
    for c in &card.contributions {
        let detail = match (&c.decay, c.months) {
            (_, Some(m)) => format!("{m} month(s) without activity"),
            (Some(d), None) => d.to_string(),
            (None, None) => String::new(),
        };
        let when: Vec<String> = c
            .events
            .iter()
            .map(|e| events[e.index].at.date_naive().to_string())
            .collect();
        table.row(vec![
            c.rule.to_string(),
            c.points.to_string(),
            when.join(" "),
            detail,
        ]);
    }
    table.print();
    if let Some(next) = card.next_change_at {
        println!("  changes with time alone at {}", next.to_rfc3339());
    }
    Ok(exit::OK)
}

/// Every contact's card at --now, streamed from the store (JSON: an array).
pub fn all(config: &Config, clock: &Clock, as_json: bool) -> Result<u8, Failure> {
    use std::io::Write;
    let model = ScoringModel::compile(&config.scoring).map_err(anyhow::Error::from)?;
    let store = open_store(config)?;
    let now = clock.now();
    let mut companies: HashMap<String, Option<Company>> = HashMap::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let mut failure: Option<anyhow::Error> = None;
    if as_json {
        out.write_all(b"[").map_err(anyhow::Error::from)?;
    } else {
        writeln!(out, "{:<20} {:>10}  band", "contact", "score").map_err(anyhow::Error::from)?;
    }
    store
        .scan_histories(&mut |contact, events| {
            let step = (|| -> anyhow::Result<()> {
                let company = match &contact.company {
                    Some(id) => {
                        if !companies.contains_key(id) {
                            companies.insert(id.clone(), store.company(id)?);
                        }
                        companies.get(id).and_then(Option::as_ref)
                    }
                    None => None,
                };
                let card = model.score(&contact, company, &events, now);
                if as_json {
                    if !first {
                        out.write_all(b",\n")?;
                    }
                    let prospect = store.prospect_status(&contact.id)?;
                    serde_json::to_writer(&mut out, &with_prospect(&card, &prospect)?)?;
                } else {
                    writeln!(
                        out,
                        "{:<20} {:>10}  {}",
                        card.contact,
                        card.score.to_string(),
                        card.band
                    )?;
                }
                first = false;
                Ok(())
            })();
            if let Err(e) = step {
                failure.get_or_insert(e);
            }
        })
        .map_err(anyhow::Error::from)?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if as_json {
        out.write_all(b"]\n").map_err(anyhow::Error::from)?;
    }
    out.flush().map_err(anyhow::Error::from)?;
    Ok(exit::OK)
}

pub fn what_if(config: &Config, clock: &Clock, other: &Path, as_json: bool) -> Result<u8, Failure> {
    let proposed = Config::load(other)?;
    let before = ScoringModel::compile(&config.scoring).map_err(anyhow::Error::from)?;
    let after = ScoringModel::compile(&proposed.scoring).map_err(anyhow::Error::from)?;
    let store = open_store(config)?;
    let now = clock.now();
    let mut result = relance::pipeline::whatif::what_if_over(&*store, &before, &after, now)
        .map_err(anyhow::Error::from)?;
    result.finish(20);
    let sorted = |pick: fn(&(i64, i64)) -> i64| {
        let mut v: Vec<i64> = result.scores.iter().map(pick).collect();
        v.sort_unstable();
        v
    };
    let dist_before = distribution(&sorted(|s| s.0), 10, &config.scoring.bands);
    let dist_after = distribution(&sorted(|s| s.1), 10, &proposed.scoring.bands);
    if as_json {
        let mut value = serde_json::to_value(&result).map_err(anyhow::Error::from)?;
        value["distribution"] = json!({ "before": dist_before, "after": dist_after });
        output::json(&value)?;
        return Ok(exit::OK);
    }
    println!("distribution now:");
    print!("{}", dist_before.render());
    println!("distribution with the new rules:");
    print!("{}", dist_after.render());
    if !result.largest_deltas.is_empty() {
        println!("largest score changes:");
        for d in &result.largest_deltas {
            println!(
                "  {}: {} → {} ({}{})",
                d.contact,
                d.score_before,
                d.score_after,
                if d.delta.0 > 0 { "+" } else { "" },
                d.delta
            );
        }
    }
    let mut table = output::Table::new(&["band", "now", "with the new rules"]);
    for band in result.before.keys().chain(
        result
            .after
            .keys()
            .filter(|b| !result.before.contains_key(*b)),
    ) {
        table.row(vec![
            band.clone(),
            result.before.get(band).copied().unwrap_or(0).to_string(),
            result.after.get(band).copied().unwrap_or(0).to_string(),
        ]);
    }
    table.print();
    println!(
        "{} contacts would change band (nothing was written)",
        result.moves.len()
    );
    for m in &result.moves {
        println!(
            "  {}: {} ({}) → {} ({})",
            m.contact, m.from, m.score_before, m.to, m.score_after
        );
    }
    Ok(exit::OK)
}

pub fn deals(config: &Config, clock: &Clock, as_json: bool) -> Result<u8, Failure> {
    let model = DealModel::compile(&config.scoring.deals).map_err(anyhow::Error::from)?;
    let store = open_store(config)?;
    let deals = store.deals().map_err(anyhow::Error::from)?;
    let mut inputs = Vec::with_capacity(deals.len());
    for deal in &deals {
        let (contact, company, events) = match &deal.contact {
            Some(id) => match store.scoring_input(id).map_err(anyhow::Error::from)? {
                Some((c, co, ev)) => (Some(c), co, ev),
                None => (None, None, Vec::new()),
            },
            None => (None, None, Vec::new()),
        };
        let company = match (company, &deal.company) {
            (Some(c), _) => Some(c),
            (None, Some(id)) => store.company(id).map_err(anyhow::Error::from)?,
            (None, None) => None,
        };
        inputs.push((deal, contact, company, events));
    }
    let borrowed: Vec<DealInput<'_>> = inputs
        .iter()
        .map(|(deal, contact, company, events)| DealInput {
            deal,
            contact: contact.as_ref(),
            company: company.as_ref(),
            events,
        })
        .collect();
    let ranked = model.rank(&borrowed, clock.now());
    if as_json {
        output::json(&ranked)?;
        return Ok(exit::OK);
    }
    let by_id: HashMap<&str, _> = deals.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut table = output::Table::new(&["deal", "score", "amount", "stage", "contact", "why"]);
    for s in &ranked {
        let deal = by_id.get(s.deal.as_str());
        let why: Vec<String> = s
            .contributions
            .iter()
            .map(|c| format!("{} {}", c.rule, c.points))
            .collect();
        table.row(vec![
            s.deal.clone(),
            s.score.to_string(),
            deal.and_then(|d| d.amount)
                .map_or("-".into(), |a| format!("{a:.0}")),
            deal.and_then(|d| d.stage.clone())
                .unwrap_or_else(|| "-".into()),
            deal.and_then(|d| d.contact.clone())
                .unwrap_or_else(|| "-".into()),
            why.join("; "),
        ]);
    }
    table.print();
    Ok(exit::OK)
}

pub fn customers(config: &Config, clock: &Clock, as_json: bool) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let purchase = config.scoring.customers.purchase_event.clone();
    let mut buyers: Vec<(String, Vec<Event>)> = Vec::new();
    store
        .scan_histories(&mut |contact, events| {
            let bought: Vec<Event> = events.into_iter().filter(|e| e.kind == purchase).collect();
            if !bought.is_empty() {
                buyers.push((contact.id, bought));
            }
        })
        .map_err(anyhow::Error::from)?;
    let scores = score_customers(
        &config.scoring.customers,
        buyers.iter().map(|(id, ev)| (id.as_str(), ev.as_slice())),
        clock.now(),
    );
    if as_json {
        output::json(&scores)?;
        return Ok(exit::OK);
    }
    let mut table = output::Table::new(&[
        "customer",
        "revenue",
        "purchases",
        "basket",
        "last",
        "RFM",
        "segment",
        "ABC",
        "value",
    ]);
    for s in &scores {
        table.row(vec![
            s.customer.clone(),
            format!("{:.0}", s.revenue),
            s.purchases.to_string(),
            format!("{:.0}", s.average_basket),
            s.last_purchase.date_naive().to_string(),
            format!("{}{}{}", s.rfm.recency, s.rfm.frequency, s.rfm.monetary),
            serde_json::to_value(s.rfm.segment)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            serde_json::to_value(s.abc)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            serde_json::to_value(s.value)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(exit::OK)
}
