//! The PostgreSQL handle: a small pool of tokio-postgres connections and a
//! blocking bridge for the synchronous [`Store`](crate::ports::store::Store)
//! methods.
//!
//! Each connection has a current-thread runtime of its own, which the
//! thread calling a method drives (`block_on`) while it polls the method's
//! queries with the connection's I/O future ([`Conn::run`]): messages are
//! written, read and parsed on the thread that uses them, and that thread
//! waits for its socket itself. With the I/O on a task of a shared runtime,
//! every chunk of rows crossed threads (a sixth of a full rescoring's
//! time); with only the sockets' readiness reported by a shared runtime,
//! each wait for the server still cost that runtime's thread a wake-up and
//! then the caller's: 47,000 of each in a planning pass a day later at
//! 1,000,000 contacts, about a tenth of its time. A method called on a
//! worker thread of a multi-threaded tokio runtime does not panic: it moves
//! the worker's other tasks away first (`block_in_place`); within a
//! current-thread runtime a thread of its own drives the connection's
//! runtime meanwhile. The handle's own runtime runs LISTEN.

use super::migrations;
use super::statements::Statements;
use crate::adapters::group::GroupCommit;
use crate::pipeline::config::Config;
use crate::ports::store::StoreError;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, Transaction};

/// How long a caller waits for a free connection before a transient error.
const POOL_WAIT: Duration = Duration::from_secs(60);
/// How often [`Records::wait_for_events`](crate::ports::store::Records::wait_for_events)
/// looks at the store when no notification came (the fallback that works
/// behind a transaction-mode pooler, where LISTEN does not).
pub(super) const EVENT_POLL: Duration = Duration::from_millis(250);
/// The channel event appends are notified on, once committed.
pub(super) const EVENTS_CHANNEL: &str = "relance_events";
/// How often one handle notifies the other processes of its appends, at
/// most (see [`PgStore::appended_now`]).
const NOTIFY_EVERY: Duration = Duration::from_millis(50);
/// Attempts of a transaction that PostgreSQL aborted as a deadlock or a
/// serialization failure before the error reaches the caller.
const TX_ATTEMPTS: usize = 8;

/// Runs of a write, the first included, when erasures commit under it
/// (see [`PgStore::tx_past_erasures`]).
const ERASED_ATTEMPTS: usize = 3;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SQLSTATE classes sorted into [`StoreError`]'s kinds: what retrying may
/// fix (connections, locks, deadlocks, resources) and what it cannot.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection failed or closed.
            return StoreError::Transient(message);
        };
        let code = code.code();
        match &code[..2] {
            "23" => StoreError::Constraint(message),
            "08" | "40" | "53" | "57" => StoreError::Transient(message),
            "55" if code == "55P03" => StoreError::Transient(message),
            "22" | "XX" => StoreError::Corrupt(message),
            _ => StoreError::Backend(message),
        }
    }
}

/// Deadlock detected or serialization failure: the whole transaction may
/// simply be run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(c.code(), "40P01" | "40001"))
}

/// A short wait before running an aborted transaction again, longer at
/// each attempt, so that the transaction it collided with finishes first.
fn pause(attempt: usize) {
    blocking(|| std::thread::sleep(Duration::from_millis(20 * attempt as u64)));
}

/// A transaction PostgreSQL aborted as a deadlock or serialization
/// failure, once converted (the message starts with the SQLSTATE).
fn aborted(e: &StoreError) -> bool {
    matches!(e, StoreError::Transient(m) if m.starts_with("40P01:") || m.starts_with("40001:"))
}

/// A foreign key failed, once converted: the row it names went away, an
/// erased contact's (see [`PgStore::tx_past_erasures`]).
fn key_gone(e: &StoreError) -> bool {
    matches!(e, StoreError::Constraint(m) if m.starts_with("23503:"))
}

/// The connections of one handle.
struct Pool {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    size: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Conn>,
    /// Connections open or being opened, idle or lent.
    open: usize,
}

/// A connection's I/O future (tokio-postgres' `Connection`).
type Io = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// One connection: the client that sends requests, the I/O future that
/// carries them, and the runtime whose reactor watches its socket, driven
/// by the thread that uses the connection (see the module's doc).
pub(super) struct Conn {
    client: Client,
    io: Io,
    ended: bool,
    statements: Statements,
    /// Always present until dropped (see `Drop`).
    rt: Option<Runtime>,
}

impl Drop for Conn {
    /// Shut down in the background: dropping a runtime on a tokio worker
    /// would panic.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Conn {
    /// Polls `work` and the connection's I/O on this thread until `work`
    /// is done; the connection ending first is a transient error.
    pub(super) fn run<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Client) -> T,
    ) -> Result<T, StoreError> {
        self.run_with(async |c, _| work(c).await)
    }

    /// [`Conn::run`] with the statements prepared on the connection.
    fn run_with<T>(
        &mut self,
        work: impl AsyncFnOnce(&mut Client, &mut Statements) -> T,
    ) -> Result<T, StoreError> {
        if self.ended {
            return Err(StoreError::Transient("the connection was closed".into()));
        }
        let Self {
            client,
            io,
            ended,
            statements,
            rt,
        } = self;
        let Some(rt) = rt.as_ref() else {
            return Err(StoreError::Transient("the connection was closed".into()));
        };
        drive(rt, async {
            let mut work = pin!(work(client, statements));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(out) = work.as_mut().poll(cx) {
                    return Poll::Ready(Ok(out));
                }
                if let Poll::Ready(end) = io.as_mut().poll(cx) {
                    *ended = true;
                    let reason = match end {
                        Ok(()) => "the connection closed".to_string(),
                        Err(e) => format!("the connection failed: {e}"),
                    };
                    tracing::warn!(%reason, "PostgreSQL connection ended");
                    return Poll::Ready(Err(StoreError::Transient(reason)));
                }
                Poll::Pending
            })
            .await
        })
    }

    /// Sends what the last user left queued (the rollback of a transaction
    /// dropped on an error) and says whether the connection is still open.
    fn flush(&mut self) -> bool {
        if !self.ended && !self.client.is_closed() {
            let mut cx = Context::from_waker(Waker::noop());
            self.ended = self.io.as_mut().poll(&mut cx).is_ready();
        }
        !self.ended && !self.client.is_closed()
    }
}

/// A connection lent to one caller; back to the pool when dropped.
pub(super) struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Lent<'_> {
    fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lent connection is present until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let kept = self.conn.take().and_then(|mut c| c.flush().then_some(c));
        let mut state = lock(&self.pool.state);
        match kept {
            Some(c) => state.idle.push(c),
            None => state.open -= 1,
        }
        self.pool.freed.notify_one();
    }
}

/// A shared handle on one PostgreSQL database: `Send + Sync`, every method
/// takes `&self`; share it behind an `Arc`.
pub struct PgStore {
    /// Runs LISTEN (see [`Self::listen`]); shut down in the background on
    /// drop, so that dropping the handle anywhere (even on a tokio worker)
    /// never blocks or panics.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Where the store is, without the password, for errors.
    pub(super) name: String,
    /// Bumped on each notification of new events (and each append through
    /// this handle): wakes [`Records::wait_for_events`](crate::ports::store::Records::wait_for_events).
    pub(super) appended: Arc<(Mutex<u64>, Condvar)>,
    /// When this handle last notified the other processes of appends.
    notified: Mutex<Option<Instant>>,
    /// Held by the transaction appending a group of events: one at a time
    /// per handle, the others' batches queue up for the next one.
    pub(super) appender: Mutex<()>,
    pub(super) appends: GroupCommit,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("name", &self.name)
            .field("pool", &self.pool.size)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `postgres://user@host:port/db` of a URL, for messages and `relance
/// check`: never the password.
pub fn describe_url(url: &str) -> String {
    url.parse::<tokio_postgres::Config>()
        .map_or_else(|_| "postgres://(invalid URL)".into(), |c| describe(&c))
}

/// `user@host:port/db` of a configuration, for messages: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// TLS when the URL asks for it (`sslmode=require`), checked against the
/// web PKI roots; plain TCP otherwise (`sslmode=disable`, or `prefer`,
/// the default, which tokio-postgres treats as plain without a connector).
fn tls_for(config: &tokio_postgres::Config) -> Option<tokio_postgres_rustls::MakeRustlsConnect> {
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return None;
    }
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

impl PgStore {
    /// Connects to the database a URL names, migrates it and starts
    /// listening for other processes' events, with at most `pool`
    /// connections.
    pub fn open(url: &str, pool: usize) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            path: "[store] url".into(),
            reason: format!("not a valid PostgreSQL URL: {e}"),
        })?;
        let name = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("relance-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                path: name.clone(),
                reason: format!("cannot start the connection runtime: {e}"),
            })?;
        let tls = tls_for(&config);
        let store = Self {
            runtime: Some(runtime),
            pool: Pool {
                config,
                tls,
                size: pool.max(1),
                state: Mutex::default(),
                freed: Condvar::new(),
            },
            name,
            appended: Arc::new((Mutex::new(0), Condvar::new())),
            notified: Mutex::new(None),
            appender: Mutex::new(()),
            appends: GroupCommit::default(),
        };
        let open_err = |e: StoreError| StoreError::Open {
            path: store.name.clone(),
            reason: e.to_string(),
        };
        {
            let mut conn = store.conn().map_err(open_err)?;
            let name = store.name.clone();
            conn.conn()
                .run(async |c| migrations::migrate(c, &name).await)
                .map_err(open_err)??;
        }
        store.listen();
        Ok(store)
    }

    /// Opens the store a configuration names (`[store] url`).
    pub fn from_config(config: &Config) -> Result<Self, StoreError> {
        let url = config
            .store
            .postgres_url()
            .ok_or_else(|| StoreError::Open {
                path: "[store] url".into(),
                reason: "no PostgreSQL URL configured".into(),
            })?;
        let store = Self::open(url, config.store.pool as usize)?;
        store.set_default_country(&config.calls.default_country.to_ascii_uppercase())?;
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the handle")
    }

    /// Opens one connection on a runtime of its own, whose reactor the
    /// thread using the connection drives.
    fn connect(&self) -> Result<Conn, StoreError> {
        let failed = |e: &dyn std::fmt::Display| {
            StoreError::Transient(format!("cannot connect to {}: {e}", self.name))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(&e))?;
        let config = &self.pool.config;
        let tls = self.pool.tls.clone();
        let opened: Result<(Client, Io), tokio_postgres::Error> = drive(&rt, async move {
            match tls {
                Some(tls) => config
                    .connect(tls)
                    .await
                    .map(|(client, io)| (client, Box::pin(io) as Io)),
                None => config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map(|(client, io)| (client, Box::pin(io) as Io)),
            }
        });
        let (client, io) = opened.map_err(|e| failed(&e))?;
        Ok(Conn {
            statements: Statements::default(),
            client,
            io,
            ended: false,
            rt: Some(rt),
        })
    }

    /// A connection of the pool, opened if none is idle and the pool is
    /// not full; waits for one otherwise.
    pub(super) fn conn(&self) -> Result<Lent<'_>, StoreError> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut state = lock(&self.pool.state);
        loop {
            while let Some(mut c) = state.idle.pop() {
                if !c.flush() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Lent {
                    pool: &self.pool,
                    conn: Some(c),
                });
            }
            if state.open < self.pool.size {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(c) => Ok(Lent {
                        pool: &self.pool,
                        conn: Some(c),
                    }),
                    Err(e) => {
                        lock(&self.pool.state).open -= 1;
                        self.pool.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Transient(format!(
                    "all {} connections to {} busy for {}s",
                    self.pool.size,
                    self.name,
                    POOL_WAIT.as_secs()
                )));
            }
            state = blocking(|| {
                self.pool
                    .freed
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            });
        }
    }

    /// Runs `f` on a pooled connection, outside any transaction.
    pub(super) fn read<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut lent = self.conn()?;
        lent.conn().run(async |c| f(c).await)?
    }

    /// Runs `f` in one READ COMMITTED transaction, committed if it returns
    /// Ok. A transaction PostgreSQL aborts as a deadlock or serialization
    /// failure is run again (a few times) before the error is returned.
    pub(super) fn tx<T>(
        &self,
        mut f: impl AsyncFnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut lent = self.conn()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome: Result<T, Retry> = lent.conn().run(async |c| {
                let tx = c.transaction().await.map_err(Retry::from)?;
                let out = f(&tx).await.map_err(Retry::Store)?;
                tx.commit().await.map_err(Retry::from)?;
                Ok(out)
            })?;
            match outcome {
                Ok(out) => return Ok(out),
                Err(Retry::Again(_)) if attempt < TX_ATTEMPTS => pause(attempt),
                Err(Retry::Again(e)) => return Err(e.into()),
                // Raised inside `f` and converted there by `?`.
                Err(Retry::Store(e)) if aborted(&e) && attempt < TX_ATTEMPTS => pause(attempt),
                Err(Retry::Store(e)) => return Err(e),
            }
        }
    }

    /// [`Self::tx`] for writes whose inserts go through `contacts`, so that
    /// a contact erased meanwhile gets nothing. A contact whose erasure is
    /// under way in another transaction passes that test, then fails a
    /// foreign key once the erasure commits: the transaction is run again,
    /// and then leaves the contact out. An erasure that starts later waits
    /// for this transaction (the foreign-key checks of its inserts hold the
    /// contact, the rows it updates are its own until it commits), then
    /// deletes what it wrote.
    pub(super) fn tx_past_erasures<T>(
        &self,
        mut f: impl AsyncFnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.tx(&mut f) {
                Err(e) if key_gone(&e) && attempt < ERASED_ATTEMPTS => {}
                done => return done,
            }
        }
    }

    /// Like [`Self::tx`] for a transaction that only reads: one snapshot
    /// (REPEATABLE READ, read only) for all its statements.
    pub(super) fn snapshot<T>(
        &self,
        f: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.snapshot_with(async |tx, _| f(tx).await)
    }

    /// [`Self::snapshot`] with the statements prepared on its connection
    /// (see statements.rs), forgotten if `f` fails.
    pub(super) fn snapshot_with<T>(
        &self,
        f: impl AsyncFnOnce(&Transaction<'_>, &mut Statements) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut lent = self.conn()?;
        lent.conn().run_with(async |c, statements| {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let out = f(&tx, statements).await;
            if out.is_err() {
                statements.clear();
            }
            let out = out?;
            tx.commit().await?;
            Ok(out)
        })?
    }

    /// Listens for other processes' event appends on a dedicated
    /// connection and wakes the waiters; a lost connection is opened again.
    /// Waiters also poll, so nothing depends on it (a transaction-mode
    /// pooler drops LISTEN).
    fn listen(&self) {
        let config = self.pool.config.clone();
        let tls = self.pool.tls.clone();
        let appended = self.appended.clone();
        self.runtime().spawn(async move {
            loop {
                let outcome = match &tls {
                    Some(tls) => listen_once(&config, tls.clone(), &appended).await,
                    None => listen_once(&config, tokio_postgres::NoTls, &appended).await,
                };
                if let Err(e) = outcome {
                    tracing::debug!(error = %e, "LISTEN connection lost; waiters poll meanwhile");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Wakes the waiters of `wait_for_events` in this process, and those
    /// of the other processes (`NOTIFY`) at most every [`NOTIFY_EVERY`].
    ///
    /// The notification is sent after the append committed, in a
    /// transaction of its own: PostgreSQL serialises the commits of
    /// notifying transactions (one lock for the notification queue, held
    /// until the commit is flushed), so a `NOTIFY` in every settlement or
    /// ingest batch made them all commit one at a time. An append that
    /// comes within the interval is seen by the other processes' next
    /// poll ([`EVENT_POLL`]) at the latest.
    pub(super) fn appended_now(&self) {
        wake(&self.appended);
        {
            let mut last = lock(&self.notified);
            if last.is_some_and(|at| at.elapsed() < NOTIFY_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let sent = self.read(async |c| {
            c.execute("SELECT pg_notify($1, '')", &[&EVENTS_CHANNEL])
                .await?;
            Ok(())
        });
        if let Err(e) = sent {
            tracing::debug!(error = %e, "NOTIFY not sent; the other processes poll");
        }
    }
}

fn wake(appended: &(Mutex<u64>, Condvar)) {
    let (count, woken) = appended;
    *lock(count) += 1;
    woken.notify_all();
}

/// One LISTEN session: until its connection fails.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    appended: &(Mutex<u64>, Condvar),
) -> Result<(), tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut conn) = config.connect(tls).await?;
    let (send, mut receive) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    if send.send(()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
        .await?;
    while receive.recv().await.is_some() {
        wake(appended);
    }
    driver.abort();
    Ok(())
}

/// Why a transaction attempt failed.
enum Retry {
    Again(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Retry {
    fn from(e: tokio_postgres::Error) -> Self {
        if retryable(&e) {
            Retry::Again(e)
        } else {
            Retry::Store(e.into())
        }
    }
}

impl From<StoreError> for Retry {
    fn from(e: StoreError) -> Self {
        Retry::Store(e)
    }
}

/// Runs a blocking call (a wait for a pooled connection, a pause, a
/// connection's runtime driven by [`drive`]); on a worker thread of a
/// multi-threaded tokio runtime, its other tasks move to another worker
/// first. Elsewhere (plain threads, `spawn_blocking`, a current-thread
/// runtime) it simply runs: the waits need no runtime, and [`drive`]
/// handles a current-thread runtime itself.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs `work` to its end on this thread while it drives `rt`, the
/// connection's runtime, whose reactor then wakes this thread itself. On a
/// worker of a multi-threaded tokio runtime, that worker's other tasks move
/// away first (`block_in_place`). Within a current-thread runtime, where
/// `block_on` would panic, a thread of its own drives `rt` meanwhile.
fn drive<T>(rt: &Runtime, work: impl Future<Output = T>) -> T {
    let in_current_thread_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread);
    if !in_current_thread_runtime {
        return blocking(|| rt.block_on(work));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(stopped));
        // Timers and sockets made by `work` belong to `rt`.
        let _entered = rt.enter();
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut work = pin!(work);
        let out = loop {
            if let Poll::Ready(out) = work.as_mut().poll(&mut cx) {
                break out;
            }
            std::thread::park();
        };
        let _ = stop.send(());
        out
    })
}

/// Wakes the thread polling a future.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local server of the tests (see tests/common/pg.rs).
    fn server() -> String {
        std::env::var("RELANCE_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }

    /// A database of its own, dropped with it.
    struct Scratch(String);

    impl Scratch {
        /// A database of its own per test (`what`) and process.
        fn new(what: &str) -> Self {
            let name = format!("relance_unit_pool_{what}_{}", std::process::id());
            admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            admin(&format!("CREATE DATABASE {name}"));
            Self(name)
        }
        fn url(&self) -> String {
            format!("{}/{}", server(), self.0)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
        }
    }

    fn admin(sql: &str) {
        let store = PgStore::open_unmigrated(&format!("{}/postgres", server()));
        let mut lent = store.conn().expect("a connection to the test server");
        lent.conn()
            .run(async |c| c.batch_execute(sql).await)
            .expect("connection")
            .expect(sql);
    }

    impl PgStore {
        /// A handle without migrations or LISTEN, for the administrative
        /// statements of the tests.
        fn open_unmigrated(url: &str) -> Self {
            let config: tokio_postgres::Config = url.parse().expect("url");
            Self {
                runtime: Some(
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()
                        .expect("runtime"),
                ),
                pool: Pool {
                    config,
                    tls: None,
                    size: 1,
                    state: Mutex::default(),
                    freed: Condvar::new(),
                },
                name: url.into(),
                appended: Arc::new((Mutex::new(0), Condvar::new())),
                notified: Mutex::new(None),
                appender: Mutex::new(()),
                appends: GroupCommit::default(),
            }
        }
    }

    /// A transaction dropped on an error leaves its connection idle in the
    /// pool, polled by no one: its rollback must still reach the server at
    /// once, or its row locks would stay until the connection is used again.
    #[test]
    fn a_failed_transaction_releases_its_locks_at_once() {
        let db = Scratch::new("locks");
        let store = PgStore::open(&db.url(), 2).expect("open");
        store
            .tx(async |tx| {
                tx.execute("INSERT INTO meta (key, value) VALUES ('held', '1')", &[])
                    .await?;
                Ok(())
            })
            .expect("row");
        let failed: Result<(), StoreError> = store.tx(async |tx| {
            tx.execute("SELECT value FROM meta WHERE key = 'held' FOR UPDATE", &[])
                .await?;
            Err(StoreError::Backend("stopped on purpose".into()))
        });
        assert!(failed.is_err());

        // Another process takes the lock without waiting, once the rollback
        // has arrived: it must, well within the bound.
        let other = PgStore::open(&db.url(), 1).expect("open");
        let deadline = Instant::now() + Duration::from_secs(20);
        let taken = loop {
            let attempt = other.tx(async |tx| {
                tx.execute(
                    "SELECT value FROM meta WHERE key = 'held' FOR UPDATE NOWAIT",
                    &[],
                )
                .await?;
                Ok(())
            });
            match attempt {
                Ok(()) => break true,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => break false,
            }
        };
        assert!(taken, "the failed transaction still holds its row lock");
        // The pool's connection is still good.
        let n: i64 = store
            .read(async |c| Ok(c.query_one("SELECT count(*) FROM meta", &[]).await?.get(0)))
            .expect("read");
        assert!(n >= 1);
        drop((store, other));
    }

    /// A method drives its connection's runtime from whatever thread calls
    /// it: a plain thread, a task or the `block_on` of a multi-threaded
    /// runtime, the `block_on` of a current-thread runtime (where the
    /// connection's runtime cannot be driven on the same thread) and a
    /// blocking thread of one. Each gets its answer, none panics, and the
    /// connection stays usable for the next.
    #[test]
    fn a_method_runs_from_every_kind_of_thread() {
        let db = Scratch::new("threads");
        let store = Arc::new(PgStore::open(&db.url(), 1).expect("open"));
        let ask = |store: &PgStore, n: i64| -> i64 {
            store
                .read(async |c| Ok(c.query_one("SELECT $1::bigint * 2", &[&n]).await?.get(0)))
                .expect("read")
        };
        assert_eq!(ask(&store, 1), 2);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let on_task = multi
            .block_on(multi.spawn({
                let store = store.clone();
                async move { ask(&store, 2) }
            }))
            .expect("task");
        assert_eq!(on_task, 4);
        assert_eq!(multi.block_on(async { ask(&store, 3) }), 6);
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert_eq!(current.block_on(async { ask(&store, 4) }), 8);
        let blocking = current
            .block_on(current.spawn_blocking({
                let store = store.clone();
                move || ask(&store, 5)
            }))
            .expect("blocking");
        assert_eq!(blocking, 10);
        // One connection served them all, in turn.
        assert_eq!(lock(&store.pool.state).open, 1);
        assert_eq!(ask(&store, 6), 12);
    }

    /// Statements the planning reads prepare are prepared once per
    /// connection, and forgotten (closed on the server) when a read fails,
    /// so that one a schema change broke is prepared again.
    #[test]
    fn a_statement_is_prepared_once_per_connection_and_forgotten_after_an_error() {
        let db = Scratch::new("statements");
        let store = PgStore::open(&db.url(), 1).expect("open");
        const PROBE: &str = "SELECT 41::bigint + 1 AS relance_probe";
        let probe = async |tx: &Transaction<'_>, st: &mut Statements| {
            let s = st.get(tx, PROBE, &[]).await?;
            Ok(tx.query_one(&s, &[]).await?.get::<_, i64>(0))
        };
        let on_server = || -> i64 {
            store
                .snapshot(async |tx| {
                    Ok(tx
                        .query_one(
                            "SELECT count(*) FROM pg_prepared_statements
                             WHERE statement LIKE '%relance_probe%'
                               AND statement NOT LIKE '%pg_prepared_statements%'",
                            &[],
                        )
                        .await?
                        .get(0))
                })
                .expect("count")
        };
        for _ in 0..3 {
            assert_eq!(store.snapshot_with(probe).expect("probe"), 42);
        }
        assert_eq!(on_server(), 1, "prepared once for three reads");
        let failed: Result<i64, StoreError> = store.snapshot_with(async |tx, st| {
            probe(tx, st).await?;
            Err(StoreError::Backend("stopped on purpose".into()))
        });
        assert!(failed.is_err());
        assert_eq!(on_server(), 0, "forgotten after the failed read");
        assert_eq!(store.snapshot_with(probe).expect("probe"), 42);
        assert_eq!(on_server(), 1, "prepared again");
    }
}
