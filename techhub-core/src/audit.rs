//! [`AuditService`]: the audit log of security-relevant actions, recorded by the core itself (so an
//! embedding app or a Tauri app gets it as the HTTP server does), read by admins, pruned by age.
//!
//! Recorded: sign-ins that worked or failed, lockouts, password changes and resets, ended sessions, and
//! users created, changed (which fields) and deleted. An entry never holds a password, token or secret, nor
//! an attempted address (which may be a password typed into the wrong field): details name fields and
//! reasons only.
//!
//! Recording never fails the action it records: a store that cannot append logs a warning instead (the
//! action already happened; refusing to report it would not undo it).

use crate::actor::Actor;
use crate::model::{AuditEntry, AuditFilter, Page, PageRequest};
use crate::{Error, Result, TechHub, clock};

/// The audit log. Get it with [`TechHub::audit`].
#[derive(Debug, Clone)]
pub struct AuditService {
    hub: TechHub,
}

impl AuditService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    /// A page of entries passing `filter`, oldest first (admins and the system only; others are `Forbidden`).
    pub async fn list(&self, actor: &Actor, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>> {
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may read the audit log"));
        }
        Ok(self.hub.storage().list_audit(filter, page).await?)
    }

    /// Deletes entries older than [`Config::audit_retention`](crate::Config::audit_retention); returns how
    /// many. The worker runtime's maintenance calls it; an app without workers may call it itself.
    pub async fn prune(&self) -> Result<u64> {
        let horizon = clock::sub(self.hub.now(), self.hub.config().audit_retention);
        Ok(self.hub.storage().prune_audit(horizon).await?)
    }

    /// Appends `entry`; a failure is logged, never returned (see the module docs).
    pub(crate) async fn record(&self, entry: AuditEntry) {
        let action = entry.action;
        if let Err(error) = self.hub.storage().append_audit(entry).await {
            tracing::warn!(%action, %error, "an audit entry could not be stored");
        }
    }
}
