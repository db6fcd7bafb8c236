//! In-process signals between the job service and the runtime: wake a queue's claimer at once on a local
//! enqueue, and stop a running job's handler at once on a local cancel. Other processes learn the same
//! through polling and heartbeats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::JobId;

#[derive(Debug, Default)]
pub(crate) struct JobSignals {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    running: Mutex<HashMap<JobId, CancellationToken>>,
    workers: Mutex<HashMap<String, usize>>,
}

impl JobSignals {
    /// The notifier of `queue`'s claimer (the worker that claims for the queue's idle workers).
    pub(crate) fn queue(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes `queue`'s claimer (or, if it is busy, makes its next wait return at once).
    pub(crate) fn wake(&self, queue: &str) {
        let notify = self.queues.lock().unwrap_or_else(PoisonError::into_inner).get(queue).cloned();
        if let Some(notify) = notify {
            notify.notify_one();
        }
    }

    /// Wakes every queue's claimer (after rescuing jobs, or on demand).
    pub(crate) fn wake_all(&self) {
        for notify in self.queues.lock().unwrap_or_else(PoisonError::into_inner).values() {
            notify.notify_waiters();
            notify.notify_one();
        }
    }

    /// Registers a running job's token so that a local cancel reaches its handler.
    pub(crate) fn started(&self, id: JobId, token: CancellationToken) {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(id, token);
    }

    pub(crate) fn finished(&self, id: JobId) {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Stops the handler of job `id` if it runs in this process.
    pub(crate) fn cancel_running(&self, id: JobId) {
        if let Some(token) = self.running.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
            token.cancel();
        }
    }

    pub(crate) fn add_workers(&self, queue: &str, count: isize) {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = workers.entry(queue.to_owned()).or_default();
        *entry = entry.saturating_add_signed(count);
    }

    /// The queues this process has workers for.
    pub(crate) fn served_queues(&self) -> Vec<String> {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers.iter().filter(|(_, count)| **count > 0).map(|(queue, _)| queue.clone()).collect()
    }

    pub(crate) fn workers(&self, queue: &str) -> usize {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner).get(queue).copied().unwrap_or(0)
    }
}
