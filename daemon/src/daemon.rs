//! `relance run`: the long-running process. Three tasks share one
//! configuration (a watch channel, replaced on SIGHUP when the new file is
//! valid and changes nothing that needs a restart): the scheduler runs the cron jobs (rescore, plan, dispatch); the
//! dispatcher delivers due outbox rows and sleeps until the next due
//! instant, woken early when a plan pass queued work; the main task waits
//! for signals. At start, planning left undone by the last process (see
//! `resume_planning`) runs at once. SIGTERM / SIGINT stop all three; sends in flight finish
//! within `[outbox] shutdown_grace`, else their claims are released.

use crate::adapters::api::ApiState;
use crate::adapters::plugins::{HostError, PluginHost, builtin_tables};
use crate::core::clock::Clock;
use crate::core::config::ConfigErrors;
use crate::core::config::sections::Job;
use crate::core::metrics::Metrics;
use crate::core::model::Timestamp;
use crate::core::shutdown::{Coordinator, Shutdown};
use crate::pipeline::config::Config;
use crate::pipeline::dispatch::{DispatchError, Dispatcher, RoundReport};
use crate::pipeline::scheduler::runner::{self, JobError, Jobs, SchedulerOptions};
use crate::ports::store::{StoreError, StoreHandle};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Longest sleep of the dispatcher, so that a changed clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Pause after a failed dispatch round.
const ERROR_PAUSE: Duration = Duration::from_secs(5);
/// How often plugin health is copied to the metrics.
const HEALTH_EVERY: Duration = Duration::from_secs(15);
/// New events arriving within this delay are planned together.
const REACT_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Channel(#[from] HostError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("job failed: {0}")]
    Job(#[from] JobError),
    #[error("signals: {0}")]
    Signal(std::io::Error),
    #[error("the HTTP API cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("a fixed --now only makes sense with --once")]
    FixedClock,
    #[error("a task failed: {0}")]
    Task(String),
}

/// What `relance run --once` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct OnceReport {
    pub jobs: Vec<String>,
    pub dispatch: RoundReport,
}

/// The jobs the scheduler runs, on a blocking thread.
struct DaemonJobs {
    store: StoreHandle,
    dispatcher: Arc<Dispatcher>,
    runtime: tokio::runtime::Handle,
    clock: Clock,
    dispatch_wake: Arc<Notify>,
    /// Rescoring and planning passes of this process take turns, so that
    /// they do not do the same work twice; correctness does not rest on it
    /// (other processes run their own passes): the store's queue, leases
    /// and compare-and-set marks keep passes apart.
    passes: std::sync::Mutex<()>,
    metrics: Metrics,
}

impl DaemonJobs {
    fn rescore(&self, config: &Config, now: Timestamp) -> Result<String, JobError> {
        let started = std::time::Instant::now();
        let r = crate::pipeline::rescore::rescore(&*self.store, config, now, false)
            .map_err(|e| JobError(e.to_string()))?;
        self.metrics.record_rescore(started.elapsed());
        Ok(format!(
            "rescored {} contacts, {} changed",
            r.examined, r.changed
        ))
    }

    /// Rescores what changed, then plans; wakes the dispatcher.
    fn react(&self, config: &Config, now: Timestamp) -> Result<String, JobError> {
        let _turn = self
            .passes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Fresh scores first, so band crossings fire their triggers now.
        self.rescore(config, now)?;
        let started = std::time::Instant::now();
        let report = crate::pipeline::plan::run(&*self.store, config, now, false)
            .map_err(|e| JobError(e.to_string()))?;
        self.metrics.record_pass("plan", started.elapsed());
        self.dispatch_wake.notify_one();
        Ok(report.to_string())
    }
}

impl DaemonJobs {
    /// Runs a pass, its time recorded under `name`; its report is the
    /// job's outcome.
    fn timed<R: std::fmt::Display, E: std::fmt::Display>(
        &self,
        name: &str,
        pass: impl FnOnce() -> Result<R, E>,
    ) -> Result<String, JobError> {
        let started = std::time::Instant::now();
        let report = pass().map_err(|e| JobError(e.to_string()))?;
        self.metrics.record_pass(name, started.elapsed());
        Ok(report.to_string())
    }
}

impl Jobs for DaemonJobs {
    /// Jobs work at the clock's now, not at their tick: a catch-up run of a
    /// missed tick plans what is due today.
    fn run(&self, job: Job, _tick: Timestamp, config: &Config) -> Result<String, JobError> {
        let now = self.clock.now();
        match job {
            Job::Rescore => {
                let _turn = self
                    .passes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.rescore(config, now)
            }
            Job::Plan => self.react(config, now),
            Job::Pressure => self.timed("pressure", || {
                crate::pipeline::pressure::refresh(&*self.store, config, now)
            }),
            Job::Prune => self.timed("prune", || {
                crate::pipeline::retention::prune(&*self.store, config, now)
            }),
            Job::Dispatch => {
                let clock = self.clock.clone();
                self.runtime
                    .block_on(
                        self.dispatcher
                            .drain(Arc::new(config.clone()), now, move || clock.now()),
                    )
                    .map(|r| r.to_string())
                    .map_err(|e| JobError(e.to_string()))
            }
        }
    }
}

/// The daemon's parts, built from the configuration.
struct Parts {
    host: Arc<PluginHost>,
    metrics: Metrics,
    dispatcher: Arc<Dispatcher>,
    jobs: Arc<DaemonJobs>,
    owner: String,
}

async fn build(config: &Config, clock: &Clock, store: StoreHandle) -> Result<Parts, DaemonError> {
    let host = Arc::new(PluginHost::new(
        config.plugins.clone(),
        &config.file,
        builtin_tables(),
    ));
    // Start with the channels that open; the others wait, and say why.
    let unconfigured = crate::adapters::plugins::channels::open_all(&host, config).await;
    for u in &unconfigured {
        tracing::warn!(channel = %u.channel, followups = ?u.followups, "{u}");
    }
    for (channel, warnings) in crate::adapters::plugins::channels::settings_warnings(config) {
        for w in warnings {
            tracing::warn!(%channel, "{w}");
        }
    }
    let owner = format!("relance-{}", std::process::id());
    let metrics = Metrics::new();
    metrics.set_unconfigured_channels(host.unconfigured());
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        host.clone(),
        owner.clone(),
        metrics.clone(),
    ));
    let jobs = Arc::new(DaemonJobs {
        store,
        dispatcher: dispatcher.clone(),
        runtime: tokio::runtime::Handle::current(),
        clock: clock.clone(),
        dispatch_wake: Arc::new(Notify::new()),
        passes: std::sync::Mutex::new(()),
        metrics: metrics.clone(),
    });
    Ok(Parts {
        host,
        metrics,
        dispatcher,
        jobs,
        owner,
    })
}

/// One scheduler pass (the jobs due at the clock's now), then every
/// outbox row due by then is dispatched.
pub async fn once(
    config: Config,
    clock: Clock,
    store: StoreHandle,
) -> Result<OnceReport, DaemonError> {
    let parts = build(&config, &clock, store.clone()).await?;
    let options = SchedulerOptions {
        owner: parts.owner.clone(),
        ..SchedulerOptions::default()
    };
    let config = Arc::new(config);
    let (cfg, jobs, clk, st) = (
        config.clone(),
        parts.jobs.clone(),
        clock.clone(),
        store.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<(), DaemonError> {
        runner::pass(&st, &cfg, jobs.as_ref(), &clk, &options, true)?;
        Ok(())
    })
    .await
    .map_err(|e| DaemonError::Task(e.to_string()))??;
    let now = clock.now();
    let clk = clock.clone();
    let dispatch = parts
        .dispatcher
        .drain(config.clone(), now, move || clk.now())
        .await?;
    let jobs = store
        .job_runs(None, 1000)?
        .into_iter()
        .filter(|r| r.owner == parts.owner)
        .map(|r| {
            format!(
                "{} {} {}",
                r.schedule,
                r.tick.to_rfc3339(),
                r.outcome.unwrap_or_default()
            )
        })
        .collect();
    Ok(OnceReport { jobs, dispatch })
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config, clock: Clock, store: StoreHandle) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    if clock.is_fixed() {
        return Err(DaemonError::FixedClock);
    }
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;

    let parts = build(&config, &clock, store.clone()).await?;
    let file = config.file.clone();
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let coordinator = Coordinator::default();
    let options = SchedulerOptions {
        owner: parts.owner.clone(),
        ..SchedulerOptions::default()
    };
    tokio::spawn(runner::run(
        store.clone(),
        config_rx.clone(),
        parts.jobs.clone(),
        clock.clone(),
        options,
        coordinator.listener(),
    ));
    tokio::spawn(dispatch_loop(
        parts.dispatcher.clone(),
        config_rx.clone(),
        clock.clone(),
        parts.jobs.dispatch_wake.clone(),
        coordinator.listener(),
    ));
    let react_wake = Arc::new(Notify::new());
    tokio::spawn(react_loop(
        parts.jobs.clone(),
        config_rx.clone(),
        react_wake.clone(),
        coordinator.listener(),
    ));
    resume_planning(&store, &react_wake).await;
    let api = config_rx.borrow().api.clone();
    if api.enabled {
        let state = ApiState::new(
            store.clone(),
            config_rx.clone(),
            clock.clone(),
            parts.metrics.clone(),
            react_wake.clone(),
        )?;
        let listener = tokio::net::TcpListener::bind(&api.listen)
            .await
            .map_err(|e| DaemonError::Listen {
                address: api.listen.clone(),
                source: e,
            })?;
        let shutdown = coordinator.listener();
        tokio::spawn(async move {
            if let Err(e) = crate::adapters::api::serve(listener, state, shutdown).await {
                tracing::error!(error = %e, "the HTTP API stopped");
            }
        });
    }
    tokio::spawn(health_loop(
        parts.host.clone(),
        config_rx.clone(),
        parts.metrics.clone(),
        coordinator.listener(),
    ));
    tracing::info!(owner = %parts.owner, "relance running");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                reload(&file, &config_tx, &parts.host).await;
                parts.metrics.set_unconfigured_channels(parts.host.unconfigured());
            }
        }
    }
    let grace = config_rx
        .borrow()
        .outbox
        .shutdown_grace
        .0
        .to_std()
        .unwrap_or_default();
    tracing::info!(?grace, "shutting down");
    if !coordinator.shutdown(grace).await {
        let owner = parts.owner.clone();
        let now = clock.now();
        let released = tokio::task::spawn_blocking(move || store.release_claims(&owner, now))
            .await
            .map_err(|e| DaemonError::Task(e.to_string()))??;
        tracing::warn!(
            released,
            "sends still in flight after the grace; claims released"
        );
    }
    tracing::info!("relance stopped");
    Ok(())
}

/// SIGHUP: a valid new configuration replaces the running one, all of it
/// or nothing. Refused, with the running configuration kept untouched: an
/// invalid file; a change of keys that only a restart applies (the store,
/// the API's listener, logs, the plugin host), since applying the rest would
/// leave tasks on different settings; a changed channel whose plugin refuses
/// its new settings. Changed channels are opened beside the running ones
/// and swapped in together only when every one opened.
async fn reload(file: &Path, config_tx: &watch::Sender<Arc<Config>>, host: &PluginHost) {
    let new = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; keeping the running one");
            return;
        }
    };
    let old = config_tx.borrow().clone();
    let restart = restart_keys(&old, &new);
    if !restart.is_empty() {
        tracing::error!(
            keys = %restart.join(", "),
            "configuration reload refused: changed keys take effect only at a restart; keeping the running configuration (restart relance to apply them)"
        );
        return;
    }
    let mut prepared = Vec::new();
    for (name, channel) in &new.channels {
        let same = old
            .channels
            .get(name)
            .is_some_and(|c| serde_json::to_value(c).ok() == serde_json::to_value(channel).ok());
        if same {
            continue;
        }
        match host.prepare_channel(name, channel).await {
            Ok(p) => prepared.push(p),
            Err(e) => {
                // Dropping `prepared` stops the instances opened so far.
                tracing::error!(channel = %name, error = %e, "configuration reload refused; keeping the running one");
                return;
            }
        }
    }
    let reopened = prepared.len();
    host.install_channels(prepared);
    config_tx.send_replace(Arc::new(new));
    tracing::info!(file = %file.display(), channels_reopened = reopened, "configuration reloaded");
}

/// The keys whose change a running daemon cannot apply: its tasks opened
/// the store, bound the API's listener, installed logging and created the
/// plugin host at start.
fn restart_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut compare = |section: &str, a: serde_json::Value, b: serde_json::Value, only: &[&str]| {
        let empty = serde_json::Map::new();
        let (a, b) = (
            a.as_object().unwrap_or(&empty),
            b.as_object().unwrap_or(&empty),
        );
        let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in names {
            if (only.is_empty() || only.contains(&k.as_str())) && a.get(k) != b.get(k) {
                keys.push(format!("{section}.{k}"));
            }
        }
    };
    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or_default()
    }
    compare("store", json(&old.store), json(&new.store), &[]);
    compare("log", json(&old.log), json(&new.log), &[]);
    compare("plugins", json(&old.plugins), json(&new.plugins), &[]);
    // Without the API on either side, its listener settings do not matter.
    if old.api.enabled || new.api.enabled {
        compare(
            "api",
            json(&old.api),
            json(&new.api),
            &["enabled", "listen", "body_limit_kb"],
        );
    }
    keys
}

/// At start: when writes were accepted but not planned before the last
/// stop (a crash right after a `201`), or a planning pass was cut short,
/// rescore and plan now instead of waiting for the next schedule.
async fn resume_planning(store: &StoreHandle, react_wake: &Notify) {
    let store = store.clone();
    let pending = tokio::task::spawn_blocking(move || store.plan_requested()).await;
    match pending {
        Ok(Ok(true)) => {
            tracing::info!("planning left undone at the last stop: rescoring and planning now");
            react_wake.notify_one();
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot tell whether planning was left undone"),
        Err(e) => tracing::error!(error = %e, "cannot tell whether planning was left undone"),
    }
}

/// New events are scored and planned at once, without waiting for the next
/// scheduled pass: the loop waits on the store for events beyond those
/// planned ([`Records::wait_for_events`]), which sees every writer (the
/// API, `relance import`, another process); the API also wakes it for
/// writes that add no event (records, broadcasts). A new event is planned
/// within about a poll of the store + `REACT_DEBOUNCE` + one incremental
/// pass. Wakes close together are taken as one.
async fn react_loop(
    jobs: Arc<DaemonJobs>,
    config: watch::Receiver<Arc<Config>>,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    /// The longest wait on the store before looking again.
    const WAIT: Duration = Duration::from_secs(1);
    // The highest event number planned (or tried); first read from the
    // planner's own mark, so events accepted while down are planned now.
    let mut seen: Option<i64> = None;
    loop {
        let (store, after) = (jobs.store.clone(), seen);
        let waiting = tokio::task::spawn_blocking(move || {
            let after = match after {
                Some(s) => s,
                None => store
                    .meta("plan.events_seq")?
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0),
            };
            Ok::<_, StoreError>((after, store.wait_for_events(after, WAIT)?))
        });
        let waited = tokio::select! {
            () = wake.notified() => None,
            r = waiting => Some(r),
            () = shutdown.recv() => return,
        };
        match waited {
            // Woken by the API: plan whatever it wrote.
            None => {
                let store = jobs.store.clone();
                match tokio::task::spawn_blocking(move || store.last_event_seq()).await {
                    Ok(Ok(last)) => seen = Some(last),
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the store's new events"),
                    Err(e) => {
                        tracing::error!(error = %e, "reading the store's new events panicked")
                    }
                }
            }
            Some(Ok(Ok((after, last)))) => {
                seen = Some(last.max(after));
                if last <= after {
                    // Nothing new for a while: the store's upkeep now
                    // rather than inside the next reaction.
                    tidy(&jobs.store).await;
                    continue;
                }
            }
            Some(failed) => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the store's new events"),
                    Err(e) => {
                        tracing::error!(error = %e, "reading the store's new events panicked")
                    }
                    Ok(Ok(_)) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(WAIT) => continue,
                    () = shutdown.recv() => return,
                }
            }
        }
        tokio::time::sleep(REACT_DEBOUNCE).await;
        let current = config.borrow().clone();
        let jobs2 = jobs.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = jobs2.clock.now();
            jobs2.react(&current, now)
        })
        .await;
        match done {
            Ok(Ok(summary)) => tracing::info!(%summary, "new events planned"),
            Ok(Err(e)) => tracing::error!(error = %e, "reacting to new events failed"),
            Err(e) => tracing::error!(error = %e, "reacting to new events panicked"),
        }
    }
}

/// The store's upkeep for an idle moment ([`Records::tidy`]).
async fn tidy(store: &StoreHandle) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.tidy()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "store upkeep failed"),
        Err(e) => tracing::error!(error = %e, "store upkeep panicked"),
    }
}

/// Keeps the plugins' health in the metrics, once every `HEALTH_EVERY`.
async fn health_loop(
    host: Arc<PluginHost>,
    config: watch::Receiver<Arc<Config>>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    while !shutdown.is_shutdown() {
        let channels: Vec<String> = config.borrow().channels.keys().cloned().collect();
        for name in channels {
            if let Some(status) = host.status(&name) {
                metrics.set_plugin_health(&name, status.healthy);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEALTH_EVERY) => {}
            () = shutdown.recv() => {}
        }
    }
}

/// Delivers what is due, then sleeps until the next due instant.
async fn dispatch_loop(
    dispatcher: Arc<Dispatcher>,
    config: watch::Receiver<Arc<Config>>,
    clock: Clock,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    while !shutdown.is_shutdown() {
        let current = config.borrow().clone();
        let now = clock.now();
        let clk = clock.clone();
        let sleep = match dispatcher
            .round(current.clone(), now, move || clk.now())
            .await
        {
            Ok(r) if r.claimed >= u64::from(current.outbox.batch) => Duration::ZERO,
            Ok(r) => {
                if r.claimed > 0 {
                    tracing::info!(%r, "dispatch round");
                }
                match dispatcher.next_due().await {
                    Ok(Some(next)) => (next - clock.now())
                        .to_std()
                        .unwrap_or(Duration::from_millis(10))
                        .min(MAX_SLEEP),
                    Ok(None) => MAX_SLEEP,
                    Err(e) => {
                        tracing::error!(error = %e, "outbox unreadable");
                        ERROR_PAUSE
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "dispatch round failed; retrying");
                ERROR_PAUSE
            }
        };
        if sleep.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
            () = shutdown.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("[store]\npath = \"a.db\"\n{extra}");
        Config::parse(&text, Path::new("/etc/relance/relance.toml"), &|_| None).expect("valid")
    }

    const API: &str = "[api]\nenabled = true\ntokens = [\"0123456789abcdef0\"]\ntracking_secret = \"0123456789abcdef0\"\n";

    #[test]
    fn keys_a_reload_cannot_apply_are_named_and_the_others_are_not() {
        let old = config(API);
        let mut moved = config(&format!(
            "{API}listen = \"127.0.0.1:9999\"\n[log]\nlevel = \"debug\"\n[outbox]\nbatch = 7\n"
        ));
        moved.store.path = "b.db".into();
        assert_eq!(
            restart_keys(&old, &moved),
            ["store.path", "log.level", "api.listen"]
        );
        // Tokens, batch sizes and schedules apply without a restart.
        let mut applied = config(&format!("{API}max_batch = 5\n[outbox]\nbatch = 7\n"));
        applied.api.tokens = vec!["another-token-0123456789".into()];
        assert!(restart_keys(&old, &applied).is_empty());
        // The API's address matters only when it is served.
        let (off, off_moved) = (config(""), config("[api]\nlisten = \"127.0.0.1:9999\"\n"));
        assert!(restart_keys(&off, &off_moved).is_empty());
    }
}
