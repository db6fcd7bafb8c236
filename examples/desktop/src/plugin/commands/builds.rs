//! Builds: listing, starting and cancelling them, and reading their logs.

use tauri::State;
use techhub_core::builds::{LogPage, LogQuery, NewBuild};
use techhub_core::model::{Build, BuildFilter, BuildId, Cursor, Page};

use super::page;
use crate::plugin::error::CommandError;
use crate::plugin::state::HubState;

/// A page of builds (a user's own; an admin's all), newest first, optionally of one `project`.
#[tauri::command]
pub(crate) async fn list_builds(
    state: State<'_, HubState>,
    project: Option<String>,
    cursor: Option<Cursor>,
) -> Result<Page<Build>, CommandError> {
    let session = state.session().await?;
    let filter = BuildFilter { project, ..BuildFilter::default() };
    Ok(state.hub().builds().list(&session.actor, filter, &page(cursor)).await?)
}

/// Creates (and queues) a build.
#[tauri::command]
pub(crate) async fn create_build(state: State<'_, HubState>, spec: NewBuild) -> Result<Build, CommandError> {
    let session = state.session().await?;
    Ok(state.hub().builds().create(&session.actor, spec).await?)
}

/// Cancels a build.
#[tauri::command]
pub(crate) async fn cancel_build(state: State<'_, HubState>, build_id: BuildId) -> Result<Build, CommandError> {
    let session = state.session().await?;
    Ok(state.hub().builds().cancel(&session.actor, build_id).await?)
}

/// Log lines of a build (optionally of one module) from `offset`.
#[tauri::command]
pub(crate) async fn read_build_log(
    state: State<'_, HubState>,
    build_id: BuildId,
    module: Option<String>,
    offset: Option<u64>,
) -> Result<LogPage, CommandError> {
    let session = state.session().await?;
    let query = LogQuery { module, offset: offset.unwrap_or(0), limit: None };
    Ok(state.hub().builds().read_log(&session.actor, build_id, &query).await?)
}
