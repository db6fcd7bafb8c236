//! `/api/v1/users/{id}/sessions`: a user's sign-in sessions, listed and revoked (the user itself or an
//! admin; rights are checked by the core). A revoked session's access tokens stop working at the next
//! request, and its event sockets close.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use techhub_core::auth::SessionInfo;
use techhub_core::model::{TokenFamilyId, UserId};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{ApiPath, Authenticated};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

/// A live sign-in session. Never a token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// The session's id.
    pub id: Uuid,
    /// When the user signed in.
    pub started_at: DateTime<Utc>,
    /// When the session was last refreshed.
    pub refreshed_at: DateTime<Utc>,
    /// When it ends unless refreshed.
    pub expires_at: DateTime<Utc>,
    /// The user agent that signed in, when known.
    pub user_agent: Option<String>,
    /// The address that signed in, when known.
    pub ip: Option<String>,
    /// Whether it is the session of the request's own access token.
    pub current: bool,
}

impl SessionView {
    fn of(info: SessionInfo, current: TokenFamilyId) -> Self {
        Self {
            id: *info.id.as_uuid(),
            started_at: info.started_at,
            refreshed_at: info.refreshed_at,
            expires_at: info.expires_at,
            user_agent: info.user_agent,
            ip: info.ip.map(|ip| ip.to_string()),
            current: info.id == current,
        }
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_sessions, revoke_all_sessions)).routes(routes!(revoke_session))
}

/// A user's live sessions (the user itself, or an admin).
#[utoipa::path(get, path = "/api/v1/users/{id}/sessions", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 200, description = "The live sessions, oldest first", body = Vec<SessionView>),
              (status = 404, description = "No such user (or not yours)", body = Problem)))]
async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<axum::Json<Vec<SessionView>>> {
    let sessions = state.hub.auth().sessions(&session.actor, id).await?;
    Ok(axum::Json(sessions.into_iter().map(|info| SessionView::of(info, session.session_id)).collect()))
}

/// Ends one session of a user; its access tokens stop working at once.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions/{session_id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id"),
           ("session_id" = Uuid, Path, description = "The session's id")),
    responses((status = 204, description = "Ended"),
              (status = 404, description = "No such session (or not yours)", body = Problem)))]
async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiPath((id, session_id)): ApiPath<(UserId, TokenFamilyId)>,
) -> ApiResult<StatusCode> {
    state.hub.auth().revoke_session(&session.actor, id, session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of a user, the caller's own included.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 204, description = "Ended"),
              (status = 404, description = "No such user (or not yours)", body = Problem)))]
async fn revoke_all_sessions(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<StatusCode> {
    state.hub.auth().revoke_all_sessions(&session.actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
