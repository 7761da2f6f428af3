//! The plugin host: channels served by plugins behind a stable C ABI.
//!
//! Each channel gets one plugin instance on its own thread with a bounded
//! queue. The daemon awaits every call with a timeout; a plugin that panics,
//! hangs or answers garbage marks its channel unhealthy and is recreated
//! with exponential backoff, while the daemon and the other channels go on.

pub mod builtin;
pub mod channels;
mod loader;
mod worker;

pub use builtin::{builtin_names, builtin_tables};
pub use loader::LoadError;
pub use relance_plugin_api::{
    Action, Company, Contact, DeliverRequest, Health, HealthcheckRequest, Manifest, Message,
    ScoreInfo,
};

use crate::core::config::PluginsConfig;
use crate::core::config::plugins::to_std;
use crate::core::config::sections::ChannelConfig;
use crate::ports::channels::{BoxFuture, ChannelHost, Delivery, DeliveryError};
use relance_plugin_api::abi::PluginTable;
use relance_plugin_api::host::{CallStatus, Table};
use relance_plugin_api::{
    DeliveryRef, Outcome, PROTOCOL, Request, RequestBody, Response, ResponseBody,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use worker::{Enqueue, Job, Worker};

impl From<Outcome> for Delivery {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok { remote_id, data } => Delivery::Ok { remote_id, data },
            Outcome::Retryable {
                retry_after_secs,
                reason,
            } => Delivery::Retryable {
                retry_after: retry_after_secs.map(Duration::from_secs),
                reason,
            },
            Outcome::Permanent {
                reason,
                disable_endpoint,
            } => Delivery::Permanent {
                reason,
                disable_endpoint,
            },
        }
    }
}

/// Setting up a channel failed; the daemon should refuse to start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("channel `{channel}` is already open")]
    Duplicate { channel: String },
    #[error("channel `{channel}`: plugin `{plugin}` refused to start: {message}")]
    Create {
        channel: String,
        plugin: String,
        message: String,
    },
}

/// A channel's health, for `relance status` and the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelStatus {
    pub plugin: String,
    pub healthy: bool,
    pub last_error: Option<String>,
    /// Instances recreated after a fault since the host started.
    pub restarts: u32,
}

/// Loads plugins and serves channels. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PluginHost {
    config: PluginsConfig,
    dir: PathBuf,
    /// The configuration file's folder: built-in plugins' relative paths
    /// (the email file transport's `dir`, the spool's `path`) start there.
    base: PathBuf,
    builtins: HashMap<String, &'static PluginTable>,
    loaded: Mutex<HashMap<String, (Table, Manifest)>>,
    channels: Mutex<HashMap<String, Arc<Pool>>>,
    /// Channels that could not be opened, with the message saying why.
    unconfigured: Mutex<std::collections::BTreeMap<String, String>>,
    next_call: AtomicU64,
}

/// A channel opened by [`PluginHost::prepare_channel`], not yet in service;
/// dropping it stops its instances.
#[derive(Debug)]
pub struct PreparedChannel {
    name: String,
    pool: Arc<Pool>,
}

/// The instances of one channel; calls go round-robin, so a plugin that
/// works one call at a time (one thread per instance) can still deliver
/// several follow-ups at once.
#[derive(Debug)]
struct Pool {
    members: Vec<Arc<Channel>>,
    next: AtomicU64,
    /// Follow-ups one call may carry, as the plugin's manifest says (at
    /// least 1).
    max_batch: usize,
}

impl Pool {
    fn pick(&self) -> Arc<Channel> {
        let n = self.members.len().max(1) as u64;
        let i = (self.next.fetch_add(1, Ordering::Relaxed) % n) as usize;
        self.members[i].clone()
    }
}

#[derive(Debug)]
struct Channel {
    name: String,
    plugin: String,
    table: Table,
    settings: Vec<u8>,
    state: Mutex<State>,
    /// Serializes instance creation.
    creating: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    worker: Option<Arc<Worker>>,
    healthy: bool,
    last_error: Option<String>,
    backoff: Duration,
    retry_at: Option<Instant>,
    restarts: u32,
    /// Set when the plugin refused its settings: retrying cannot help.
    misconfigured: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PluginHost {
    /// `config_file` anchors a relative plugin directory; `builtins` are
    /// plugins linked into the binary (still called through their ABI table).
    pub fn new(
        config: PluginsConfig,
        config_file: &Path,
        builtins: impl IntoIterator<Item = &'static PluginTable>,
    ) -> Self {
        let mut map = HashMap::new();
        for t in builtins {
            if let Ok((table, _)) = Table::linked(t) {
                map.insert(table.name().to_owned(), t);
            }
        }
        Self {
            dir: config.resolved_dir(config_file),
            base: config_file.parent().unwrap_or(Path::new(".")).to_path_buf(),
            config,
            builtins: map,
            loaded: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            unconfigured: Mutex::new(std::collections::BTreeMap::new()),
            next_call: AtomicU64::new(1),
        }
    }

    /// Loads (once) the plugin `name`: from the plugin directory when the
    /// configuration lists it under `[plugins.load]`, else a built-in one.
    pub fn load(&self, name: &str) -> Result<Manifest, LoadError> {
        self.table(name).map(|(_, m)| m)
    }

    fn table(&self, name: &str) -> Result<(Table, Manifest), LoadError> {
        if let Some(found) = lock(&self.loaded).get(name) {
            return Ok(found.clone());
        }
        let loaded = if let Some(spec) = self.config.load.get(name) {
            loader::load(&self.dir, name, spec)?
        } else if let Some(t) = self.builtins.get(name) {
            Table::linked(t).map_err(|source| LoadError::Table {
                plugin: name.into(),
                file: PathBuf::from("(built in)"),
                source,
            })?
        } else {
            return Err(LoadError::Unknown {
                plugin: name.into(),
            });
        };
        lock(&self.loaded).insert(name.to_owned(), loaded.clone());
        tracing::info!(plugin = name, version = %loaded.1.version, "plugin loaded");
        Ok(loaded)
    }

    /// Opens a channel: loads its plugin and creates its instance, so that
    /// wrong settings are reported at start rather than at the first send.
    pub async fn open_channel(&self, name: &str, config: &ChannelConfig) -> Result<(), HostError> {
        if lock(&self.channels).contains_key(name) {
            return Err(HostError::Duplicate {
                channel: name.into(),
            });
        }
        let pool = self.start_pool(name, config).await?;
        lock(&self.channels).insert(name.to_owned(), pool);
        Ok(())
    }

    /// Opens a channel anew with changed settings (configuration reload).
    /// The old instances finish their current calls and stop; on error the
    /// old channel keeps running.
    pub async fn reopen_channel(
        &self,
        name: &str,
        config: &ChannelConfig,
    ) -> Result<(), HostError> {
        let pool = self.start_pool(name, config).await?;
        lock(&self.channels).insert(name.to_owned(), pool);
        lock(&self.unconfigured).remove(name);
        Ok(())
    }

    /// Records that `name` could not be opened; its sends wait.
    pub fn mark_unconfigured(&self, name: &str, message: String) {
        lock(&self.unconfigured).insert(name.to_owned(), message);
    }

    /// The channels that could not be opened, with why.
    pub fn unconfigured(&self) -> std::collections::BTreeMap<String, String> {
        lock(&self.unconfigured).clone()
    }

    /// Starts the instances of a channel with new settings without putting
    /// them in service: a configuration reload prepares every changed
    /// channel first and installs them together only if all opened.
    pub async fn prepare_channel(
        &self,
        name: &str,
        config: &ChannelConfig,
    ) -> Result<PreparedChannel, HostError> {
        Ok(PreparedChannel {
            name: name.to_owned(),
            pool: self.start_pool(name, config).await?,
        })
    }

    /// Puts prepared channels in service, all at once; the instances they
    /// replace finish their current calls and stop.
    pub fn install_channels(&self, prepared: Vec<PreparedChannel>) {
        let mut channels = lock(&self.channels);
        let mut unconfigured = lock(&self.unconfigured);
        for p in prepared {
            unconfigured.remove(&p.name);
            channels.insert(p.name, p.pool);
        }
    }

    async fn start_pool(&self, name: &str, config: &ChannelConfig) -> Result<Arc<Pool>, HostError> {
        let (table, manifest) = self.table(&config.plugin)?;
        let settings = channels::anchor_paths(config, &self.base);
        let settings = serde_json::to_vec(&settings).unwrap_or_else(|_| b"{}".to_vec());
        let mut members = Vec::new();
        for _ in 0..config.instances.max(1) {
            let channel = Arc::new(Channel {
                name: name.to_owned(),
                plugin: config.plugin.clone(),
                table,
                settings: settings.clone(),
                state: Mutex::new(State {
                    worker: None,
                    healthy: false,
                    last_error: None,
                    backoff: to_std(self.config.restart_backoff),
                    retry_at: None,
                    restarts: 0,
                    misconfigured: None,
                }),
                creating: tokio::sync::Mutex::new(()),
            });
            match self.ensure_worker(&channel).await {
                Err(DeliveryError::Misconfigured { message, .. }) => {
                    return Err(HostError::Create {
                        channel: name.into(),
                        plugin: config.plugin.clone(),
                        message,
                    });
                }
                // A panicking or hanging create is retried with backoff later.
                Err(e) => tracing::warn!(channel = name, error = %e, "channel starts unhealthy"),
                Ok(_) => {}
            }
            members.push(channel);
        }
        Ok(Arc::new(Pool {
            members,
            next: AtomicU64::new(0),
            max_batch: (manifest.max_batch as usize).clamp(1, MAX_BATCH),
        }))
    }

    /// Delivers one follow-up on `channel`.
    pub async fn deliver(
        &self,
        channel: &str,
        request: DeliverRequest,
    ) -> Result<Delivery, DeliveryError> {
        self.deliver_one(channel, &request).await
    }

    async fn deliver_one(
        &self,
        channel: &str,
        request: &DeliverRequest,
    ) -> Result<Delivery, DeliveryError> {
        match self
            .call(channel, encode(&DeliveryRef::one(request)))
            .await?
        {
            ResponseBody::Delivery(outcome) => Ok(outcome.into()),
            other => Err(self.garbage(channel, format!("a delivery answered with {other:?}"))),
        }
    }

    /// Delivers several follow-ups on `channel`: one call when its plugin
    /// takes batches (see [`Self::batch_size`]), else one call each, in
    /// turn. One result per request, in order; a call that fails fails
    /// each of its requests alike.
    pub async fn deliver_batch(
        &self,
        channel: &str,
        requests: &[DeliverRequest],
    ) -> Vec<Result<Delivery, DeliveryError>> {
        let n = requests.len();
        if n <= 1 || self.batch_size(channel) < n {
            let mut out = Vec::with_capacity(n);
            for r in requests {
                out.push(self.deliver_one(channel, r).await);
            }
            return out;
        }
        let error = match self
            .call(channel, encode(&DeliveryRef::batch(requests)))
            .await
        {
            Ok(ResponseBody::Deliveries { outcomes }) if outcomes.len() == n => {
                return outcomes.into_iter().map(|o| Ok(o.into())).collect();
            }
            Ok(other) => self.garbage(
                channel,
                format!(
                    "a batch of {n} deliveries answered with {}",
                    summary(&other)
                ),
            ),
            Err(e) => e,
        };
        vec![Err(error); n]
    }

    /// How many follow-ups one call to `channel` may carry: what its
    /// plugin's manifest declares (`max_batch`), 1 for an unknown channel.
    pub fn batch_size(&self, channel: &str) -> usize {
        lock(&self.channels).get(channel).map_or(1, |p| p.max_batch)
    }

    /// Asks the plugin whether its remote side works.
    pub async fn healthcheck(
        &self,
        channel: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Health, DeliveryError> {
        let request = Request::new(RequestBody::Healthcheck(HealthcheckRequest { now }));
        match self.call(channel, encode(&request)).await? {
            ResponseBody::Health(h) => Ok(h),
            other => Err(self.garbage(channel, format!("a healthcheck answered with {other:?}"))),
        }
    }

    /// The manifest, as the running instance describes itself.
    pub async fn describe(&self, channel: &str) -> Result<Manifest, DeliveryError> {
        match self
            .call(channel, encode(&Request::new(RequestBody::Describe)))
            .await?
        {
            ResponseBody::Description { manifest } => Ok(manifest),
            other => Err(self.garbage(channel, format!("describe answered with {other:?}"))),
        }
    }

    pub fn status(&self, channel: &str) -> Option<ChannelStatus> {
        let pool = lock(&self.channels).get(channel)?.clone();
        let mut status = ChannelStatus {
            plugin: pool.members.first()?.plugin.clone(),
            healthy: true,
            last_error: None,
            restarts: 0,
        };
        for ch in &pool.members {
            let s = lock(&ch.state);
            status.healthy &= s.healthy;
            status.restarts += s.restarts;
            if status.last_error.is_none() {
                status.last_error = s.last_error.clone();
            }
        }
        Some(status)
    }

    fn channel(&self, name: &str) -> Result<Arc<Channel>, DeliveryError> {
        if let Some(pool) = lock(&self.channels).get(name) {
            return Ok(pool.pick());
        }
        Err(match lock(&self.unconfigured).get(name) {
            Some(reason) => DeliveryError::Unconfigured {
                channel: name.into(),
                reason: reason.clone(),
            },
            None => DeliveryError::UnknownChannel {
                channel: name.into(),
            },
        })
    }

    fn garbage(&self, channel: &str, fault: String) -> DeliveryError {
        if let Ok(ch) = self.channel(channel) {
            let worker = lock(&ch.state).worker.clone();
            if let Some(w) = worker {
                self.fail(&ch, &w, &fault);
            }
        }
        DeliveryError::PluginFault {
            channel: channel.into(),
            fault,
        }
    }

    /// One call with a request already written as JSON.
    async fn call(&self, channel: &str, request: Vec<u8>) -> Result<ResponseBody, DeliveryError> {
        let ch = self.channel(channel)?;
        let worker = self.ensure_worker(&ch).await?;
        let call_id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (reply, mut rx) = oneshot::channel();
        let (started, mut started_rx) = oneshot::channel();
        let job = Job {
            call_id,
            request,
            limit: self.config.max_response_bytes,
            started,
            reply,
        };
        match worker.enqueue(job) {
            Ok(()) => {}
            Err(Enqueue::Full) => {
                return Err(DeliveryError::QueueFull {
                    channel: ch.name.clone(),
                    bound: self.config.queue,
                });
            }
            Err(Enqueue::Gone) => {
                return Err(self.fault(&ch, &worker, "its thread is gone".into()));
            }
        }
        let timeout = to_std(self.config.call_timeout);
        // Waiting in the queue is not the plugin's fault: a slow but healthy
        // endpoint only makes the queue longer. The calls ahead are each
        // timed, so a hung instance is replaced and this wait ends.
        loop {
            match tokio::time::timeout(timeout, &mut started_rx).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => {
                    return Err(self.fault(&ch, &worker, "instance stopped".into()));
                }
                Err(_) if self.is_current(&ch, &worker) => {}
                Err(_) => {
                    return Err(DeliveryError::PluginFault {
                        channel: ch.name.clone(),
                        fault: "the instance this call waited for was replaced".into(),
                    });
                }
            }
        }
        let status = match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => return Err(self.fault(&ch, &worker, "instance stopped".into())),
            Err(_) => {
                worker.cancel(call_id);
                // A plugin that honours cancel answers quickly: only slow.
                let grace = timeout.min(Duration::from_secs(2));
                let hung = !matches!(tokio::time::timeout(grace, &mut rx).await, Ok(Ok(_)));
                if hung {
                    self.fail(&ch, &worker, &format!("no answer within {timeout:?}"));
                }
                return Err(DeliveryError::Timeout {
                    channel: ch.name.clone(),
                    after: timeout,
                    hung,
                });
            }
        };
        let bytes = match status {
            CallStatus::Ok(b) => b,
            CallStatus::Panic(m) => return Err(self.fault(&ch, &worker, format!("panic: {m}"))),
            CallStatus::Error(m) => return Err(self.fault(&ch, &worker, m)),
        };
        let response: Response = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                return Err(self.fault(&ch, &worker, format!("unreadable response: {e}")));
            }
        };
        if response.protocol.major != PROTOCOL.major {
            let fault = format!("answered in protocol {}", response.protocol);
            return Err(self.fault(&ch, &worker, fault));
        }
        if let ResponseBody::Error { message } = response.body {
            return Err(DeliveryError::Rejected {
                channel: ch.name.clone(),
                message,
            });
        }
        let mut s = lock(&ch.state);
        s.healthy = true;
        s.last_error = None;
        s.backoff = to_std(self.config.restart_backoff);
        Ok(response.body)
    }

    fn fault(&self, ch: &Channel, worker: &Arc<Worker>, fault: String) -> DeliveryError {
        self.fail(ch, worker, &fault);
        DeliveryError::PluginFault {
            channel: ch.name.clone(),
            fault,
        }
    }

    /// Whether `worker` still serves `ch`.
    fn is_current(&self, ch: &Channel, worker: &Arc<Worker>) -> bool {
        lock(&ch.state)
            .worker
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, worker))
    }

    /// Drops `worker` (if still current) and schedules a restart. Its thread
    /// ends, and destroys the instance, whenever its current call returns.
    fn fail(&self, ch: &Channel, worker: &Arc<Worker>, reason: &str) {
        let mut s = lock(&ch.state);
        if !s.worker.as_ref().is_some_and(|w| Arc::ptr_eq(w, worker)) {
            return; // already replaced by another caller
        }
        tracing::warn!(channel = %ch.name, plugin = %ch.plugin, reason, "plugin instance failed");
        s.worker = None;
        s.healthy = false;
        s.last_error = Some(reason.to_owned());
        s.retry_at = Some(Instant::now() + s.backoff);
        s.restarts += 1;
        s.backoff = (s.backoff * 2).min(to_std(self.config.restart_backoff_max));
    }

    async fn ensure_worker(&self, ch: &Channel) -> Result<Arc<Worker>, DeliveryError> {
        if let Some(w) = self.current(ch)? {
            return Ok(w);
        }
        let _creating = ch.creating.lock().await;
        if let Some(w) = self.current(ch)? {
            return Ok(w);
        }
        let thread = format!("plugin-{}", ch.name);
        let (worker, created) =
            Worker::spawn(ch.table, ch.settings.clone(), self.config.queue, thread).map_err(
                |e| DeliveryError::Unavailable {
                    channel: ch.name.clone(),
                    reason: format!("cannot start a thread: {e}"),
                    retry_after: to_std(self.config.restart_backoff),
                },
            )?;
        let timeout = to_std(self.config.call_timeout);
        let failure = match tokio::time::timeout(timeout, created).await {
            Ok(Ok(Ok(()))) => {
                let mut s = lock(&ch.state);
                s.worker = Some(worker.clone());
                s.retry_at = None;
                return Ok(worker);
            }
            Ok(Ok(Err(CallStatus::Error(message)))) => {
                let mut s = lock(&ch.state);
                s.misconfigured = Some(message.clone());
                s.last_error = Some(message.clone());
                return Err(DeliveryError::Misconfigured {
                    channel: ch.name.clone(),
                    message,
                });
            }
            Ok(Ok(Err(other))) => format!("create failed: {other:?}"),
            Ok(Err(_)) => "create stopped".to_owned(),
            Err(_) => format!("create took longer than {timeout:?}"),
        };
        let mut s = lock(&ch.state);
        s.healthy = false;
        s.last_error = Some(failure.clone());
        let wait = s.backoff;
        s.retry_at = Some(Instant::now() + wait);
        s.backoff = (s.backoff * 2).min(to_std(self.config.restart_backoff_max));
        Err(DeliveryError::Unavailable {
            channel: ch.name.clone(),
            reason: failure,
            retry_after: wait,
        })
    }

    /// The live worker, or why there is none right now.
    fn current(&self, ch: &Channel) -> Result<Option<Arc<Worker>>, DeliveryError> {
        let s = lock(&ch.state);
        if let Some(message) = &s.misconfigured {
            return Err(DeliveryError::Misconfigured {
                channel: ch.name.clone(),
                message: message.clone(),
            });
        }
        if let Some(w) = &s.worker {
            return Ok(Some(w.clone()));
        }
        if let Some(at) = s.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(DeliveryError::Unavailable {
                    channel: ch.name.clone(),
                    reason: s.last_error.clone().unwrap_or_default(),
                    retry_after: at - now,
                });
            }
        }
        Ok(None)
    }
}

/// Follow-ups one call may carry, whatever a plugin declares.
const MAX_BATCH: usize = 256;

/// A request as JSON; serializing plain derived data cannot fail.
fn encode(request: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

/// What an unexpected answer was, without all its content.
fn summary(body: &ResponseBody) -> String {
    match body {
        ResponseBody::Deliveries { outcomes } => format!("{} outcomes", outcomes.len()),
        other => format!("{other:?}"),
    }
}

impl ChannelHost for PluginHost {
    fn deliver<'a>(
        &'a self,
        channel: &'a str,
        request: &'a DeliverRequest,
    ) -> BoxFuture<'a, Result<Delivery, DeliveryError>> {
        Box::pin(self.deliver_one(channel, request))
    }

    fn deliver_batch<'a>(
        &'a self,
        channel: &'a str,
        requests: &'a [DeliverRequest],
    ) -> BoxFuture<'a, Vec<Result<Delivery, DeliveryError>>> {
        Box::pin(PluginHost::deliver_batch(self, channel, requests))
    }

    fn batch_size(&self, channel: &str) -> usize {
        PluginHost::batch_size(self, channel)
    }

    fn unconfigured(&self) -> std::collections::BTreeMap<String, String> {
        PluginHost::unconfigured(self)
    }
}
