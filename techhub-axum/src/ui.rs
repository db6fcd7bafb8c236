//! The browser pages (feature `dashboard`): the API reference at `/docs` (Swagger UI reading
//! `/api/v1/openapi.json`) and the operations dashboard at `/dashboard`. Every file is compiled into the
//! binary: no CDN and no network at run time, and no Node.js to build the crate.
//!
//! Each page has a strict Content-Security-Policy: scripts only from this origin (no inline script, no
//! `eval`), connections only to this origin (the API and its WebSocket), no frames, no forms posted elsewhere.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, header};

use crate::problem::Problem;
use crate::state::AppState;

/// The dashboard's policy: nothing inline at all.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// The reference's policy: Swagger UI (React) sets element styles, so inline styles are allowed there; scripts
/// stay this origin's files only.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file compiled in.
struct Asset {
    /// Its path under the page's prefix.
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($dir:literal, $path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $dir, "/", $path)),
        }
    };
}

static DOCS: &[Asset] = &[
    asset!("docs", "index.html", "text/html; charset=utf-8"),
    asset!("docs", "docs.js", "text/javascript; charset=utf-8"),
    asset!("docs", "docs.css", "text/css; charset=utf-8"),
    asset!("docs", "vendor/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    asset!("docs", "vendor/swagger-ui.css", "text/css; charset=utf-8"),
    asset!("docs", "vendor/LICENSE", "text/plain; charset=utf-8"),
];

static DASHBOARD: &[Asset] = &[
    asset!("dashboard", "index.html", "text/html; charset=utf-8"),
    asset!("dashboard", "app.css", "text/css; charset=utf-8"),
    asset!("dashboard", "app.js", "text/javascript; charset=utf-8"),
    asset!("dashboard", "api.js", "text/javascript; charset=utf-8"),
    asset!("dashboard", "live.js", "text/javascript; charset=utf-8"),
    asset!("dashboard", "dom.js", "text/javascript; charset=utf-8"),
    asset!("dashboard", "views.js", "text/javascript; charset=utf-8"),
    asset!("dashboard", "chart.js", "text/javascript; charset=utf-8"),
    asset!("dashboard", "notifications.js", "text/javascript; charset=utf-8"),
];

/// The pages' routes (not in the OpenAPI document: they are not API).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(|| async { serve(DOCS, DOCS_CSP, "index.html") }))
        .route("/docs/{*path}", get(|Path(path): Path<String>| async move { serve(DOCS, DOCS_CSP, &path) }))
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(|| async { serve(DASHBOARD, DASHBOARD_CSP, "index.html") }))
        .route(
            "/dashboard/{*path}",
            get(|Path(path): Path<String>| async move { serve(DASHBOARD, DASHBOARD_CSP, &path) }),
        )
}

/// The file at `path` of `assets`, with its type and the page's policy; 404 if there is none.
fn serve(assets: &'static [Asset], policy: &'static str, path: &str) -> Response {
    let Some(asset) = assets.iter().find(|asset| asset.path == path) else {
        return Problem::no_route().into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy)),
        // Revalidated each time: a new binary's files are seen at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, asset.bytes).into_response()
}
