//! The audit log: who did what to which account, when, from where, and whether it worked. Append-only, and
//! never a password, token or secret (details name fields, not values that could be secret).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AuditId, ClientMeta, UserId};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AuditAction {
    /// A sign-in succeeded.
    #[serde(rename = "login.succeeded")]
    LoginSucceeded,
    /// A sign-in failed (wrong password, unknown address, disabled or locked account).
    #[serde(rename = "login.failed")]
    LoginFailed,
    /// Failed sign-ins locked an address.
    #[serde(rename = "account.locked")]
    AccountLocked,
    /// A user changed its password.
    #[serde(rename = "password.changed")]
    PasswordChanged,
    /// A password was set with a reset link.
    #[serde(rename = "password.reset")]
    PasswordReset,
    /// A session (or every session of a user) was ended.
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    /// A user was created (registered, imported, bootstrapped).
    #[serde(rename = "user.created")]
    UserCreated,
    /// A user's role, active flag, email or name changed (`detail.fields` names them).
    #[serde(rename = "user.updated")]
    UserUpdated,
    /// A user was deleted.
    #[serde(rename = "user.deleted")]
    UserDeleted,
    /// A notification endpoint was created.
    #[serde(rename = "endpoint.created")]
    EndpointCreated,
    /// A notification endpoint's signing secret was rotated.
    #[serde(rename = "endpoint.secret_rotated")]
    EndpointSecretRotated,
}

impl AuditAction {
    /// Every action, in declaration order.
    pub const ALL: [Self; 11] = [
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::AccountLocked,
        Self::PasswordChanged,
        Self::PasswordReset,
        Self::SessionRevoked,
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserDeleted,
        Self::EndpointCreated,
        Self::EndpointSecretRotated,
    ];

    /// The action's name (`"login.succeeded"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login.succeeded",
            Self::LoginFailed => "login.failed",
            Self::AccountLocked => "account.locked",
            Self::PasswordChanged => "password.changed",
            Self::PasswordReset => "password.reset",
            Self::SessionRevoked => "session.revoked",
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDeleted => "user.deleted",
            Self::EndpointCreated => "endpoint.created",
            Self::EndpointSecretRotated => "endpoint.secret_rotated",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = crate::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| crate::Error::invalid_field("action", format!("{text:?} is not an audited action")))
    }
}

/// Whether the action worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It did.
    Success,
    /// It was refused.
    Failure,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its id (UUID v7: the log's order).
    pub id: AuditId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub action: AuditAction,
    /// Who did it (`None`: the system, or an anonymous caller such as a failed sign-in).
    pub actor_id: Option<UserId>,
    /// The account it was done to, if any.
    pub user_id: Option<UserId>,
    /// The caller's address, when known.
    pub ip: Option<IpAddr>,
    /// The caller's user agent, when known.
    pub user_agent: Option<String>,
    /// Whether it worked.
    pub outcome: AuditOutcome,
    /// Details, shaped per action (`{ "fields": ["role"] }` for `user.updated`); never a secret.
    pub detail: Value,
}

impl AuditEntry {
    /// A new entry of `action` at `at`, with no actor, account, client or detail yet.
    pub fn new(action: AuditAction, outcome: AuditOutcome, at: DateTime<Utc>) -> Self {
        Self {
            id: AuditId::new(),
            at,
            action,
            actor_id: None,
            user_id: None,
            ip: None,
            user_agent: None,
            outcome,
            detail: Value::Object(serde_json::Map::new()),
        }
    }

    /// Done by `actor`.
    #[must_use]
    pub fn by(mut self, actor: Option<UserId>) -> Self {
        self.actor_id = actor;
        self
    }

    /// Done to the account `user`.
    #[must_use]
    pub fn on(mut self, user: Option<UserId>) -> Self {
        self.user_id = user;
        self
    }

    /// From `client`.
    #[must_use]
    pub fn from_client(mut self, client: &ClientMeta) -> Self {
        self.ip = client.ip;
        self.user_agent.clone_from(&client.user_agent);
        self
    }

    /// With `detail`.
    #[must_use]
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries about this account, or done by it.
    pub user_id: Option<UserId>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// Whether `entry` passes the filter.
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.user_id.is_none_or(|user| entry.user_id == Some(user) || entry.actor_id == Some(user))
            && self.action.is_none_or(|action| action == entry.action)
            && self.since.is_none_or(|since| entry.at >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_serialize_as_their_names_and_parse_back() {
        for action in AuditAction::ALL {
            assert_eq!(serde_json::to_value(action).expect("serializes"), action.as_str());
            assert_eq!(action.as_str().parse::<AuditAction>().expect("parses"), action);
        }
        assert!("login.hacked".parse::<AuditAction>().is_err());
    }
}
