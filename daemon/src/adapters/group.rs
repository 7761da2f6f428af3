//! Group commit of event appends, for both stores: batches that callers
//! append while a transaction runs queue up, and whoever holds the writer
//! next commits them all in one transaction. Under load one transaction
//! carries many callers' events, so its fixed costs (the round trips, the
//! locks, the commit's flush) are paid once per group, not per request.

use crate::domain::ingest::Incoming;
use crate::ports::store::{Append, StoreError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Most events merged into one transaction.
const GROUP_MAX: usize = 50_000;

/// The appends waiting for the writer.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Vec<Arc<Pending>>>,
}

/// One caller's appends, and their outcome once a group committed them.
#[derive(Debug)]
struct Pending {
    batch: Mutex<Option<Vec<Incoming>>>,
    outcome: Mutex<Option<Result<Vec<Append>, StoreError>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupCommit {
    /// Appends `batch` through `commit`, which runs with the writer `W`
    /// held: `free` is the writer when it was free (taken without
    /// waiting), `wait` waits for it. Alone, the batch is written as it
    /// is, without queueing a copy; otherwise it joins the queue and the
    /// caller, once it holds the writer, commits the queue (oldest first,
    /// up to [`GROUP_MAX`] events a transaction) until its own batch is
    /// done. A failed transaction fails every batch it carried.
    pub(crate) fn append<W>(
        &self,
        batch: &[Incoming],
        free: Option<W>,
        wait: impl FnOnce() -> W,
        mut commit: impl FnMut(&mut W, &[Incoming]) -> Result<Vec<Append>, StoreError>,
    ) -> Result<Vec<Append>, StoreError> {
        let mut writer = match free {
            Some(mut w) if lock(&self.queue).is_empty() => return commit(&mut w, batch),
            held => held,
        };
        let mine = Arc::new(Pending {
            batch: Mutex::new(Some(batch.to_vec())),
            outcome: Mutex::new(None),
        });
        lock(&self.queue).push(mine.clone());
        let mut writer = match writer.take() {
            Some(w) => w,
            None => wait(),
        };
        loop {
            if let Some(outcome) = lock(&mine.outcome).take() {
                return outcome;
            }
            self.commit_group(&mut writer, &mut commit);
        }
    }

    /// Commits queued appends, oldest first, up to [`GROUP_MAX`] events.
    fn commit_group<W>(
        &self,
        writer: &mut W,
        commit: &mut impl FnMut(&mut W, &[Incoming]) -> Result<Vec<Append>, StoreError>,
    ) {
        let group: Vec<Arc<Pending>> = {
            let mut queue = lock(&self.queue);
            let mut size = 0;
            let take = queue
                .iter()
                .take_while(|p| {
                    let fits = size == 0 || size < GROUP_MAX;
                    size += lock(&p.batch).as_ref().map_or(0, Vec::len);
                    fits
                })
                .count();
            queue.drain(..take).collect()
        };
        let mut all = Vec::new();
        let mut sizes = Vec::with_capacity(group.len());
        for p in &group {
            let batch = lock(&p.batch).take().unwrap_or_default();
            sizes.push(batch.len());
            all.extend(batch);
        }
        match commit(writer, &all) {
            Ok(results) => {
                let mut results = results.into_iter();
                for (p, n) in group.iter().zip(sizes) {
                    *lock(&p.outcome) = Some(Ok(results.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                for p in &group {
                    *lock(&p.outcome) = Some(Err(e.clone()));
                }
            }
        }
    }
}
