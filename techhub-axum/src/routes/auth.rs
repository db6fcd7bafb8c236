//! `/api/v1/auth/*`: sign-up, sign-in, token rotation, password reset and change, email verification.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http::header;
use serde::Deserialize;
use techhub_core::users::Registration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiJson, Authenticated};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;
use crate::views::{TokenPairView, UserView};

/// A sign-up.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    /// Email address.
    pub email: String,
    /// Password: at least 8 characters and at most 1024 bytes, not the email address, not a common password.
    pub password: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A refresh token presented for rotation or logout.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    /// The refresh token of the latest pair.
    pub refresh_token: String,
}

/// A request for a reset link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForgotRequest {
    /// The account's email address.
    pub email: String,
}

/// A password reset with the emailed token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetRequest {
    /// The token from the reset email.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

/// A password change by the signed-in user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeRequest {
    /// The current password.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// An email verification with the emailed token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyRequest {
    /// The token from the verification email.
    pub token: String,
}

/// The auth routes (their layers are added by the caller).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(change_password))
        .routes(routes!(verify_email))
}

/// Creates an account and sends the welcome (and verification) email.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, description = "Created", body = UserView),
              (status = 409, description = "Email taken", body = Problem),
              (status = 422, description = "Invalid", body = Problem)))]
async fn register(State(state): State<AppState>, ApiJson(request): ApiJson<RegisterRequest>) -> ApiResult<Response> {
    let registration = Registration { email: request.email, password: request.password, name: request.name };
    let user = state.hub.users().register(registration).await?;
    let location = format!("/api/v1/users/{}", user.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(UserView::from(user))).into_response())
}

/// Signs in: an access token and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Signed in", body = TokenPairView),
              (status = 401, description = "Wrong email or password", body = Problem),
              (status = 429, description = "Too many attempts", body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<axum::Json<TokenPairView>> {
    Ok(axum::Json(state.hub.auth().login(&request.email, &request.password).await?.into()))
}

/// Exchanges a refresh token for a new pair; the old one dies, and replaying it ends the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, description = "Rotated", body = TokenPairView),
              (status = 401, description = "Invalid, expired or replayed", body = Problem)))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> ApiResult<axum::Json<TokenPairView>> {
    Ok(axum::Json(state.hub.auth().refresh(&request.refresh_token).await?.into()))
}

/// Ends the session the refresh token belongs to.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out")))]
async fn logout(State(state): State<AppState>, ApiJson(request): ApiJson<RefreshRequest>) -> ApiResult<StatusCode> {
    state.hub.auth().logout(&request.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a reset link if the account exists; the answer is the same either way.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "auth", request_body = ForgotRequest,
    responses((status = 202, description = "Accepted")))]
async fn forgot_password(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ForgotRequest>,
) -> ApiResult<StatusCode> {
    state.hub.auth().request_password_reset(&request.email).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new password with a reset token (single use); every session of the user ends.
#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "auth", request_body = ResetRequest,
    responses((status = 204, description = "Password set"),
              (status = 401, description = "Invalid or expired token", body = Problem)))]
async fn reset_password(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ResetRequest>,
) -> ApiResult<StatusCode> {
    state.hub.auth().reset_password(&request.token, &request.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the signed-in user's password; its other sessions end.
#[utoipa::path(post, path = "/api/v1/auth/password/change", tag = "auth", request_body = ChangeRequest,
    security(("bearer" = [])),
    responses((status = 204, description = "Password changed"),
              (status = 401, description = "Not signed in or wrong current password", body = Problem)))]
async fn change_password(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(request): ApiJson<ChangeRequest>,
) -> ApiResult<StatusCode> {
    state.hub.auth().change_password(&session, &request.current_password, &request.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Confirms an email address with the emailed token.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "auth", request_body = VerifyRequest,
    responses((status = 204, description = "Verified"),
              (status = 401, description = "Invalid or expired token", body = Problem)))]
async fn verify_email(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> ApiResult<StatusCode> {
    state.hub.auth().verify_email(&request.token).await?;
    Ok(StatusCode::NO_CONTENT)
}
