//! One plugin instance on its own thread, fed through a bounded queue.
//!
//! A thread per instance means a plugin that blocks or hangs only ever
//! stalls its own channel; the daemon's tokio runtime never runs plugin code.
#![allow(unsafe_code)]

use relance_plugin_api::host::{CallStatus, InstancePtr, Table};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::oneshot;

pub(crate) struct Job {
    pub call_id: u64,
    pub request: Vec<u8>,
    pub limit: usize,
    /// Told when the thread starts the call: the host's timeout counts from
    /// there, not from the time spent waiting in the queue.
    pub started: oneshot::Sender<()>,
    pub reply: oneshot::Sender<CallStatus>,
}

/// What the host and the thread share: the instance, and whether it is
/// still alive (so that a late `cancel` never reaches a destroyed instance).
struct Shared {
    instance: OnceLock<InstancePtr>,
    alive: Mutex<bool>,
}

pub(crate) struct Worker {
    table: Table,
    shared: Arc<Shared>,
    tx: SyncSender<Job>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("plugin", &self.table.name())
            .finish()
    }
}

/// Says whether the instance could be created, once the thread tried.
pub(crate) type Created = oneshot::Receiver<Result<(), CallStatus>>;

pub(crate) enum Enqueue {
    Full,
    Gone,
}

impl Worker {
    /// Starts the thread, which creates the instance from `settings`; the
    /// receiver says how creation went.
    pub fn spawn(
        table: Table,
        settings: Vec<u8>,
        queue: usize,
        thread_name: String,
    ) -> std::io::Result<(Arc<Worker>, Created)> {
        let (tx, rx) = sync_channel(queue);
        let shared = Arc::new(Shared {
            instance: OnceLock::new(),
            alive: Mutex::new(false),
        });
        let (created_tx, created_rx) = oneshot::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run(table, settings, thread_shared, rx, created_tx))?;
        Ok((Arc::new(Worker { table, shared, tx }), created_rx))
    }

    pub fn enqueue(&self, job: Job) -> Result<(), Enqueue> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Enqueue::Full,
            TrySendError::Disconnected(_) => Enqueue::Gone,
        })
    }

    /// Asks the running call `call_id` to stop, if the instance still lives.
    pub fn cancel(&self, call_id: u64) {
        let alive = self
            .shared
            .alive
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *alive && let Some(instance) = self.shared.instance.get() {
            self.table.cancel(instance, call_id);
        }
    }
}

fn run(
    table: Table,
    settings: Vec<u8>,
    shared: Arc<Shared>,
    rx: Receiver<Job>,
    created: oneshot::Sender<Result<(), CallStatus>>,
) {
    let instance = match table.create(&settings) {
        Ok(i) => i,
        Err(e) => {
            let _ = created.send(Err(e));
            return;
        }
    };
    let instance = shared.instance.get_or_init(|| instance);
    *shared.alive.lock().unwrap_or_else(PoisonError::into_inner) = true;
    let _ = created.send(Ok(()));
    // Ends when the host drops the sender (instance replaced or host gone).
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            continue; // the caller gave up while the job was queued
        }
        let _ = job.started.send(());
        let status = table.call(instance, job.call_id, &job.request, job.limit);
        let panicked = matches!(status, CallStatus::Panic(_));
        let _ = job.reply.send(status);
        if panicked {
            break; // the instance's state is suspect; the host recreates it
        }
    }
    let mut alive = shared.alive.lock().unwrap_or_else(PoisonError::into_inner);
    *alive = false;
    // SAFETY: no call runs (this thread made them all), `cancel` checks
    // `alive` under the same lock, and the instance is never used again.
    unsafe { table.destroy(instance) };
}
