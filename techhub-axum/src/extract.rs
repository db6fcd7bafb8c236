//! Extractors whose rejections are problems: JSON bodies, queries, paths, and the bearer session.

use axum::extract::{FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use http::header;
use serde::de::DeserializeOwned;
use techhub_core::Actor;
use techhub_core::auth::Session;
use techhub_core::model::{Cursor, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, PageRequest};

use crate::problem::Problem;
use crate::state::AppState;

/// A JSON body: 415 without `application/json`, 400 when not JSON, 422 when not this request's shape
/// (unknown, missing or wrong-typed fields), 413 when over the body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// A query string; a malformed one is 422.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Path parameters; a segment that does not parse (not a UUID) is 404: it names nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            <axum::extract::Path<T> as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// The caller's session, from `Authorization: Bearer <access token>`: 401 (with `WWW-Authenticate`) when
/// missing, malformed, expired or revoked. The user is read fresh, so a disabled user is refused at once.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Session);

impl Authenticated {
    /// The actor to pass to services.
    pub fn actor(&self) -> Actor {
        self.0.actor
    }
}

/// The bearer token of a request, if it carries one.
pub(crate) fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

impl<S> FromRequestParts<S> for Authenticated
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer_token(parts).ok_or_else(|| Problem::unauthorized("a bearer access token is required"))?;
        Ok(Self(state.hub.auth().authenticate(token).await?))
    }
}

impl<S> OptionalFromRequestParts<S> for Authenticated
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if bearer_token(parts).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
    }
}

/// The core's page request for a list's `?limit=&cursor=`; a limit outside 1..=500 is a validation failure,
/// not silently changed.
pub(crate) fn page_request(limit: Option<usize>, cursor: Option<String>) -> Result<PageRequest, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(techhub_core::Error::invalid_field("limit", format!("limit must be 1..={MAX_PAGE_LIMIT}")).into());
    }
    Ok(match cursor {
        Some(cursor) => PageRequest::after(Cursor::from_client(cursor), limit),
        None => PageRequest::first(limit),
    })
}
