//! Store access for the API, off the async runtime.
//!
//! SQLite lets one writer in at a time, so every write goes to one
//! dedicated writer thread that owns one connection: requests never fight
//! over the write lock, and event appends that queue up while a
//! transaction runs are merged into the next one (group commit). Under load
//! one transaction then carries many requests' events, which is what makes
//! sustained ingest fast. Reads use a small pool of connections (WAL lets
//! them run beside the writer), each used inside `spawn_blocking`.
//!
//! Checkpoints (copying the WAL back into the database, with two fsyncs)
//! cost more than the inserts: the writer checkpoints every
//! [`WAL_CHECKPOINT_PAGES`] pages instead of SQLite's 1,000 (the store's
//! other connections use 10,000), so that pages rewritten by successive
//! group commits are copied back once; the WAL file is then cut back to
//! [`WAL_KEEP_BYTES`].

use super::error::ApiError;
use crate::ingest::Incoming;
use crate::store::{Append, SqliteStore, StoreError};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most events merged into one transaction.
const GROUP_MAX: usize = 50_000;
/// Read connections kept open.
const READERS: usize = 4;
/// WAL pages between the writer's checkpoints (about 400 MB).
const WAL_CHECKPOINT_PAGES: i64 = 100_000;
/// WAL file size kept after a checkpoint.
const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;

type WriteFn = Box<dyn FnOnce(&mut SqliteStore) + Send>;

enum Job {
    Append(
        Vec<Incoming>,
        oneshot::Sender<Result<Vec<Append>, ApiError>>,
    ),
    Other(WriteFn),
}

/// Where the store is and how to open it.
#[derive(Clone, Debug)]
pub struct StoreSpec {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub cache_mb: u32,
    /// `[calls] default_country`: national phone numbers are keyed with it.
    pub country: String,
}

impl StoreSpec {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            path: config.store_path(),
            busy_timeout: Duration::from_secs(config.store.busy_timeout.seconds().max(1) as u64),
            cache_mb: config.store.cache_mb,
            country: config.calls.default_country.to_ascii_uppercase(),
        }
    }

    fn open(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(&self.path, self.busy_timeout, self.cache_mb)
    }
}

/// The API's handle on the store; clones share the writer and the pool.
#[derive(Clone, Debug)]
pub struct Db {
    spec: StoreSpec,
    writer: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<SqliteStore>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append(batch, _) => write!(f, "Append({})", batch.len()),
            Job::Other(_) => f.write_str("Other"),
        }
    }
}

impl Db {
    /// Opens the writer's connection (creating and migrating the store)
    /// and starts the writer thread; it ends when the last `Db` is dropped.
    pub fn open(spec: StoreSpec) -> Result<Self, StoreError> {
        let mut store = spec.open()?;
        store.set_default_country(&spec.country)?;
        let conn = store.connection();
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("relance-api-writer".into())
            .spawn(move || writer(store, &rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            spec,
            writer: tx,
            readers: Arc::default(),
        })
    }

    /// Appends events; concurrent calls share transactions.
    pub async fn append(&self, batch: Vec<Incoming>) -> Result<Vec<Append>, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Append(batch, tx))
            .map_err(|_| ApiError::Internal("the store writer stopped".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("the store writer stopped".into()))?
    }

    /// Runs `f` on the writer's connection.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job: WriteFn = Box::new(move |store| {
            let _ = tx.send(f(store).map_err(ApiError::from));
        });
        self.writer
            .send(Job::Other(job))
            .map_err(|_| ApiError::Internal("the store writer stopped".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("the store writer stopped".into()))?
    }

    /// Runs `f` on a read connection, in a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = this.take_reader()?;
            let out = f(&store);
            let mut pool = this.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < READERS {
                pool.push(store);
            }
            out
        })
        .await
        .map_err(|e| ApiError::Internal(format!("read task failed: {e}")))?
    }

    fn take_reader(&self) -> Result<SqliteStore, ApiError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match pooled {
            Some(s) => Ok(s),
            None => Ok(self.spec.open()?),
        }
    }
}

fn writer(mut store: SqliteStore, rx: &mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    while let Some(job) = next.take().or_else(|| rx.recv().ok()) {
        match job {
            Job::Other(f) => f(&mut store),
            Job::Append(batch, reply) => {
                let mut group = vec![(batch, reply)];
                let mut size = group[0].0.len();
                // Appends that queued up meanwhile ride in the same
                // transaction; any other write keeps its place after them.
                while size < GROUP_MAX {
                    match rx.try_recv() {
                        Ok(Job::Append(b, r)) => {
                            size += b.len();
                            group.push((b, r));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_group(&mut store, group);
            }
        }
    }
}

type Waiter = (
    Vec<Incoming>,
    oneshot::Sender<Result<Vec<Append>, ApiError>>,
);

fn commit_group(store: &mut SqliteStore, group: Vec<Waiter>) {
    use crate::store::Records;
    let mut all = Vec::with_capacity(group.iter().map(|(b, _)| b.len()).sum());
    let mut replies = Vec::with_capacity(group.len());
    for (batch, reply) in group {
        replies.push((batch.len(), reply));
        all.extend(batch);
    }
    match store.append_events(&all) {
        Ok(results) => {
            let mut results = results.into_iter();
            for (n, reply) in replies {
                let mine: Vec<Append> = results.by_ref().take(n).collect();
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let (transient, message) = (e.is_transient(), e.to_string());
            for (_, reply) in replies {
                let _ = reply.send(Err(ApiError::Store {
                    message: message.clone(),
                    transient,
                }));
            }
        }
    }
}
