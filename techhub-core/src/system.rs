//! [`SystemService`]: what operators read about a running hub: counts of everything, and the database.
//! Admins and the system only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::actor::Actor;
use crate::model::{BuildStatus, DatabaseInfo, JobState, NotificationStatus, UserCounts};
use crate::{Error, Result, TechHub};

/// How many of everything there are, from the stores' counters (never by loading every row). Every state and
/// status is present, zero included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemStats {
    /// Users: all, active, admins.
    pub users: UserCounts,
    /// Jobs per state, over every queue.
    pub jobs: BTreeMap<JobState, u64>,
    /// Builds per status.
    pub builds: BTreeMap<BuildStatus, u64>,
    /// Notifications per delivery status, over every channel.
    pub notifications: BTreeMap<NotificationStatus, u64>,
}

/// Operators' views of the hub. Get it with [`TechHub::system`].
#[derive(Debug, Clone)]
pub struct SystemService {
    hub: TechHub,
}

impl SystemService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    /// Whether `actor` may read operators' views (server logs, metrics, versions): admins and the system
    /// only; others are `Forbidden`.
    pub fn authorize(&self, actor: &Actor) -> Result<()> {
        Self::require_admin(actor, "the system's state")
    }

    fn require_admin(actor: &Actor, what: &str) -> Result<()> {
        if actor.is_privileged() { Ok(()) } else { Err(Error::forbidden(format!("only admins may read {what}"))) }
    }

    /// Counts of users, jobs per state, builds per status and notifications per status (admins and the
    /// system only; others are `Forbidden`).
    pub async fn stats(&self, actor: &Actor) -> Result<SystemStats> {
        Self::require_admin(actor, "system statistics")?;
        let storage = self.hub.storage();
        let users = storage.count_users().await?;
        let mut jobs: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|state| (*state, 0)).collect();
        for queue in storage.queue_counts().await? {
            for state in JobState::ALL {
                *jobs.entry(state).or_default() += queue.get(state);
            }
        }
        let mut builds: BTreeMap<BuildStatus, u64> = BuildStatus::ALL.iter().map(|status| (*status, 0)).collect();
        for (status, count) in storage.build_counts().await? {
            *builds.entry(status).or_default() += count;
        }
        let mut notifications: BTreeMap<NotificationStatus, u64> =
            NotificationStatus::ALL.iter().map(|status| (*status, 0)).collect();
        for count in storage.notification_counts().await? {
            *notifications.entry(count.status).or_default() += count.count;
        }
        Ok(SystemStats { users, jobs, builds, notifications })
    }

    /// The database behind the store: kind, schema version, size, details (admins and the system only).
    pub async fn database(&self, actor: &Actor) -> Result<DatabaseInfo> {
        Self::require_admin(actor, "database facts")?;
        Ok(self.hub.storage().database_info().await?)
    }
}
