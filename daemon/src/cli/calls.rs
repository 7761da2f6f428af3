//! `relance calls today|lists|kpis`, `relance scores distribution`,
//! `relance campaigns`: the call desk and the sales-ops reports, printed
//! from [`relance::pipeline::report`].

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::domain::desk::kpis::{By, Kpis};
use relance::domain::desk::today::Brief;
use relance::pipeline::config::Config;
use relance::pipeline::report;
use relance::ports::store::desk::Listed;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Who to call today, ranked (priority, band, score, call-back date),
    /// each with why and the last call.
    Today {
        #[arg(long)]
        owner: Option<String>,
        /// At most this many contacts (the total is exact).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// Skip the first N contacts of the ranking (the next page).
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        json: bool,
    },
    /// Never called; never call again; got documentation and not called
    /// since; call-back overdue.
    Lists {
        /// At most this many contacts per list (the totals are exact).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Calls and pitches per hour, appointment, call-back and refusal rates,
    /// each with its trend against the previous period.
    Kpis {
        #[arg(long, value_enum, default_value = "session")]
        by: By,
        #[arg(long)]
        owner: Option<String>,
        /// Calls of the last DAYS days before --now.
        #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        #[arg(long)]
        json: bool,
    },
}

fn err(e: report::ReportError) -> Failure {
    Failure::Other(anyhow::Error::from(e))
}

fn last_call(b: &Brief) -> String {
    match (&b.last_call_at, &b.last_call_code) {
        (Some(at), Some(code)) => format!("{code} {}", at.to_rfc3339()),
        _ => "never".into(),
    }
}

pub fn run(config: &Config, clock: &Clock, action: &Action) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let now = clock.now();
    match action {
        Action::Today {
            owner,
            limit,
            offset,
            json,
        } => {
            let today =
                report::calls_today(&*store, config, now, owner.as_deref(), *offset, *limit)
                    .map_err(err)?;
            if *json {
                output::json(&today)?;
                return Ok(exit::OK);
            }
            let list = &today.calls;
            let mut table = output::Table::new(&[
                "contact",
                "name",
                "phone",
                "priority",
                "band",
                "score",
                "status",
                "why",
                "last call",
            ]);
            for t in list {
                let why: Vec<String> = t
                    .why
                    .iter()
                    .map(|w| match w {
                        relance::domain::desk::today::Why::Trigger { followup, .. } => {
                            format!("trigger {followup}")
                        }
                        relance::domain::desk::today::Why::CallBack { at } => {
                            format!("call-back {}", at.to_rfc3339())
                        }
                        relance::domain::desk::today::Why::HotLead { band } => {
                            format!("hot lead ({band})")
                        }
                    })
                    .collect();
                let c = &t.contact;
                table.row(vec![
                    c.id.clone(),
                    output::opt(&c.name),
                    output::opt(&c.phone),
                    t.priority.to_string(),
                    output::opt(&c.band),
                    c.score.map_or("-".into(), |s| s.to_string()),
                    c.status.status.to_string(),
                    why.join("; "),
                    last_call(c),
                ]);
            }
            if !list.is_empty() {
                table.print();
            }
            println!("{} contacts to call today", today.total);
            if list.is_empty() && today.offset > 0 {
                println!("none from rank {} on", today.offset + 1);
            } else if today.offset > 0 || today.more > 0 {
                println!(
                    "shown: ranks {} to {}; {} more (--offset {}, --limit N)",
                    today.offset + 1,
                    today.offset + list.len() as u64,
                    today.more,
                    today.offset + list.len() as u64
                );
            }
            Ok(exit::OK)
        }
        Action::Lists { limit, json } => {
            let lists = report::call_lists(&*store, now, *limit).map_err(err)?;
            if *json {
                output::json(&lists)?;
                return Ok(exit::OK);
            }
            let show = |title: &str, l: &Listed, extra: &dyn Fn(&Brief) -> String| {
                println!("{title}: {}", l.total);
                let mut table =
                    output::Table::new(&["contact", "name", "phone", "owner", "detail"]);
                for c in &l.contacts {
                    table.row(vec![
                        c.id.clone(),
                        output::opt(&c.name),
                        output::opt(&c.phone),
                        output::opt(&c.owner),
                        extra(c),
                    ]);
                }
                if !l.contacts.is_empty() {
                    table.print();
                }
            };
            show("never called", &lists.never_called, &|_| String::new());
            show("never call again", &lists.never_call_again, &|c| {
                c.do_not_call
                    .clone()
                    .unwrap_or_else(|| format!("{} ({})", c.status.status, last_call(c)))
            });
            show(
                "got documentation, not called since",
                &lists.documented_not_called,
                &|c| {
                    c.documentation_at.map_or(String::new(), |d| {
                        format!("documentation {}", d.to_rfc3339())
                    })
                },
            );
            show("call-back overdue", &lists.callback_overdue, &|c| {
                c.callback_at
                    .map_or(String::new(), |d| format!("call back {}", d.to_rfc3339()))
            });
            Ok(exit::OK)
        }
        Action::Kpis {
            by,
            owner,
            days,
            json,
        } => {
            let from = now - chrono::Duration::days(i64::from(*days));
            let r = report::call_kpis(&*store, config, from, now, *by, owner.as_deref())
                .map_err(err)?;
            if *json {
                output::json(&r)?;
                return Ok(exit::OK);
            }
            let rate = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
            let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            let trend = |v: Option<f64>, pct: bool| match v {
                None => String::new(),
                Some(d) if pct => format!(" ({:+.1})", d * 100.0),
                Some(d) => format!(" ({d:+.2})"),
            };
            let mut table = output::Table::new(&[
                "period",
                "owner",
                "calls",
                "hours",
                "calls/h",
                "pitches/h",
                "appointments",
                "call-backs",
                "refusals",
            ]);
            let line = |label: String,
                        owner: String,
                        k: &Kpis,
                        t: Option<&relance::domain::desk::kpis::Trend>| {
                vec![
                    label,
                    owner,
                    k.calls.to_string(),
                    format!("{:.2}", k.hours),
                    num(k.calls_per_hour) + &trend(t.and_then(|t| t.calls_per_hour), false),
                    num(k.pitches_per_hour) + &trend(t.and_then(|t| t.pitches_per_hour), false),
                    rate(k.appointment_rate) + &trend(t.and_then(|t| t.appointment_rate), true),
                    rate(k.callback_rate) + &trend(t.and_then(|t| t.callback_rate), true),
                    rate(k.refusal_rate) + &trend(t.and_then(|t| t.refusal_rate), true),
                ]
            };
            for p in &r.periods {
                table.row(line(
                    p.label.clone(),
                    output::opt(&p.owner),
                    &p.kpis,
                    p.trend.as_ref(),
                ));
            }
            table.row(line("total".into(), output::opt(&r.owner), &r.total, None));
            table.print();
            if !r.total.refusal_reasons.is_empty() {
                let reasons: Vec<String> = r
                    .total
                    .refusal_reasons
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                println!("refusal reasons: {}", reasons.join(", "));
            }
            Ok(exit::OK)
        }
    }
}

/// `relance scores distribution`.
pub fn distribution(config: &Config, bins: u32, json: bool) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let d = report::score_distribution(&*store, config, bins).map_err(err)?;
    if json {
        output::json(&d)?;
        return Ok(exit::OK);
    }
    print!("{}", d.render());
    let bands: Vec<String> = d
        .bands
        .iter()
        .map(|b| format!("{} {}", b.band, b.count))
        .collect();
    println!("{} contacts; bands: {}", d.contacts, bands.join(", "));
    let p: Vec<String> = d
        .percentiles
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("percentiles: {}", p.join(", "));
    Ok(exit::OK)
}

/// `relance campaigns`.
pub fn campaigns(config: &Config, clock: &Clock, json: bool) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let list = report::campaigns(&*store, config, clock.now()).map_err(err)?;
    if json {
        output::json(&list)?;
        return Ok(exit::OK);
    }
    let mut table = output::Table::new(&[
        "campaign",
        "kind",
        "sent",
        "opened",
        "clicked",
        "unsubscribed",
        "clickers in target",
        "conversions",
    ]);
    for c in &list {
        table.row(vec![
            c.name.clone(),
            format!("{:?}", c.kind).to_lowercase(),
            c.sent.to_string(),
            c.opened.to_string(),
            c.clicked.to_string(),
            c.unsubscribed.to_string(),
            format!(
                "{} of {} ({})",
                c.clicked_in_target,
                c.clicked,
                c.in_target_share
                    .map_or("-".into(), |s| format!("{:.1}%", s * 100.0))
            ),
            format!(
                "{} (band up {}, meeting {}, purchase {})",
                c.conversions.contacts,
                c.conversions.band_up,
                c.conversions.meeting,
                c.conversions.purchase
            ),
        ]);
    }
    table.print();
    Ok(exit::OK)
}
