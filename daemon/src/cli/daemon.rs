//! `relance run [--once]` and `relance schedules`: the daemon and what its
//! scheduler did.

use super::{Failure, exit, open_store, output};
use relance::core::clock::Clock;
use relance::pipeline::config::Config;
use relance::pipeline::scheduler::Schedule;
use serde::Serialize;

pub fn run(config: Config, clock: &Clock, once: bool, as_json: bool) -> Result<u8, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    let store = open_store(&config)?;
    if !once {
        runtime
            .block_on(relance::daemon::run(config, clock.clone(), store))
            .map_err(anyhow::Error::from)?;
        return Ok(exit::OK);
    }
    let report = runtime
        .block_on(relance::daemon::once(config, clock.clone(), store))
        .map_err(anyhow::Error::from)?;
    if as_json {
        output::json(&report)?;
    } else {
        for job in &report.jobs {
            println!("{job}");
        }
        println!("dispatch: {}", report.dispatch);
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct ScheduleView {
    name: String,
    job: String,
    cron: String,
    timezone: String,
    last_tick: Option<relance::core::model::Timestamp>,
    next: Option<relance::core::model::Timestamp>,
}

#[derive(Serialize)]
struct Schedules {
    schedules: Vec<ScheduleView>,
    runs: Vec<relance::ports::store::JobRun>,
}

pub fn schedules(config: &Config, clock: &Clock, limit: u32, as_json: bool) -> Result<u8, Failure> {
    let store = open_store(config)?;
    let mut views = Vec::new();
    for (name, s) in &config.schedules {
        let schedule = Schedule::new(name, s).map_err(|e| Failure::Input(e.to_string()))?;
        views.push(ScheduleView {
            name: name.clone(),
            job: format!("{:?}", s.job).to_lowercase(),
            cron: s.cron.clone(),
            timezone: s.timezone.to_string(),
            last_tick: store.last_tick(name).map_err(anyhow::Error::from)?,
            next: schedule.next_after(clock.now()),
        });
    }
    let mut runs = store.job_runs(None, limit).map_err(anyhow::Error::from)?;
    runs.reverse();
    if as_json {
        output::json(&Schedules {
            schedules: views,
            runs,
        })?;
        return Ok(exit::OK);
    }
    let mut table = output::Table::new(&["schedule", "job", "cron", "zone", "last tick", "next"]);
    let at = |t: Option<relance::core::model::Timestamp>| t.map_or("-".into(), |t| t.to_rfc3339());
    for v in &views {
        table.row(vec![
            v.name.clone(),
            v.job.clone(),
            v.cron.clone(),
            v.timezone.clone(),
            at(v.last_tick),
            at(v.next),
        ]);
    }
    table.print();
    println!();
    let mut table = output::Table::new(&["schedule", "tick", "owner", "started", "outcome"]);
    for r in &runs {
        table.row(vec![
            r.schedule.clone(),
            r.tick.to_rfc3339(),
            r.owner.clone(),
            r.started_at.to_rfc3339(),
            output::opt(&r.outcome),
        ]);
    }
    table.print();
    Ok(exit::OK)
}
