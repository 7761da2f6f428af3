//! Graceful shutdown, as in tokio's mini-redis: one broadcast tells every
//! task to stop; each task holds a clone of a completion sender, and the
//! daemon knows all tasks are done when the receiver sees every sender gone.

use tokio::sync::{broadcast, mpsc};

/// Listens for the shutdown signal.
#[derive(Debug)]
pub struct Shutdown {
    done: bool,
    notify: broadcast::Receiver<()>,
    /// Dropped when the task ends: tells the daemon this task is finished.
    _complete: mpsc::Sender<()>,
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        self.done
    }

    /// Waits for the signal (returns at once if it was already received).
    pub async fn recv(&mut self) {
        if self.done {
            return;
        }
        // A closed channel means the daemon is gone: shut down as well.
        let _ = self.notify.recv().await;
        self.done = true;
    }
}

/// The daemon's side: hands out listeners, signals, then waits for them.
#[derive(Debug)]
pub struct Coordinator {
    notify: broadcast::Sender<()>,
    complete_tx: mpsc::Sender<()>,
    complete_rx: mpsc::Receiver<()>,
}

impl Default for Coordinator {
    fn default() -> Self {
        let (notify, _) = broadcast::channel(1);
        let (complete_tx, complete_rx) = mpsc::channel(1);
        Self {
            notify,
            complete_tx,
            complete_rx,
        }
    }
}

impl Coordinator {
    pub fn listener(&self) -> Shutdown {
        Shutdown {
            done: false,
            notify: self.notify.subscribe(),
            _complete: self.complete_tx.clone(),
        }
    }

    /// Tells every task to stop.
    pub fn signal(&self) {
        let _ = self.notify.send(());
    }

    /// Signals, then waits up to `grace` for every listener to be dropped.
    /// Returns false when some task did not finish in time.
    pub async fn shutdown(self, grace: std::time::Duration) -> bool {
        let Coordinator {
            notify,
            complete_tx,
            mut complete_rx,
        } = self;
        let _ = notify.send(());
        drop(complete_tx);
        tokio::time::timeout(grace, complete_rx.recv())
            .await
            .is_ok()
    }
}
