//! The error storage adapters return.

use std::fmt;

/// Shorthand for results of storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a storage call can fail with. Adapters map their own errors into it and keep the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write conflicts with what is stored; nothing was changed.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The record the call names does not exist.
    #[error("not found")]
    NotFound,
    /// The call's arguments cannot be used (an unreadable cursor, a limit of zero); nothing was changed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend cannot be reached or is shutting down; the call may succeed later.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Stored data could not be read back (a broken row, an unknown schema).
    #[error("stored data is corrupt")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Any other backend failure.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl StoreError {
    /// Wraps a backend failure, keeping it as the source.
    pub fn backend(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(source))
    }

    /// Wraps a failure to read stored data back, keeping it as the source.
    pub fn corrupt(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Corrupt(Box::new(source))
    }

    /// Wraps an unreachable backend, keeping it as the source.
    pub fn unavailable(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(source))
    }

    /// The conflict, if this is one.
    pub fn conflict(&self) -> Option<Conflict> {
        match self {
            Self::Conflict(conflict) => Some(*conflict),
            _ => None,
        }
    }
}

impl From<Conflict> for StoreError {
    fn from(conflict: Conflict) -> Self {
        Self::Conflict(conflict)
    }
}

/// Which rule a conflicting write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Conflict {
    /// Another user already has this (normalised) email address.
    EmailTaken,
    /// The record changed since it was read: the expected version is stale.
    VersionMismatch,
    /// The caller no longer holds the job's lease (it expired and the job moved on).
    LeaseLost,
    /// The record is not in a state that allows this change (cancelling a finished job).
    InvalidState,
    /// A record with this identity (id, token hash, live unique key) already exists.
    Duplicate,
    /// The write would leave no active admin.
    LastActiveAdmin,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EmailTaken => "the email address is already taken",
            Self::VersionMismatch => "the record was changed by someone else; reload and try again",
            Self::LeaseLost => "the job's lease is no longer held by this worker",
            Self::InvalidState => "the record's state does not allow this change",
            Self::Duplicate => "a record with this identity already exists",
            Self::LastActiveAdmin => "the last active admin cannot be demoted, disabled or deleted",
        })
    }
}
