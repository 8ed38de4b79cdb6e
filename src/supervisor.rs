//! The background tasks of one engine process, owned in one place.
//!
//! `serve` starts its background work here (the outbox dispatcher; the
//! store's writer tasks are owned by the store and stopped through it).
//! [`Supervisor::shutdown`] is the one exit path: it signals every task to
//! stop, waits for each to finish what it has in hand, then closes the
//! store, whose writers commit what is queued. A task that ends on its own
//! before that is a fault, logged by name.

use crate::store::EventStore;
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            stop,
            tasks: Vec::new(),
        }
    }

    /// What a task watches: it turns `true` when the process shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs `task` until it ends or the process shuts down.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.subscribe();
        self.tasks.push((
            name,
            tokio::spawn(async move {
                task.await;
                if !*stop.borrow() {
                    tracing::error!(task = name, "background task ended before shutdown");
                }
            }),
        ));
    }

    /// The tasks that are still running, by name.
    pub fn running(&self) -> Vec<&'static str> {
        self.tasks
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .map(|(name, _)| *name)
            .collect()
    }

    /// Stops every task, waits for each, then closes the store (its writers
    /// commit what is queued).
    pub async fn shutdown(self, store: &dyn EventStore) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
        store.close().await;
    }
}
