//! The scheduling task of `relance run`: sleeps until the next due tick,
//! wakes early when the configuration is reloaded or shutdown is asked, and
//! runs due jobs one after the other under a stored lease.

use super::Schedule;
use crate::clock::Clock;
use crate::config::{Config, Job};
use crate::model::Timestamp;
use crate::shutdown::Shutdown;
use crate::store::{JobRun, ScheduleStore, SqliteStore, StoreError};
use std::sync::Arc;
use tokio::sync::watch;

/// A job failed; the scheduler records it and goes on with the next tick.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

/// What the scheduled jobs do. Runs on a blocking thread.
pub trait Jobs: Send + Sync + 'static {
    /// Runs `job` for `tick`; returns a one-line summary for the run log.
    fn run(&self, job: Job, tick: Timestamp, config: &Config) -> Result<String, JobError>;
}

/// Settings of the scheduling loop.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Identifies this process in leases.
    pub owner: String,
    /// A tick older than this when seen is "missed" (misfire policy applies).
    pub grace: chrono::Duration,
    /// How long a schedule is held while its jobs run.
    pub lease: chrono::Duration,
    /// Upper bound on a sleep, so a changed clock is noticed.
    pub max_sleep: std::time::Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            owner: format!("relance-{}", std::process::id()),
            grace: chrono::Duration::seconds(60),
            lease: chrono::Duration::hours(1),
            max_sleep: std::time::Duration::from_secs(60),
        }
    }
}

/// Runs until shutdown. Store errors are logged and retried on the next wake.
pub async fn run<J: Jobs>(
    mut config: watch::Receiver<Arc<Config>>,
    jobs: Arc<J>,
    clock: Clock,
    options: SchedulerOptions,
    mut shutdown: Shutdown,
) {
    while !shutdown.is_shutdown() {
        let current = config.borrow_and_update().clone();
        let (jobs2, clock2, options2) = (jobs.clone(), clock.clone(), options.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let mut store = SqliteStore::from_config(&current)?;
            pass(&mut store, &current, jobs2.as_ref(), &clock2, &options2)
        })
        .await;
        let next = match pass {
            Ok(Ok(next)) => next,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "scheduler pass failed; retrying");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduler pass panicked; retrying");
                None
            }
        };
        let sleep = next
            .map(|n| (n - clock.now()).to_std().unwrap_or_default())
            .unwrap_or(options.max_sleep)
            .min(options.max_sleep);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!("schedules reloaded");
            }
            () = shutdown.recv() => {}
        }
    }
}

/// One pass over every schedule at the clock's now: runs what is due and
/// returns the next instant something will be.
pub fn pass<J: Jobs + ?Sized>(
    store: &mut SqliteStore,
    config: &Config,
    jobs: &J,
    clock: &Clock,
    options: &SchedulerOptions,
) -> Result<Option<Timestamp>, StoreError> {
    let now = clock.now();
    let mut next: Option<Timestamp> = None;
    for (name, schedule_config) in &config.schedules {
        let schedule = match Schedule::new(name, schedule_config) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "schedule skipped");
                continue;
            }
        };
        let last = store.last_tick(name)?;
        let plan = schedule.plan(last, now, options.grace);
        next = match (next, plan.next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if plan.run.is_empty() && plan.last == last {
            continue;
        }
        if !store.claim_schedule(name, &options.owner, now, now + options.lease)? {
            tracing::debug!(schedule = %name, "held by another process");
            continue;
        }
        if plan.skipped > 0 {
            tracing::warn!(schedule = %name, skipped = plan.skipped, policy = ?schedule.misfire, "missed ticks not run");
        }
        for tick in &plan.run {
            let id = store.start_job_run(&JobRun {
                schedule: name.clone(),
                job: format!("{:?}", schedule.job).to_lowercase(),
                tick: *tick,
                owner: options.owner.clone(),
                started_at: clock.now(),
                finished_at: None,
                outcome: None,
            })?;
            let outcome = match jobs.run(schedule.job, *tick, config) {
                Ok(summary) => {
                    tracing::info!(schedule = %name, tick = %tick, %summary, "job done");
                    format!("ok: {summary}")
                }
                Err(e) => {
                    tracing::error!(schedule = %name, tick = %tick, error = %e, "job failed");
                    format!("error: {e}")
                }
            };
            store.finish_job_run(id, clock.now(), &outcome)?;
        }
        store.complete_schedule(name, &options.owner, plan.last.unwrap_or(now))?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::Coordinator;
    use std::path::Path;
    use std::sync::Mutex;

    /// Records each call and takes a while, to expose overlaps.
    struct Recording {
        calls: Mutex<Vec<(Job, Timestamp)>>,
        busy: std::time::Duration,
    }

    impl Jobs for Recording {
        fn run(&self, job: Job, tick: Timestamp, _: &Config) -> Result<String, JobError> {
            std::thread::sleep(self.busy);
            self.calls.lock().expect("lock").push((job, tick));
            Ok("done".into())
        }
    }

    fn config(dir: &tempfile::TempDir, schedules: &str) -> Config {
        let text = format!(
            "[store]\npath = \"{}\"\n{schedules}",
            dir.path().join("s.db").display()
        );
        Config::parse(&text, Path::new("t.toml"), &|_| None).expect("valid")
    }

    fn t(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn catch_up_after_downtime_runs_the_last_ticks_in_order_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(
            &dir,
            "[schedules.r]\njob = \"rescore\"\ncron = \"0 * * * *\"\nmisfire = \"catch_up\"\ncatch_up_limit = 2\n",
        );
        let mut store = SqliteStore::from_config(&cfg).expect("store");
        let jobs = Recording {
            calls: Mutex::new(Vec::new()),
            busy: std::time::Duration::ZERO,
        };
        let opts = SchedulerOptions {
            owner: "a".into(),
            ..SchedulerOptions::default()
        };
        // First start: nothing replayed; the next tick is the coming hour.
        let next = pass(
            &mut store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T08:00:10Z")),
            &opts,
        )
        .expect("pass");
        assert_eq!(next, Some(t("2026-05-04T09:00:00Z")));
        assert!(jobs.calls.lock().expect("lock").is_empty());
        // Down from 08:00 to 12:30: 09, 10, 11, 12 missed; catch-up runs 11 and 12.
        pass(
            &mut store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T12:30:00Z")),
            &opts,
        )
        .expect("pass");
        let ticks: Vec<Timestamp> = jobs
            .calls
            .lock()
            .expect("lock")
            .iter()
            .map(|c| c.1)
            .collect();
        assert_eq!(
            ticks,
            [t("2026-05-04T11:00:00Z"), t("2026-05-04T12:00:00Z")]
        );
        // The same instant again runs nothing: the ticks are stored as done.
        pass(
            &mut store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T12:30:00Z")),
            &opts,
        )
        .expect("pass");
        assert_eq!(jobs.calls.lock().expect("lock").len(), 2);
        let runs = store.job_runs(Some("r"), 10).expect("runs");
        assert_eq!(runs.len(), 2);
        assert!(
            runs.iter()
                .all(|r| r.outcome.as_deref() == Some("ok: done"))
        );
    }

    #[test]
    fn a_schedule_held_by_another_process_is_not_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(
            &dir,
            "[schedules.r]\njob = \"plan\"\ncron = \"0 * * * *\"\n",
        );
        let mut store = SqliteStore::from_config(&cfg).expect("store");
        let jobs = Recording {
            calls: Mutex::new(Vec::new()),
            busy: std::time::Duration::ZERO,
        };
        let a = SchedulerOptions {
            owner: "a".into(),
            ..SchedulerOptions::default()
        };
        let b = SchedulerOptions {
            owner: "b".into(),
            ..SchedulerOptions::default()
        };
        pass(
            &mut store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T08:00:10Z")),
            &a,
        )
        .expect("pass");
        let now = t("2026-05-04T09:00:05Z");
        assert!(
            store
                .claim_schedule("r", "b", now, now + chrono::Duration::minutes(10))
                .expect("claim")
        );
        pass(&mut store, &cfg, &jobs, &Clock::fixed(now), &a).expect("pass");
        assert!(jobs.calls.lock().expect("lock").is_empty(), "b holds it");
        pass(&mut store, &cfg, &jobs, &Clock::fixed(now), &b).expect("pass");
        assert_eq!(jobs.calls.lock().expect("lock").len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_runs_each_second_without_overlap_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("tmp");
        // Every second; each run takes 1.5 s, so ticks come while a run is going.
        let cfg = config(
            &dir,
            "[schedules.fast]\njob = \"dispatch\"\ncron = \"* * * * * *\"\nmisfire = \"run_once\"\n",
        );
        let (_tx, rx) = watch::channel(Arc::new(cfg.clone()));
        let jobs = Arc::new(Recording {
            calls: Mutex::new(Vec::new()),
            busy: std::time::Duration::from_millis(1500),
        });
        let coordinator = Coordinator::default();
        let opts = SchedulerOptions {
            owner: "loop".into(),
            ..SchedulerOptions::default()
        };
        let task = tokio::spawn(run(
            rx,
            jobs.clone(),
            Clock::system(),
            opts,
            coordinator.listener(),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(4200)).await;
        assert!(
            coordinator
                .shutdown(std::time::Duration::from_secs(5))
                .await,
            "stopped within grace"
        );
        task.await.expect("task ended");
        let store = SqliteStore::from_config(&cfg).expect("store");
        let mut runs = store.job_runs(Some("fast"), 100).expect("runs");
        runs.reverse();
        assert!(runs.len() >= 2, "{runs:?}");
        for pair in runs.windows(2) {
            let prev_end = pair[0].finished_at.expect("finished");
            assert!(pair[1].started_at >= prev_end, "overlap: {pair:?}");
            assert!(pair[1].tick > pair[0].tick, "each tick once");
        }
    }
}
