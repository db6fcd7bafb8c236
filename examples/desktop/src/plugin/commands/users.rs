//! Managing users (the core lets admins do it; a user may read and rename only itself).

use tauri::State;
use techhub_core::model::{Cursor, Page, User, UserFilter, UserId};
use techhub_core::users::UserPatch;

use super::page;
use crate::plugin::error::CommandError;
use crate::plugin::state::HubState;

/// A page of users, optionally only those matching `query` (email or name).
#[tauri::command]
pub(crate) async fn list_users(
    state: State<'_, HubState>,
    query: Option<String>,
    cursor: Option<Cursor>,
) -> Result<Page<User>, CommandError> {
    let session = state.session().await?;
    let filter = UserFilter { query, ..UserFilter::default() };
    Ok(state.hub().users().list(&session.actor, &filter, &page(cursor)).await?)
}

/// Changes a user (name; and for admins email, role, active), optionally only at `expected_version`.
#[tauri::command]
pub(crate) async fn update_user(
    state: State<'_, HubState>,
    user_id: UserId,
    patch: UserPatch,
    expected_version: Option<u64>,
) -> Result<User, CommandError> {
    let session = state.session().await?;
    Ok(state.hub().users().update(&session.actor, user_id, patch, expected_version).await?)
}

/// Deletes a user.
#[tauri::command]
pub(crate) async fn delete_user(state: State<'_, HubState>, user_id: UserId) -> Result<(), CommandError> {
    let session = state.session().await?;
    Ok(state.hub().users().delete(&session.actor, user_id).await?)
}
