//! The scheduling task of `relance run`: sleeps until the next due tick,
//! wakes early when the configuration is reloaded or shutdown is asked, and
//! runs due jobs one after the other under a stored lease.

use super::Schedule;
use crate::core::clock::Clock;
use crate::core::config::sections::Job;
use crate::core::model::Timestamp;
use crate::core::shutdown::Shutdown;
use crate::pipeline::config::Config;
use crate::ports::store::{JobRun, StoreError, StoreHandle};
use std::sync::{Arc, mpsc};
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
    /// Upper bound on a sleep, so a changed clock is noticed.
    pub max_sleep: std::time::Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            owner: format!("relance-{}", std::process::id()),
            grace: chrono::Duration::seconds(60),
            max_sleep: std::time::Duration::from_secs(60),
        }
    }
}

/// Runs until shutdown. Store errors are logged and retried on the next wake.
pub async fn run<J: Jobs>(
    store: StoreHandle,
    mut config: watch::Receiver<Arc<Config>>,
    jobs: Arc<J>,
    clock: Clock,
    options: SchedulerOptions,
    mut shutdown: Shutdown,
) {
    // The first pass, and the first after a reload, say when each schedule
    // runs next; later passes say it for the schedules that ran.
    let mut announce = true;
    while !shutdown.is_shutdown() {
        let current = config.borrow_and_update().clone();
        let (jobs2, clock2, options2) = (jobs.clone(), clock.clone(), options.clone());
        let store = store.clone();
        let pass = tokio::task::spawn_blocking(move || {
            pass(
                &store,
                &current,
                jobs2.as_ref(),
                &clock2,
                &options2,
                announce,
            )
        })
        .await;
        let next = match pass {
            Ok(Ok(next)) => {
                announce = false;
                next
            }
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
                announce = true;
                tracing::info!("schedules reloaded");
            }
            () = shutdown.recv() => {}
        }
    }
}

/// Renews a schedule's lease every third of it while its jobs run, on its
/// own thread, so that the lease can be short: a killed
/// process stops renewing and its claim lapses within one lease.
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(
        store: &StoreHandle,
        config: &Config,
        schedule: &str,
        owner: &str,
        clock: &Clock,
    ) -> Self {
        let lease = config.daemon.schedule_lease.0;
        let every = (lease / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1));
        let (stop, stopped) = mpsc::channel::<()>();
        let (store, schedule, owner, clock) = (
            store.clone(),
            schedule.to_string(),
            owner.to_string(),
            clock.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("relance-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    match store.renew_schedule(&schedule, &owner, clock.now() + lease) {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(
                            schedule = %schedule,
                            "the schedule's lease was taken over while its job ran"
                        ),
                        Err(e) => {
                            tracing::warn!(schedule = %schedule, error = %e, "lease not renewed")
                        }
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no lease heartbeat thread"))
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Logs when `schedule` runs next, in its own time zone.
fn announce_next(schedule: &Schedule, next: Option<Timestamp>) {
    let job = format!("{:?}", schedule.job).to_lowercase();
    match next {
        Some(n) => tracing::info!(
            schedule = %schedule.name,
            %job,
            next = %n.with_timezone(&schedule.timezone).to_rfc3339(),
            timezone = %schedule.timezone,
            "next run"
        ),
        None => {
            tracing::warn!(schedule = %schedule.name, %job, "no next run: the cron never fires again")
        }
    }
}

/// One pass over every schedule at the clock's now: runs what is due and
/// returns the next instant something will be. With `announce`, logs when
/// every schedule runs next (else only those that ran).
pub fn pass<J: Jobs + ?Sized>(
    store: &StoreHandle,
    config: &Config,
    jobs: &J,
    clock: &Clock,
    options: &SchedulerOptions,
    announce: bool,
) -> Result<Option<Timestamp>, StoreError> {
    let now = clock.now();
    let lease = config.daemon.schedule_lease.0;
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
        next = earliest(next, plan.next);
        if plan.run.is_empty() && plan.last == last {
            if announce {
                announce_next(&schedule, plan.next);
            }
            continue;
        }
        if !store.claim_schedule(name, &options.owner, now, now + lease)? {
            // Held: by a live process, or a dead one whose lease lapses
            // soon. Look again after a heartbeat, not at the next tick.
            tracing::debug!(schedule = %name, "held by another process");
            next = earliest(next, Some(now + lease / 3));
            continue;
        }
        // Read the last tick again under the lease: another process may
        // have run and released the schedule between the first read and
        // the claim, and its ticks must not run twice.
        let last = store.last_tick(name)?;
        let plan = schedule.plan(last, now, options.grace);
        if plan.run.is_empty() && plan.last == last {
            store.complete_schedule(name, &options.owner, last.unwrap_or(now))?;
            continue;
        }
        let heartbeat = Heartbeat::start(store, config, name, &options.owner, clock);
        let abandoned = store.close_abandoned_runs(name, &options.owner, now)?;
        if abandoned > 0 {
            tracing::warn!(schedule = %name, runs = abandoned, "runs interrupted by a stopped process are closed; their ticks run again under the misfire policy");
        }
        if plan.skipped > 0 {
            tracing::warn!(schedule = %name, skipped = plan.skipped, policy = ?schedule.misfire, "missed ticks not run");
        }
        if last.is_none() {
            tracing::info!(schedule = %name, "first start of this schedule: its job runs now");
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
        drop(heartbeat);
        store.complete_schedule(name, &options.owner, plan.last.unwrap_or(now))?;
        // A long job may have run past ticks: say the one after now.
        announce_next(&schedule, schedule.next_after(clock.now().max(now)));
    }
    Ok(next)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shutdown::Coordinator;
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
        let store = crate::adapters::sqlite::open(&cfg).expect("store");
        let jobs = Recording {
            calls: Mutex::new(Vec::new()),
            busy: std::time::Duration::ZERO,
        };
        let opts = SchedulerOptions {
            owner: "a".into(),
            ..SchedulerOptions::default()
        };
        // First start: runs once now, replays nothing; the next tick is the
        // coming hour.
        let next = pass(
            &store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T08:00:10Z")),
            &opts,
            false,
        )
        .expect("pass");
        assert_eq!(next, Some(t("2026-05-04T09:00:00Z")));
        assert_eq!(jobs.calls.lock().expect("lock").len(), 1);
        jobs.calls.lock().expect("lock").clear();
        // Down from 08:00 to 12:30: 09, 10, 11, 12 missed; catch-up runs 11 and 12.
        pass(
            &store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T12:30:00Z")),
            &opts,
            false,
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
            &store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T12:30:00Z")),
            &opts,
            false,
        )
        .expect("pass");
        assert_eq!(jobs.calls.lock().expect("lock").len(), 2);
        let runs = store.job_runs(Some("r"), 10).expect("runs");
        assert_eq!(runs.len(), 3);
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
        let store = crate::adapters::sqlite::open(&cfg).expect("store");
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
            &store,
            &cfg,
            &jobs,
            &Clock::fixed(t("2026-05-04T08:00:10Z")),
            &a,
            false,
        )
        .expect("pass");
        jobs.calls.lock().expect("lock").clear();
        let now = t("2026-05-04T09:00:05Z");
        assert!(
            store
                .claim_schedule("r", "b", now, now + chrono::Duration::minutes(10))
                .expect("claim")
        );
        pass(&store, &cfg, &jobs, &Clock::fixed(now), &a, false).expect("pass");
        assert!(jobs.calls.lock().expect("lock").is_empty(), "b holds it");
        pass(&store, &cfg, &jobs, &Clock::fixed(now), &b, false).expect("pass");
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
            crate::adapters::sqlite::open(&cfg).expect("store"),
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
        let store = crate::adapters::sqlite::open(&cfg).expect("store");
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
