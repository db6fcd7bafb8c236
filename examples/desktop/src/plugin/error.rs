//! The error every command returns, shaped so the window can branch on it.

use serde::Serialize;
use techhub_core::{ErrorKind, FieldError};

/// A failed command as the window receives it: `{ kind, code, message, fields? }`.
///
/// `kind` is the core's [`ErrorKind`] (`"forbidden"`, `"not_found"`, ...); `code` is the core's finer word
/// when it has one (`"email_taken"`, `"invalid_credentials"`), else the kind again, so the UI always has one
/// stable word to match. Internal failures keep their details out of the message (they may name files or
/// queries), like the HTTP API does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandError {
    /// The core's error kind.
    pub kind: ErrorKind,
    /// The finest stable machine word for what went wrong.
    pub code: String,
    /// A message for people.
    pub message: String,
    /// Per-field validation details (only for `invalid_input`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl CommandError {
    /// An error of `kind` with its own `code`, for failures that are not the core's (no session, saving a file).
    pub fn new(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        Self { kind, code: code.to_owned(), message: message.into(), fields: Vec::new() }
    }

    /// No one is signed in (or the session ended).
    pub fn not_signed_in() -> Self {
        Self::new(ErrorKind::Unauthenticated, "not_signed_in", "sign in first")
    }
}

impl From<techhub_core::Error> for CommandError {
    fn from(error: techhub_core::Error) -> Self {
        let kind = error.kind();
        let code = error.code().unwrap_or(kind.as_str()).to_owned();
        let message = match kind {
            ErrorKind::Internal | ErrorKind::Unavailable => {
                tracing::error!(error = %error, source = ?std::error::Error::source(&error), "command failed");
                "something went wrong; try again".to_owned()
            }
            _ => error.message().to_owned(),
        };
        Self { kind, code, message, fields: error.fields().to_vec() }
    }
}

impl From<tauri::Error> for CommandError {
    fn from(error: tauri::Error) -> Self {
        tracing::error!(error = %error, "command failed in Tauri");
        Self::new(ErrorKind::Internal, "internal", "something went wrong; try again")
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.code, self.message)
    }
}

impl std::error::Error for CommandError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_error_keeps_its_code_and_fields_and_an_internal_one_its_secrets() {
        let taken = CommandError::from(techhub_core::Error::conflict("that address is taken").with_code("email_taken"));
        assert_eq!((taken.kind, taken.code.as_str()), (ErrorKind::Conflict, "email_taken"));
        let field = CommandError::from(techhub_core::Error::invalid_field("email", "not an email address"));
        assert_eq!(field.code, "invalid_input");
        assert_eq!(field.fields[0].field, "email");
        let internal = CommandError::from(techhub_core::Error::internal("/var/lib/techhub/app.db is locked"));
        assert!(!internal.message.contains("/var/lib"), "{internal:?}");
        let json = serde_json::to_value(&taken).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({ "kind": "conflict", "code": "email_taken", "message": "that address is taken" })
        );
    }
}
