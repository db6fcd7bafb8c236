//! The `users.import` and `users.export` jobs.
//!
//! An import's passwords never reach storage: [`prepare_import`] parses the file and hashes every password
//! before the job is stored, so the payload holds hashes only; a refused row's report never repeats a cell
//! that may be a secret (misaligned columns can put a password anywhere); and the payload is discarded when
//! the job finishes.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{UserService, clean_name};
use crate::auth::check_new_password;
use crate::jobs::{HandlerOptions, JobContext, JobError, Registry, Typed, TypedJobHandler};
use crate::model::{Artifact, Email, NewJob, PageRequest, PasswordHash, Role, User, UserFilter};
use crate::notify::kinds;
use crate::{Error, Result, TechHub};

/// The import job's kind.
pub(crate) const IMPORT: &str = "users.import";
/// The export job's kind.
pub(crate) const EXPORT: &str = "users.export";
/// The queue both run on.
const QUEUE: &str = "default";

/// A file format for import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferFormat {
    /// CSV with the header `email,name,role[,password]` (import) or the user fields (export).
    Csv,
    /// A JSON array of objects with the same fields.
    Json,
}

/// One user to import. Its `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    /// The address.
    pub email: String,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `user` (default) or `admin`.
    #[serde(default)]
    pub role: Option<String>,
    /// A password; without one the user is invited (mailed a link to choose one).
    #[serde(default)]
    pub password: Option<String>,
}

impl fmt::Debug for ImportRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRow")
            .field("email", &self.email)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why one row was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// The row's number among the data rows, from 1.
    pub row: usize,
    /// Its email, normalised, when it is a valid address (else empty: a cell that is not an address may be a
    /// misplaced secret, and is never repeated).
    pub email: String,
    /// What was wrong.
    pub error: String,
}

/// What an import did, row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Users created.
    pub created: usize,
    /// Rows whose email already exists (also on a retried import: nothing is created twice).
    pub skipped: usize,
    /// Rows refused.
    pub failed: usize,
    /// Why each refused row was refused.
    pub errors: Vec<RowError>,
}

/// An import as stored in its job: the rows parsed, passwords already hashed. Its `Debug` shows counts only.
#[derive(Serialize, Deserialize)]
pub(crate) struct ImportPayload {
    rows: Vec<PreparedRow>,
}

impl fmt::Debug for ImportPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportPayload").field("rows", &self.rows.len()).finish_non_exhaustive()
    }
}

/// One row of an import, checked and ready to store: only valid values (a cell that is not one is dropped,
/// since with misaligned columns it may be a password), and no plaintext password, only its hash.
#[derive(Serialize, Deserialize)]
struct PreparedRow {
    /// The normalised address (empty when refused).
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: Option<Role>,
    /// The argon2id hash (PHC string) of the row's password, if it had one.
    #[serde(default)]
    password_hash: Option<String>,
    /// Why the row was refused while preparing (never a cell's value).
    #[serde(default)]
    refused: Option<String>,
}

impl PreparedRow {
    fn refused(email: String, why: String) -> Self {
        Self { email, name: String::new(), role: None, password_hash: None, refused: Some(why) }
    }

    /// Checks a parsed row's address, name and role (its password is checked apart).
    fn check(row: &ImportRow) -> Self {
        let email = match Email::parse(&row.email) {
            Ok(email) => email.as_str().to_owned(),
            Err(error) => return Self::refused(String::new(), error.message().to_owned()),
        };
        let name = match clean_name(row.name.as_deref()) {
            Ok(name) => name,
            Err(error) => return Self::refused(email, error.message().to_owned()),
        };
        let role = match row.role.as_deref().map(str::trim) {
            None | Some("user") => Role::User,
            Some("admin") => Role::Admin,
            Some(_) => return Self::refused(email, "unknown role (expected user or admin)".to_owned()),
        };
        Self { email, name, role: Some(role), password_hash: None, refused: None }
    }
}

/// Parses an import file and hashes its passwords, so that what is stored holds no plaintext password.
/// A file whose shape is wrong (CSV header, not a JSON array) is refused as a whole; a bad row is kept as
/// refused, for the report.
pub(crate) async fn prepare_import(hub: &TechHub, format: TransferFormat, data: String) -> Result<ImportPayload> {
    let rows =
        parse_rows(format, &Value::String(data)).map_err(|error| Error::invalid_field("body", error.to_string()))?;
    let mut hashing = tokio::task::JoinSet::new();
    let mut prepared = Vec::with_capacity(rows.len());
    for (index, row) in rows.into_iter().enumerate() {
        match row {
            Err(why) => prepared.push(PreparedRow::refused(String::new(), why)),
            Ok(row) => {
                let checked = PreparedRow::check(&row);
                if checked.refused.is_none()
                    && let Some(password) = row.password
                {
                    let hub = hub.clone();
                    let address = checked.email.clone();
                    hashing.spawn(async move { (index, hash_row_password(&hub, &address, &password).await) });
                }
                prepared.push(checked);
            }
        }
    }
    while let Some(joined) = hashing.join_next().await {
        let (index, outcome) =
            joined.map_err(|error| Error::internal(format!("hashing a password failed: {error}")))?;
        match outcome {
            Ok(hash) => prepared[index].password_hash = Some(hash.as_phc().to_owned()),
            Err(why) => prepared[index].refused = Some(why),
        }
    }
    Ok(ImportPayload { rows: prepared })
}

#[derive(Debug, Deserialize)]
struct ExportPayload {
    format: TransferFormat,
}

/// Checks a row's password against the rules and hashes it; the error says why, never what.
async fn hash_row_password(hub: &TechHub, email: &str, password: &str) -> std::result::Result<PasswordHash, String> {
    let email = Email::parse(email).map_err(|error| error.message().to_owned())?;
    check_new_password(password, &email).map_err(|error| error.message().to_owned())?;
    hub.passwords().hash(password).await.map_err(|error| error.message().to_owned())
}

pub(crate) fn register_transfer_handlers(registry: &mut Registry) {
    let options = HandlerOptions::default().queue(QUEUE).max_attempts(3);
    if registry.get(IMPORT).is_none() {
        let import = options.clone().discard_payload_when_finished();
        registry.insert(IMPORT.to_owned(), Arc::new(Typed(ImportHandler)), import);
    }
    if registry.get(EXPORT).is_none() {
        registry.insert(EXPORT.to_owned(), Arc::new(Typed(ExportHandler)), options);
    }
}

/// The rows of an import's data: CSV text, or a JSON array (or JSON text of one).
fn parse_rows(
    format: TransferFormat,
    data: &Value,
) -> std::result::Result<Vec<std::result::Result<ImportRow, String>>, JobError> {
    match (format, data) {
        (TransferFormat::Csv, Value::String(text)) => {
            let mut reader =
                csv::ReaderBuilder::new().trim(csv::Trim::Headers).flexible(true).from_reader(text.as_bytes());
            let headers = reader
                .headers()
                .map_err(|error| JobError::permanent(format!("unreadable CSV header: {error}")))?
                .clone();
            let known = ["email", "name", "role", "password"];
            if !headers.iter().any(|header| header == "email") || headers.iter().any(|header| !known.contains(&header))
            {
                return Err(JobError::permanent("the CSV header must be email,name,role[,password]"));
            }
            Ok(reader
                .records()
                .map(|record| {
                    let record = record.map_err(|error| format!("unreadable row: {error}"))?;
                    if record.len() != headers.len() {
                        return Err(format!("expected {} fields, found {}", headers.len(), record.len()));
                    }
                    let field = |name: &str| {
                        headers.iter().position(|h| h == name).and_then(|i| record.get(i)).map(str::to_owned)
                    };
                    Ok(ImportRow {
                        email: field("email").unwrap_or_default(),
                        name: field("name"),
                        role: field("role").filter(|role| !role.trim().is_empty()),
                        password: field("password").filter(|password| !password.is_empty()),
                    })
                })
                .collect())
        }
        (TransferFormat::Json, Value::Array(rows)) => Ok(rows
            .iter()
            // serde's message would quote the offending value, which may be a password.
            .map(|row| {
                ImportRow::deserialize(row).map_err(|_| {
                    "invalid row: expected an object with a text email and optional name, role and password".to_owned()
                })
            })
            .collect()),
        (TransferFormat::Json, Value::String(text)) => {
            let value: Value = serde_json::from_str(text).map_err(|error| {
                JobError::permanent(format!("invalid JSON at line {} column {}", error.line(), error.column()))
            })?;
            parse_rows(TransferFormat::Json, &value)
        }
        _ => Err(JobError::permanent("CSV data must be text; JSON data an array of rows")),
    }
}

struct ImportHandler;

#[async_trait]
impl TypedJobHandler for ImportHandler {
    type Payload = ImportPayload;
    type Output = ImportReport;

    async fn run(&self, payload: ImportPayload, ctx: JobContext) -> std::result::Result<ImportReport, JobError> {
        let users = ctx.hub().users();
        let mut report = ImportReport::default();
        let total = payload.rows.len().max(1);
        for (index, row) in payload.rows.into_iter().enumerate() {
            let number = index + 1;
            let shown_email = row.email.clone();
            let outcome = match row.refused.clone() {
                Some(why) => Err(why),
                None => import_row(&users, &ctx, row).await,
            };
            match outcome {
                Ok(true) => report.created += 1,
                Ok(false) => report.skipped += 1,
                Err(error) => {
                    report.failed += 1;
                    report.errors.push(RowError { row: number, email: shown_email, error });
                }
            }
            if number % 25 == 0 || number == total {
                ctx.progress(((number * 100) / total) as u8, format!("{number} of {total} rows"));
            }
            if ctx.is_cancelled() {
                return Err(JobError::retry("cancelled part way; a retry skips the rows already imported"));
            }
        }
        ctx.log(format!("imported {} users, skipped {}, refused {}", report.created, report.skipped, report.failed));
        Ok(report)
    }
}

/// Imports one row: `Ok(true)` created, `Ok(false)` skipped (the address exists), `Err` refused.
async fn import_row(users: &UserService, ctx: &JobContext, row: PreparedRow) -> std::result::Result<bool, String> {
    let message = |error: Error| error.message().to_owned();
    let email = Email::parse(&row.email).map_err(message)?;
    if ctx.hub().storage().get_user_by_email(&email).await.map_err(|error| message(error.into()))?.is_some() {
        return Ok(false);
    }
    let mut user = User::new(email, row.name, row.role.unwrap_or(Role::User), ctx.hub().now());
    let follow_up = match row.password_hash {
        Some(hash) => {
            user.password_hash = Some(PasswordHash::from_phc(hash));
            NewJob::new(kinds::WELCOME, json!({ "user_id": user.id }))
        }
        // An invitation: the reset link lets the user choose its first password.
        None => NewJob::new(kinds::PASSWORD_RESET, json!({ "user_id": user.id })),
    };
    match users.create(user, vec![follow_up]).await {
        Ok(_) => Ok(true),
        // Created meanwhile (a concurrent import, or the first attempt of this one): not an error.
        Err(error) if error.code() == Some("email_taken") => Ok(false),
        Err(error) => Err(message(error)),
    }
}

struct ExportHandler;

/// The exported fields, in order.
const EXPORT_FIELDS: [&str; 7] = ["id", "email", "name", "role", "active", "email_verified", "created_at"];

#[async_trait]
impl TypedJobHandler for ExportHandler {
    type Payload = ExportPayload;
    type Output = Value;

    async fn run(&self, payload: ExportPayload, ctx: JobContext) -> std::result::Result<Value, JobError> {
        let storage = ctx.hub().storage();
        // The count is read first, so users created while the export reads can take it past 100: capped.
        let expected = storage.count_users().await.map_err(Error::from)?.total.max(1);
        let mut users = Vec::new();
        let mut page = PageRequest::first(500);
        loop {
            let batch = storage.list_users(&UserFilter::default(), &page).await.map_err(Error::from)?;
            users.extend(batch.items);
            ctx.progress(reading_percent(users.len(), expected), format!("read {} of {expected} users", users.len()));
            match batch.next_cursor {
                Some(cursor) => page = PageRequest::after(cursor, 500),
                None => break,
            }
        }
        let date = ctx.hub().now().format("%Y-%m-%d");
        let artifact = match payload.format {
            TransferFormat::Json => Artifact {
                content_type: "application/json".to_owned(),
                file_name: Some(format!("users-{date}.json")),
                bytes: serde_json::to_vec_pretty(&users).map_err(|error| JobError::permanent(error.to_string()))?,
            },
            TransferFormat::Csv => Artifact {
                content_type: "text/csv; charset=utf-8".to_owned(),
                file_name: Some(format!("users-{date}.csv")),
                bytes: to_csv(&users).map_err(|error| JobError::permanent(error.to_string()))?,
            },
        };
        ctx.set_artifact(artifact);
        ctx.progress(100, format!("wrote {} users", users.len()));
        Ok(json!({ "users": users.len() }))
    }
}

/// Reading is the export's work up to 90 %; writing the file is the rest.
fn reading_percent(read: usize, expected: u64) -> u8 {
    let share = (read as u64).saturating_mul(90) / expected;
    u8::try_from(share.min(90)).unwrap_or(90)
}

fn to_csv(users: &[User]) -> Result<Vec<u8>> {
    let failed = |error: csv::Error| Error::internal(format!("writing CSV failed: {error}"));
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(EXPORT_FIELDS).map_err(failed)?;
    for user in users {
        let record = [
            user.id.to_string(),
            user.email.to_string(),
            user.name.clone(),
            user.role.to_string(),
            user.active.to_string(),
            user.email_verified.to_string(),
            user.created_at.to_rfc3339(),
        ];
        writer.write_record(record.iter().map(|cell| defuse_formula(cell))).map_err(failed)?;
    }
    writer.into_inner().map_err(|error| Error::internal(format!("writing CSV failed: {error}")))
}

/// Spreadsheets run cells that start with `=`, `+`, `-`, `@`, tab or carriage return as formulas; a leading
/// apostrophe makes them text (OWASP's advice against CSV injection).
fn defuse_formula(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}") } else { cell.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_progress_follows_the_users_read_then_the_file() {
        assert_eq!(reading_percent(0, 1_201), 0);
        assert_eq!(reading_percent(500, 1_201), 37);
        assert_eq!(reading_percent(1_000, 1_201), 74);
        assert_eq!(reading_percent(1_201, 1_201), 90);
        assert_eq!(reading_percent(1_300, 1_201), 90, "users created during the export do not pass 90 %");
    }

    #[test]
    fn formulas_are_defused_and_plain_text_kept() {
        assert_eq!(defuse_formula("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        assert_eq!(defuse_formula("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse_formula("Ada Lovelace"), "Ada Lovelace");
    }

    #[test]
    fn csv_rows_parse_with_optional_password_and_report_bad_shapes() {
        let data = Value::String("email,name,role,password\na@x.io,A,admin,\nb@x.io,B\n".to_owned());
        let rows = parse_rows(TransferFormat::Csv, &data).expect("header ok");
        assert_eq!(rows[0].as_ref().expect("row").role.as_deref(), Some("admin"));
        assert_eq!(rows[0].as_ref().expect("row").password, None);
        assert!(rows[1].is_err(), "a short row is refused on its own");
        let bad_header = Value::String("mail,name\nx@y.z,X\n".to_owned());
        assert!(parse_rows(TransferFormat::Csv, &bad_header).is_err());
    }
}
