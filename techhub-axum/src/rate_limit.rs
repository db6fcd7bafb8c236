//! Per-client-address rate limiting of the auth routes (a GCRA limiter from `governor`, keyed by IPv4
//! address or IPv6 /64).
//!
//! The client address is the TCP peer, from axum's `ConnectInfo` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`), or behind trusted proxies the hop they vouch for
//! (`client_address`); a forwarded header from any other peer is ignored, since anyone can write it.
//! Without `ConnectInfo` the per-address limit cannot apply and requests pass (the core's per-account
//! lockout still holds).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::client_address::{Cidr, limit_key, resolve};
use crate::problem::Problem;

/// A rate limiter keyed by client address.
pub(crate) struct AddressLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    trusted_proxies: Vec<Cidr>,
}

impl AddressLimiter {
    /// `per_minute` requests per minute per address, in a burst of up to that many; `None` when 0 (off).
    pub(crate) fn per_minute(per_minute: u32, trusted_proxies: Vec<Cidr>) -> Option<Arc<Self>> {
        let per_minute = NonZeroU32::new(per_minute)?;
        Some(Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            trusted_proxies,
        }))
    }

    /// `Ok` if `address` may go on, else how many seconds it should wait.
    pub(crate) fn check(&self, address: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&limit_key(address)).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets addresses whose budget is full again, so the table holds only recent clients.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Middleware of the auth routes: 429 with `Retry-After` once an address spent its budget.
pub(crate) async fn limit_by_address(
    State(limiter): State<Option<Arc<AddressLimiter>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(limiter) = &limiter
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(seconds) = limiter.check(resolve(peer.ip(), request.headers(), &limiter.trusted_proxies))
    {
        metrics::counter!("techhub_http_rate_limited_total").increment(1);
        return Problem::rate_limited(seconds).into_response();
    }
    next.run(request).await
}
