//! Store access for the API, off the async runtime: every call runs on a
//! blocking thread against the process's store handle, which takes care of
//! its connections, of writers taking turns and of group commits (appends
//! that queue up while a transaction runs share the next one).

use super::error::ApiError;
use crate::domain::ingest::Incoming;
use crate::ports::store::{Append, Store, StoreError, StoreHandle};

/// The API's handle on the store; clones share it.
#[derive(Clone)]
pub struct Db {
    store: StoreHandle,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    /// Appends events; concurrent calls share transactions.
    pub async fn append(&self, batch: Vec<Incoming>) -> Result<Vec<Append>, ApiError> {
        self.write(move |store| store.append_events(&batch)).await
    }

    /// Runs a write in a blocking thread.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.read(move |store| Ok(f(store)?)).await
    }

    /// Runs `f` in a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?
    }
}
