//! `GET /api/v1/audit`: the audit log (admins). The core records it; this only reads it.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use techhub_core::model::{AuditAction, AuditEntry, AuditFilter, UserId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{ApiQuery, Authenticated, page_request};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;
use crate::views::PageView;

/// Filters of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only entries about this user, or done by it.
    #[param(value_type = Option<Uuid>)]
    pub user_id: Option<UserId>,
    /// Only this action (`login.failed`, `user.updated`, ...).
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One audit entry. Never a password, token or secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntryView {
    /// Its id.
    pub id: Uuid,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened (`login.succeeded`, `user.updated`, ...).
    pub action: String,
    /// Who did it (`null`: the system or an anonymous caller).
    pub actor_id: Option<Uuid>,
    /// The account it was done to.
    pub user_id: Option<Uuid>,
    /// The caller's address, when known.
    pub ip: Option<String>,
    /// The caller's user agent, when known.
    pub user_agent: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// Details, shaped per action.
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: *entry.id.as_uuid(),
            at: entry.at,
            action: entry.action.as_str().to_owned(),
            actor_id: entry.actor_id.map(Into::into),
            user_id: entry.user_id.map(Into::into),
            ip: entry.ip.map(|ip| ip.to_string()),
            user_agent: entry.user_agent,
            outcome: match entry.outcome {
                techhub_core::model::AuditOutcome::Success => "success".to_owned(),
                techhub_core::model::AuditOutcome::Failure => "failure".to_owned(),
            },
            detail: entry.detail,
        }
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// The audit log, oldest first (admins).
#[utoipa::path(get, path = "/api/v1/audit", tag = "users", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "A page of audit entries", body = PageView<AuditEntryView>),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 422, description = "An unknown action or a bad cursor", body = Problem)))]
async fn list_audit(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<axum::Json<PageView<AuditEntryView>>> {
    let page = page_request(query.limit, query.cursor)?;
    let action = query.action.as_deref().map(str::parse::<AuditAction>).transpose()?;
    let filter = AuditFilter { user_id: query.user_id, action, since: query.since };
    let entries = state.hub.audit().list(&session.actor, &filter, &page).await?;
    Ok(axum::Json(PageView::of(entries)))
}
