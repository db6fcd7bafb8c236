//! Jobs: listing and cancelling them, exporting users, and saving an export's file.

use std::path::{Path, PathBuf};

use tauri::State;
use techhub_core::ErrorKind;
use techhub_core::model::{Cursor, Job, JobFilter, JobId, JobState, Page};
use techhub_core::users::TransferFormat;

use super::page;
use crate::plugin::error::CommandError;
use crate::plugin::state::HubState;

/// A page of jobs (a user's own; an admin's all), newest first, optionally in one `state`.
#[tauri::command]
pub(crate) async fn list_jobs(
    state: State<'_, HubState>,
    job_state: Option<JobState>,
    cursor: Option<Cursor>,
) -> Result<Page<Job>, CommandError> {
    let session = state.session().await?;
    let filter = JobFilter { state: job_state, ..JobFilter::default() };
    Ok(state.hub().jobs().list(&session.actor, filter, &page(cursor)).await?)
}

/// Cancels a job.
#[tauri::command]
pub(crate) async fn cancel_job(state: State<'_, HubState>, job_id: JobId) -> Result<Job, CommandError> {
    let session = state.session().await?;
    Ok(state.hub().jobs().cancel(&session.actor, job_id).await?)
}

/// Starts an export of every user as a job (the core allows it to admins); follow it live, then save it.
#[tauri::command]
pub(crate) async fn start_export(state: State<'_, HubState>, format: TransferFormat) -> Result<Job, CommandError> {
    let session = state.session().await?;
    Ok(state.hub().users().export(&session.actor, format).await?)
}

/// Saves the file a finished job produced into the exports folder and returns its path. The window chooses
/// the job, never the path: the file is named after the job's artifact and never overwrites another.
#[tauri::command]
pub(crate) async fn save_export(state: State<'_, HubState>, job_id: JobId) -> Result<String, CommandError> {
    let session = state.session().await?;
    let artifact = state.hub().jobs().artifact(&session.actor, job_id).await?;
    let suggested = artifact.file_name.as_deref().and_then(|name| Path::new(name).file_name()).map(PathBuf::from);
    let name = suggested.unwrap_or_else(|| PathBuf::from(format!("techhub-{job_id}")));
    let saved = write_new_file(state.exports_dir(), &name, &artifact.bytes).map_err(|error| {
        CommandError::new(ErrorKind::Unavailable, "save_failed", format!("the file could not be saved: {error}"))
    })?;
    Ok(saved.display().to_string())
}

/// Writes `bytes` to `dir/name`, or `dir/name (2)` and so on when that exists; returns the path written.
fn write_new_file(dir: &Path, name: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let stem = name.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    let extension = name.extension().map(|extension| format!(".{}", extension.to_string_lossy())).unwrap_or_default();
    for attempt in 1..1000 {
        let candidate = if attempt == 1 { dir.join(name) } else { dir.join(format!("{stem} ({attempt}){extension}")) };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(mut file) => {
                file.write_all(bytes)?;
                file.sync_all()?;
                return Ok(candidate);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "too many files of that name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_file_never_overwrites_another() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = write_new_file(dir.path(), Path::new("users.csv"), b"one").expect("saved");
        let second = write_new_file(dir.path(), Path::new("users.csv"), b"two").expect("saved");
        assert_eq!(first, dir.path().join("users.csv"));
        assert_eq!(second, dir.path().join("users (2).csv"));
        assert_eq!(std::fs::read(&first).expect("readable"), b"one");
        assert_eq!(std::fs::read(&second).expect("readable"), b"two");
    }
}
