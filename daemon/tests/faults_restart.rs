//! Faults in the daemon's life: `relance run` on a SQLite store, killed
//! with SIGKILL at seeded pseudo-random moments of planning, of a scheduled
//! job and of dispatch, then started again. Nothing accepted is lost,
//! nothing is planned twice (one outbox row per follow-up, each under its
//! own key, delivered only under that key), and the schedules run again
//! within a minute of the restart, the killed process's lease lapsed.

#![allow(clippy::unwrap_used)]

mod common;

use common::Env;
use common::daemon::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

const CONTACTS: usize = 1500;
const ROUNDS: usize = 6;

/// Where a kill lands.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// A seeded delay after start: the planning pass that resumes the
    /// broadcast accepted while the daemon was down.
    Planning,
    /// While a scheduled job runs (its run started, not finished).
    ScheduledJob,
    /// After a seeded number of new deliveries.
    Dispatch,
}

fn kill_at(
    env: &Env,
    child: &mut Child,
    log: &str,
    moment: Moment,
    rng: &mut Lcg,
    sent: &dyn Fn() -> usize,
) {
    wait_for_log(env, log, "relance running", 60);
    let owner = owner_of(child);
    match moment {
        Moment::Planning => {
            std::thread::sleep(Duration::from_millis(rng.below(700)));
        }
        Moment::ScheduledJob => {
            let started = Instant::now();
            let running = || {
                ["plan", "rescore"].iter().any(|s| {
                    let (started, finished) = job_runs_of(env, s, &owner);
                    started > finished
                })
            };
            // Scheduled jobs tick every few seconds; kill anyway after 30 s.
            while !running() && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        }
        Moment::Dispatch => {
            let target = sent() + 1 + rng.below(CONTACTS as u64 / 3) as usize;
            let started = Instant::now();
            while sent() < target && started.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, by the child's PID
    child.wait().unwrap();
}

/// Whether the store says a planning pass was requested and not completed.
fn planning_cut_short(env: &Env) -> bool {
    let conn = rusqlite::Connection::open(env.path("store.db")).unwrap();
    let number = |key: &str| -> i64 {
        conn.query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .unwrap_or(0)
    };
    number("plan.requested") > number("plan.done")
}

#[test]
fn killed_at_random_moments_of_planning_jobs_and_dispatch_it_loses_nothing_and_plans_nothing_twice()
{
    killed_at_random_moments("timeout_secs = 5", 0x0012_2026);
}

/// The same with the webhook's POSTs pipelined, 16 per connection: the
/// requests in flight when the daemon dies go again under their keys.
#[test]
fn killed_while_dispatching_pipelined_it_loses_nothing_and_sends_only_under_row_keys() {
    killed_at_random_moments("timeout_secs = 5, pipeline = 16", 0x0004_1226);
}

fn killed_at_random_moments(settings: &str, seed: u64) {
    let (received, port, _rt) = receiver();
    let env = daemon_env_with(
        port,
        settings,
        r#"
[schedules.plan]
job = "plan"
cron = "*/3 * * * * *"

[schedules.rescore]
job = "rescore"
cron = "*/2 * * * * *"
"#,
    );
    env.import_text("contacts", "contacts.csv", &contacts_csv(CONTACTS));
    let sent = || received.0.lock().unwrap().len();
    let mut rng = Lcg(seed);
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        // New work each round, accepted while the daemon is down.
        broadcast_to_prospects(&env, &format!("b{round}"));
        // Each kind of moment twice; where exactly within it is seeded.
        let moment = [Moment::Planning, Moment::ScheduledJob, Moment::Dispatch][round % 3];
        let log = format!("run-{round}.log");
        let mut child = spawn_daemon(&env, &log);
        kill_at(&env, &mut child, &log, moment, &mut rng, &sent);
        kills.push((moment, planning_cut_short(&env)));
    }
    let before_last = sent();

    let restarted = Instant::now();
    let child = spawn_daemon(&env, "run-final.log");
    let owner = owner_of(&child);
    let expected = CONTACTS * ROUNDS;
    let started = Instant::now();
    let mut schedules_back = None;
    loop {
        if schedules_back.is_none()
            && ["plan", "rescore"]
                .iter()
                .all(|s| job_runs_of(&env, s, &owner).1 > 0)
        {
            schedules_back = Some(restarted.elapsed());
        }
        let rows = outbox(&env);
        let done = rows.iter().filter(|r| r["state"] == "sent").count();
        if rows.len() >= expected && done == rows.len() && schedules_back.is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "after kills {kills:?}: {done} of {} rows sent, {expected} expected, schedules back: {schedules_back:?}; log: {}",
            rows.len(),
            log_text(&env, "run-final.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop_daemon(child);

    // Every schedule ran again within a minute of the restart.
    let back = schedules_back.unwrap();
    assert!(
        back < Duration::from_secs(60),
        "schedules back after {back:?}"
    );

    // One row per contact and broadcast, each under its own key.
    let rows = outbox(&env);
    let mut per_followup: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        let key = (
            r["contact"].as_str().unwrap().to_string(),
            r["followup"].as_str().unwrap().to_string(),
        );
        *per_followup.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = per_followup.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "planned twice: {twice:?}");
    assert_eq!(per_followup.len(), expected, "a follow-up was lost");
    let keys: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["idem_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), rows.len(), "two rows share a key");

    // Every row was delivered, and only under row keys.
    let got = received.0.lock().unwrap().clone();
    let delivered: BTreeSet<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(delivered, keys, "deliveries and rows differ");
    let resent = got.len() - expected;
    eprintln!(
        "kills at {kills:?}; {before_last} deliveries before the last start, {resent} re-sent; schedules back {back:?} after the restart"
    );
    // At most the round under way at each kill.
    assert!(resent <= kills.len() * OUTBOX_BATCH, "{resent} re-sends");
    // The store's own summary agrees.
    let runs: Value = env.json(&["schedules", "--json"]);
    assert!(runs["schedules"].as_array().unwrap().len() == 2, "{runs}");
}
