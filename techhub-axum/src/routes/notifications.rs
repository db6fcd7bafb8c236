//! `/api/v1/notifications`: endpoints (webhook and Slack targets), notifications and their delivery log,
//! resends, templates and statistics. Admins only; the core checks it. Secrets are shown only in the answers
//! of creation and rotation, bodies never.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::header;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use techhub_core::model::{
    Channel, Delivery, Endpoint, EndpointId, EndpointKind, Notification, NotificationFilter, NotificationId,
    NotificationStatus, redact_url,
};
use techhub_core::notify::{ChannelStats, EndpointPatch, NewEndpoint, TemplateInfo};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::accepted;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, page_request};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;
use crate::views::{JobAccepted, PageView};

/// A webhook or Slack target. Its signing secrets are never shown here.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointView {
    /// Its id.
    pub id: Uuid,
    /// `webhook` or `slack`.
    #[schema(value_type = crate::schema_names::EndpointKindName, example = "webhook")]
    pub kind: EndpointKind,
    /// Where deliveries go, masked: a user name and password in it are shown as `***`, and the secret token
    /// of a Slack endpoint's URL (its last path segment: `https://hooks.slack.com/services/T…/B…/****`) as
    /// `****`. No response shows a Slack URL in full, not even the answer to its creation.
    pub url: String,
    /// What it is for.
    pub description: String,
    /// The event types it receives.
    pub event_types: Vec<String>,
    /// Whether deliveries go to it.
    pub enabled: bool,
    /// Why it was disabled automatically (410, or failing for the whole window), if it was.
    pub disabled_reason: Option<String>,
    /// Consecutive failed attempts.
    pub failure_streak: u32,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for EndpointView {
    fn from(endpoint: Endpoint) -> Self {
        Self {
            id: *endpoint.id.as_uuid(),
            kind: endpoint.kind,
            url: endpoint.redacted_url(),
            description: endpoint.description,
            event_types: endpoint.event_types,
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason,
            failure_streak: endpoint.failure_streak,
            failing_since: endpoint.failing_since,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

/// A new endpoint and, for webhooks, its signing secret: shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedEndpointView {
    /// The endpoint.
    pub endpoint: EndpointView,
    /// The `whsec_…` signing secret (webhooks); `null` for Slack.
    pub secret: Option<String>,
}

/// A new signing secret, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretView {
    /// The `whsec_…` secret; the previous one keeps signing beside it for 24 h.
    pub secret: String,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// When it began.
    pub at: DateTime<Utc>,
    /// The HTTP status the receiver answered, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        Self {
            at: delivery.at,
            status_code: delivery.status_code,
            error: delivery.error,
            duration_ms: delivery.duration_ms,
        }
    }
}

/// A notification (never its body), and with `GET /api/v1/notifications/{id}` its delivery attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationView {
    /// Its id (the `webhook-id` of webhook deliveries).
    pub id: Uuid,
    /// `email`, `webhook`, `slack` or `log`.
    #[schema(value_type = crate::schema_names::ChannelName, example = "webhook")]
    pub channel: Channel,
    /// An email address, or the id of a webhook or Slack endpoint.
    pub recipient: String,
    /// The subject line.
    pub subject: String,
    /// The template it was rendered from.
    pub template: Option<String>,
    /// `pending`, `sent` or `failed`.
    #[schema(value_type = crate::schema_names::NotificationStatusName, example = "sent")]
    pub status: NotificationStatus,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The event type that caused it.
    pub event_type: Option<String>,
    /// One entry per attempt (only on the single-notification read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryView>>,
}

impl NotificationView {
    fn of(notification: Notification, with_deliveries: bool) -> Self {
        Self {
            id: *notification.id.as_uuid(),
            channel: notification.channel,
            recipient: redact_url(&notification.recipient),
            subject: notification.subject,
            template: notification.template,
            status: notification.status,
            attempts: notification.attempts,
            created_at: notification.created_at,
            sent_at: notification.sent_at,
            last_error: notification.last_error,
            event_type: notification.event_type,
            deliveries: with_deliveries.then(|| notification.deliveries.into_iter().map(DeliveryView::from).collect()),
        }
    }
}

impl From<Notification> for NotificationView {
    fn from(notification: Notification) -> Self {
        Self::of(notification, false)
    }
}

/// A template.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    /// Its id.
    pub id: String,
    /// The channels it renders for.
    #[schema(value_type = Vec<crate::schema_names::ChannelName>)]
    pub channels: Vec<Channel>,
    /// The variables its `data` must give.
    pub variables: Vec<String>,
    /// What it is for.
    pub description: String,
}

impl From<TemplateInfo> for TemplateView {
    fn from(info: TemplateInfo) -> Self {
        Self { id: info.id, channels: info.channels, variables: info.variables, description: info.description }
    }
}

/// Notifications of one channel by status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelStatsView {
    /// The channel.
    #[schema(value_type = crate::schema_names::ChannelName, example = "email")]
    pub channel: Channel,
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered.
    pub sent: u64,
    /// Given up on.
    pub failed: u64,
}

impl From<ChannelStats> for ChannelStatsView {
    fn from(stats: ChannelStats) -> Self {
        Self { channel: stats.channel, pending: stats.pending, sent: stats.sent, failed: stats.failed }
    }
}

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEndpointRequest {
    /// `webhook` or `slack`.
    #[schema(value_type = crate::schema_names::EndpointKindName, example = "webhook")]
    kind: EndpointKind,
    /// An http(s) URL reaching a public address (unless the operator allows private ones).
    url: String,
    /// What it is for.
    #[serde(default)]
    description: Option<String>,
    /// The event types it receives (`build.failed`, `job.failed`, ...).
    event_types: Vec<String>,
}

/// Changes to an endpoint (absent fields stay).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchEndpointRequest {
    /// A new description.
    #[serde(default)]
    description: Option<String>,
    /// New event types.
    #[serde(default)]
    event_types: Option<Vec<String>>,
    /// Enable (clears the failure streak) or disable it.
    #[serde(default)]
    enabled: Option<bool>,
}

/// A direct message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// `email`, `webhook`, `slack` or `log`.
    #[schema(value_type = crate::schema_names::ChannelName, example = "email")]
    channel: Channel,
    /// An email address, or the id of a webhook or Slack endpoint.
    recipient: String,
    /// The subject line.
    subject: String,
    /// The body (for webhooks, the JSON `data`).
    body: String,
}

/// A message from a template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendTemplateRequest {
    /// `email`, `webhook`, `slack` or `log`.
    #[schema(value_type = crate::schema_names::ChannelName, example = "email")]
    channel: Channel,
    /// An email address, or the id of a webhook or Slack endpoint.
    recipient: String,
    /// The template's variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Value,
    /// A locale (`fr`, `fr-CA`); variants fall back to the language, then to the default.
    #[serde(default)]
    locale: Option<String>,
}

/// Filters of the notification list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NotificationQuery {
    /// Only this channel (`email`, `webhook`, `slack`, `log`).
    #[param(value_type = Option<crate::schema_names::ChannelName>)]
    channel: Option<Channel>,
    /// Only this status (`pending`, `sent`, `failed`).
    #[param(value_type = Option<crate::schema_names::NotificationStatusName>)]
    status: Option<NotificationStatus>,
    /// Items per page (default 50, at most 500).
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, patch_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_notifications, send_notification))
        .routes(routes!(get_notification))
        .routes(routes!(resend))
        .routes(routes!(list_templates))
        .routes(routes!(send_template))
        .routes(routes!(stats))
}

/// Creates a webhook or Slack endpoint; a webhook's signing secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/notifications/endpoints", tag = "notifications", security(("bearer" = [])),
    request_body = CreateEndpointRequest,
    responses((status = 201, description = "Created, with the secret shown once", body = CreatedEndpointView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 422, description = "A bad or private URL, or an unknown event type", body = Problem)))]
async fn create_endpoint(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(request): ApiJson<CreateEndpointRequest>,
) -> ApiResult<Response> {
    let new = NewEndpoint {
        kind: request.kind,
        url: request.url,
        description: request.description.unwrap_or_default(),
        event_types: request.event_types,
    };
    let (endpoint, secret) = state.hub.notifications().create_endpoint(&session.actor(), new).await?;
    let location = format!("/api/v1/notifications/endpoints/{}", endpoint.id);
    let view =
        CreatedEndpointView { endpoint: endpoint.into(), secret: secret.map(|secret| secret.expose().to_owned()) };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::CACHE_CONTROL, "no-store".to_owned())],
        axum::Json(view),
    )
        .into_response())
}

/// Every endpoint, oldest first.
#[utoipa::path(get, path = "/api/v1/notifications/endpoints", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "The endpoints", body = Vec<EndpointView>),
              (status = 403, description = "Not an admin", body = Problem)))]
async fn list_endpoints(
    State(state): State<AppState>,
    session: Authenticated,
) -> ApiResult<axum::Json<Vec<EndpointView>>> {
    let endpoints = state.hub.notifications().list_endpoints(&session.actor()).await?;
    Ok(axum::Json(endpoints.into_iter().map(EndpointView::from).collect()))
}

/// One endpoint.
#[utoipa::path(get, path = "/api/v1/notifications/endpoints/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = EndpointView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such endpoint", body = Problem)))]
async fn get_endpoint(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<EndpointId>,
) -> ApiResult<axum::Json<EndpointView>> {
    Ok(axum::Json(state.hub.notifications().get_endpoint(&session.actor(), id).await?.into()))
}

/// Changes an endpoint's description, event types or enabled flag.
#[utoipa::path(patch, path = "/api/v1/notifications/endpoints/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The endpoint's id")), request_body = PatchEndpointRequest,
    responses((status = 200, description = "The endpoint", body = EndpointView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such endpoint", body = Problem),
              (status = 422, description = "An unknown event type", body = Problem)))]
async fn patch_endpoint(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<EndpointId>,
    ApiJson(request): ApiJson<PatchEndpointRequest>,
) -> ApiResult<axum::Json<EndpointView>> {
    let patch =
        EndpointPatch { description: request.description, event_types: request.event_types, enabled: request.enabled };
    Ok(axum::Json(state.hub.notifications().update_endpoint(&session.actor(), id, patch).await?.into()))
}

/// Deletes an endpoint; its pending deliveries stop.
#[utoipa::path(delete, path = "/api/v1/notifications/endpoints/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such endpoint", body = Problem)))]
async fn delete_endpoint(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<EndpointId>,
) -> ApiResult<StatusCode> {
    state.hub.notifications().delete_endpoint(&session.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a webhook endpoint a new signing secret (shown once); the old one signs beside it for 24 h.
#[utoipa::path(post, path = "/api/v1/notifications/endpoints/{id}/rotate-secret", tag = "notifications",
    security(("bearer" = [])), params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The new secret", body = SecretView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such endpoint", body = Problem),
              (status = 422, description = "A Slack endpoint has no secret", body = Problem)))]
async fn rotate_secret(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<EndpointId>,
) -> ApiResult<Response> {
    let secret = state.hub.notifications().rotate_secret(&session.actor(), id).await?;
    let view = SecretView { secret: secret.expose().to_owned() };
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(view)).into_response())
}

/// A page of notifications, oldest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(NotificationQuery),
    responses((status = 200, description = "A page of notifications", body = PageView<NotificationView>),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 422, description = "A bad filter or cursor", body = Problem)))]
async fn list_notifications(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> ApiResult<axum::Json<PageView<NotificationView>>> {
    let page = page_request(query.limit, query.cursor)?;
    let filter = NotificationFilter { channel: query.channel, status: query.status };
    let notifications = state.hub.notifications().list(&session.actor(), &filter, &page).await?;
    Ok(axum::Json(PageView::of(notifications)))
}

/// Queues a message with a subject and a body.
#[utoipa::path(post, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])),
    request_body = SendRequest,
    responses((status = 202, description = "Queued", body = NotificationView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 422, description = "A bad recipient, subject or body", body = Problem)))]
async fn send_notification(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(request): ApiJson<SendRequest>,
) -> ApiResult<Response> {
    let notification = state
        .hub
        .notifications()
        .send(&session.actor(), request.channel, &request.recipient, &request.subject, &request.body)
        .await?;
    Ok(queued(notification))
}

fn queued(notification: Notification) -> Response {
    let location = format!("/api/v1/notifications/{}", notification.id);
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(NotificationView::from(notification)))
        .into_response()
}

/// One notification with its delivery attempts.
#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses((status = 200, description = "The notification and its deliveries", body = NotificationView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such notification", body = Problem)))]
async fn get_notification(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<NotificationId>,
) -> ApiResult<axum::Json<NotificationView>> {
    let notification = state.hub.notifications().get(&session.actor(), id).await?;
    Ok(axum::Json(NotificationView::of(notification, true)))
}

/// Sends a failed notification again (same webhook id, a fresh attempt budget).
#[utoipa::path(post, path = "/api/v1/notifications/{id}/resend", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The notification's id")),
    responses((status = 202, description = "Queued again", body = JobAccepted),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such notification", body = Problem),
              (status = 409, description = "Already delivered", body = Problem)))]
async fn resend(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<NotificationId>,
) -> ApiResult<Response> {
    let job = state.hub.notifications().resend(&session.actor(), id).await?;
    Ok(accepted(job.id))
}

/// The templates, with their channels and variables.
#[utoipa::path(get, path = "/api/v1/notifications/templates", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "The templates", body = Vec<TemplateView>),
              (status = 403, description = "Not an admin", body = Problem)))]
async fn list_templates(
    State(state): State<AppState>,
    session: Authenticated,
) -> ApiResult<axum::Json<Vec<TemplateView>>> {
    let templates = state.hub.notifications().templates(&session.actor())?;
    Ok(axum::Json(templates.into_iter().map(TemplateView::from).collect()))
}

/// Renders a template and queues it.
#[utoipa::path(post, path = "/api/v1/notifications/template/{template_id}", tag = "notifications",
    security(("bearer" = [])), params(("template_id" = String, Path, description = "The template's id")),
    request_body = SendTemplateRequest,
    responses((status = 202, description = "Queued", body = NotificationView),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 404, description = "No such template", body = Problem),
              (status = 422, description = "A missing variable (named), or a bad recipient", body = Problem)))]
async fn send_template(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(template_id): ApiPath<String>,
    ApiJson(request): ApiJson<SendTemplateRequest>,
) -> ApiResult<Response> {
    let notification = state
        .hub
        .notifications()
        .send_template(
            &session.actor(),
            &template_id,
            request.channel,
            &request.recipient,
            &request.data,
            request.locale.as_deref(),
        )
        .await?;
    Ok(queued(notification))
}

/// Notifications per channel and status.
#[utoipa::path(get, path = "/api/v1/notifications/stats", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "Counts per channel", body = Vec<ChannelStatsView>),
              (status = 403, description = "Not an admin", body = Problem)))]
async fn stats(State(state): State<AppState>, session: Authenticated) -> ApiResult<axum::Json<Vec<ChannelStatsView>>> {
    let stats = state.hub.notifications().stats(&session.actor()).await?;
    Ok(axum::Json(stats.into_iter().map(ChannelStatsView::from).collect()))
}
