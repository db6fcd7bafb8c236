//! Cancel signals to the runners of this process: a cancel reaches a local runner at once, without going
//! through the job engine (whose stop grace is shorter than a process's SIGTERM grace). Runners in other
//! processes see the stored `cancel_requested` flag at their next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::model::BuildId;

/// The cancel tokens of the builds running here.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunningBuilds {
    tokens: Arc<Mutex<HashMap<BuildId, CancellationToken>>>,
}

/// Unregisters a runner's token when the runner ends (or is dropped).
pub(crate) struct Registration {
    builds: RunningBuilds,
    id: BuildId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.builds.tokens.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

impl RunningBuilds {
    /// Registers the runner of `id`; its token fires on [`RunningBuilds::cancel`].
    pub(crate) fn register(&self, id: BuildId) -> (CancellationToken, Registration) {
        let token = CancellationToken::new();
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).insert(id, token.clone());
        (token, Registration { builds: self.clone(), id })
    }

    /// Tells the local runner of `id`, if any, that a cancel was stored.
    pub(crate) fn cancel(&self, id: BuildId) {
        if let Some(token) = self.tokens.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
            token.cancel();
        }
    }
}
