//! Registering, signing in and out, and who is signed in; and `watch`, which hands the window's live channel
//! over. The tokens stay in [`HubState`]: no command returns them.

use tauri::ipc::Channel;
use tauri::{AppHandle, Emitter, Runtime, State};
use techhub_core::model::User;
use techhub_core::users::Registration;

use crate::plugin::error::CommandError;
use crate::plugin::live::{EventView, SESSION_EVENT};
use crate::plugin::state::HubState;

/// Creates an account (anyone may); sign in afterwards.
#[tauri::command]
pub(crate) async fn register(
    state: State<'_, HubState>,
    email: String,
    password: String,
    name: Option<String>,
) -> Result<User, CommandError> {
    Ok(state.hub().users().register(Registration { email, password, name }).await?)
}

/// Signs in, replacing any session; the window learns the user (also through `techhub:session`).
#[tauri::command]
pub(crate) async fn sign_in<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, HubState>,
    email: String,
    password: String,
) -> Result<User, CommandError> {
    let session = state.sign_in(&email, &password).await?;
    let _ = app.emit(SESSION_EVENT, &session.user);
    Ok(session.user)
}

/// Signs out (the session is revoked in the store).
#[tauri::command]
pub(crate) async fn sign_out<R: Runtime>(app: AppHandle<R>, state: State<'_, HubState>) -> Result<(), CommandError> {
    state.sign_out().await?;
    let _ = app.emit(SESSION_EVENT, ());
    Ok(())
}

/// The signed-in user as stored now, or `null`.
#[tauri::command]
pub(crate) async fn current_user(state: State<'_, HubState>) -> Result<Option<User>, CommandError> {
    match state.session().await {
        Ok(session) => Ok(Some(session.user)),
        Err(error) if error.code == "not_signed_in" => Ok(None),
        Err(error) => Err(error),
    }
}

/// Hands over a channel for the signed-in user's progress and log events (see `live`).
#[tauri::command]
pub(crate) fn watch(state: State<'_, HubState>, channel: Channel<EventView>) {
    state.add_channel(channel);
}
