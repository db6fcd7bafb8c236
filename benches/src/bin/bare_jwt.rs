//! The floor of an authenticated request, for `benches/http.sh`: a bare axum server whose one route answers
//! 200 once the bearer token verifies as a TechHub access token (signature, kid, issuer, audience, lifetime),
//! and does nothing else (no store read, no middleware). `/api/v1/users/me` on the example server is measured
//! against it in the same run.
//!
//! ```text
//! TECHHUB_JWT_SECRET=... cargo run --release -p techhub-benches --bin bare_jwt -- --addr 127.0.0.1:18182
//! ```
//!
//! It verifies with the same key the example server signs with (`SigningKey::hs256("server", secret)`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use clap::Parser;
use techhub_core::TechHub;
use techhub_core::auth::{JwtKeys, SigningKey};
use techhub_store_memory::MemoryStore;

#[derive(Debug, Parser)]
#[command(about = "A bare axum server that only verifies TechHub access tokens")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:18182")]
    addr: SocketAddr,
}

async fn verify(State(hub): State<Arc<TechHub>>, headers: HeaderMap) -> StatusCode {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token.map(|token| hub.auth().verify_access_token(token)) {
        Some(Ok(_)) => StatusCode::OK,
        _ => StatusCode::UNAUTHORIZED,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let secret = std::env::var("TECHHUB_JWT_SECRET").map_err(|_| "set TECHHUB_JWT_SECRET (the server's secret)")?;
    let hub = TechHub::builder()
        .storage(MemoryStore::new())
        .jwt_keys(JwtKeys::new(SigningKey::hs256("server", secret.as_bytes())?))
        .build()?;
    let app = Router::new().route("/api/v1/users/me", get(verify)).with_state(Arc::new(hub));
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
