//! The error every service returns.
//!
//! Which error belongs where:
//! - [`Error`] is what callers of TechHub see: a closed [`ErrorKind`] that front-ends map to an HTTP status or a
//!   UI message, a human message, and optional per-field validation details. It serializes, so a Tauri command
//!   can return it as it is.
//! - [`StoreError`](crate::storage::StoreError) is what storage adapters return. It keeps its source chain and
//!   converts into [`Error`] in one place ([`From<StoreError>`](#impl-From<StoreError>-for-Error)).
//!
//! Messages are written for the person calling: they never contain secrets, SQL or file paths.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::storage::StoreError;

/// Shorthand for results of TechHub's services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a small closed set that front-ends can match exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input was malformed or broke a rule; nothing was changed.
    InvalidInput,
    /// The caller is not authenticated (missing, invalid or expired credentials).
    Unauthenticated,
    /// The caller is authenticated but may not do this.
    Forbidden,
    /// The thing asked for does not exist (or the caller may not know it exists).
    NotFound,
    /// The change conflicts with the current state (duplicate, stale version, lost lease).
    Conflict,
    /// Too many attempts; try again later.
    RateLimited,
    /// A dependency (usually storage) is unavailable; the request may succeed later.
    Unavailable,
    /// A bug or an unexpected failure; details are logged, never shown.
    Internal,
}

impl ErrorKind {
    /// The stable machine word for this kind (`"invalid_input"`, `"not_found"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's name as the caller sent it (`"email"`, `"password"`).
    pub field: String,
    /// Why it was refused.
    pub message: String,
}

/// The error of TechHub's services: a kind, a message for humans, and optional field details.
///
/// The source (for example a [`StoreError`] with its backend error) is kept for logs and
/// [`std::error::Error::source`], but never serialized.
#[derive(Debug, Serialize, Deserialize)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fields: Vec<FieldError>,
    #[serde(skip)]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message for humans.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), code: None, fields: Vec::new(), source: None }
    }

    /// An [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An [`ErrorKind::InvalidInput`] error about one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::invalid_input(message.clone()).with_field(field, message)
    }

    /// An [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// An [`ErrorKind::Conflict`] error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// An [`ErrorKind::Forbidden`] error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Adds a finer machine word than the kind (`"email_taken"`, `"invalid_credentials"`, `"token_expired"`),
    /// which front-ends pass on (the HTTP API's problem `code`).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The finer machine word, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// An [`ErrorKind::Unauthenticated`] error.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// An [`ErrorKind::RateLimited`] error.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, message)
    }

    /// Adds a field-level validation detail.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.fields.push(FieldError { field: field.into(), message: message.into() });
        self
    }

    /// Attaches the underlying cause (kept for logs, never serialized).
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Field-level validation details (empty unless the kind is [`ErrorKind::InvalidInput`]).
    pub fn fields(&self) -> &[FieldError] {
        &self.fields
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        let (kind, message) = match &error {
            StoreError::Conflict(conflict) => (ErrorKind::Conflict, conflict.to_string()),
            StoreError::NotFound => (ErrorKind::NotFound, "not found".to_owned()),
            StoreError::InvalidInput(message) => (ErrorKind::InvalidInput, message.clone()),
            StoreError::Unavailable(_) => (ErrorKind::Unavailable, "storage is unavailable".to_owned()),
            // The backend's own words may name tables, files or queries: keep them in the source, not the message.
            StoreError::Corrupt(_) | StoreError::Backend(_) => (ErrorKind::Internal, "storage failed".to_owned()),
        };
        Self::new(kind, message).with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Conflict;

    #[test]
    fn serializes_kind_message_and_fields_but_never_the_source() {
        let error = Error::invalid_field("email", "not an email address")
            .with_source(std::io::Error::other("/var/lib/secret/path"));
        let json = serde_json::to_value(&error).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "invalid_input",
                "message": "not an email address",
                "fields": [{"field": "email", "message": "not an email address"}],
            })
        );
    }

    #[test]
    fn store_errors_map_to_kinds_without_leaking_backend_text() {
        let conflict: Error = StoreError::Conflict(Conflict::EmailTaken).into();
        assert_eq!(conflict.kind(), ErrorKind::Conflict);

        let backend: Error = StoreError::backend(std::io::Error::other("SELECT * FROM users")).into();
        assert_eq!(backend.kind(), ErrorKind::Internal);
        assert!(!backend.to_string().contains("SELECT"));
        // The chain is kept for logs.
        let source = std::error::Error::source(&backend).expect("store error kept");
        assert!(std::error::Error::source(source).expect("backend kept").to_string().contains("SELECT"));
    }
}
