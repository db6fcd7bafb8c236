//! Events about what an attempt's settle writes beside its job ([`SideWrite`](crate::model::SideWrite)s): held
//! from the end of the attempt until its settle is written, then published (the news never runs ahead of the
//! store), or dropped if the settle was refused or failed (nothing they tell of was stored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use uuid::Uuid;

use crate::TechHub;
use crate::events::EventKind;
use crate::model::{JobId, UserId};

/// One event to publish once its attempt's settle is stored.
#[derive(Debug, Clone)]
pub(crate) struct HeldEvent {
    pub(crate) kind: EventKind,
    pub(crate) subject: Uuid,
    pub(crate) owner: Option<UserId>,
    pub(crate) data: Value,
}

/// The held events of the attempts waiting for their settle, by job.
#[derive(Debug, Default)]
pub(crate) struct HeldEvents {
    by_job: Mutex<HashMap<JobId, Vec<HeldEvent>>>,
    /// How many jobs hold events: most attempts hold none, and their settle then skips the lock.
    holding: AtomicUsize,
}

impl HeldEvents {
    /// Holds `events` until the settle of job `job`'s attempt is written.
    pub(crate) fn hold(&self, job: JobId, events: Vec<HeldEvent>) {
        if events.is_empty() {
            return;
        }
        let mut by_job = self.by_job.lock().unwrap_or_else(PoisonError::into_inner);
        if by_job.insert(job, events).is_none() {
            self.holding.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Called once the settle of job `job`'s attempt was written (`stored`) or refused or failed (`!stored`):
    /// publishes the events it held in the first case, drops them in the second.
    pub(crate) fn settled(&self, hub: &TechHub, job: JobId, stored: bool) {
        if self.holding.load(Ordering::Relaxed) == 0 {
            return;
        }
        let events = self.by_job.lock().unwrap_or_else(PoisonError::into_inner).remove(&job);
        let Some(events) = events else { return };
        self.holding.fetch_sub(1, Ordering::Relaxed);
        if stored {
            for event in events {
                hub.events().publish(hub.now(), event.kind, event.subject, event.owner, event.data);
            }
        }
    }
}
