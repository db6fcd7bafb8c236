//! Who is calling: every service call that touches another user's data takes an [`Actor`], and the core
//! checks it. Front-ends (HTTP, Tauri, CLI) only authenticate and pass the actor on.

use serde::{Deserialize, Serialize};

use crate::model::{Role, UserId};

/// The caller of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// Trusted embedding code (a CLI, the app itself, a built-in job): may do everything.
    System,
    /// An authenticated user.
    User {
        /// The user.
        id: UserId,
        /// Its role when it authenticated.
        role: Role,
    },
}

impl Actor {
    /// A user actor.
    pub const fn user(id: UserId, role: Role) -> Self {
        Self::User { id, role }
    }

    /// Whether the actor may see and change everything (the system or an admin).
    pub const fn is_privileged(&self) -> bool {
        matches!(self, Self::System | Self::User { role: Role::Admin, .. })
    }

    /// The user behind the actor, if any.
    pub const fn user_id(&self) -> Option<UserId> {
        match self {
            Self::System => None,
            Self::User { id, .. } => Some(*id),
        }
    }

    /// Whether the actor may see or change something owned by `owner` (`None`: owned by the system).
    pub fn may_access(&self, owner: Option<UserId>) -> bool {
        self.is_privileged() || (owner.is_some() && owner == self.user_id())
    }
}
