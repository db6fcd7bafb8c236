//! Who the client is: its address (the TCP peer, or behind trusted reverse proxies the right-most address
//! of `X-Forwarded-For` that is not one of them) and its user agent.
//!
//! `X-Forwarded-For` is believed only from a peer in [`HttpConfig::trusted_proxies`](crate::HttpConfig):
//! anyone can write the header, so from any other peer it is ignored. Walking it from the right, each
//! trusted proxy vouches for the hop before it; the first hop no trusted proxy is, is the client. The
//! left-most entries are whatever the client chose to send and are never believed.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::HeaderMap;
use http::request::Parts;

use crate::state::AppState;

/// The longest user agent kept (longer ones are cut, on a character boundary).
const MAX_USER_AGENT_CHARS: usize = 256;

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not an address or a CIDR like 10.0.0.0/8 or fd00::/8", self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let invalid = || CidrError(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|prefix| *prefix <= width).ok_or_else(invalid)?,
            None => width,
        };
        Ok(Self { network: mask(network, prefix), prefix })
    }
}

impl Cidr {
    /// Whether `address` is in this network (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.prefix) == self.network
    }
}

/// `address` with only its first `prefix` bits kept.
fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix.min(32)))) };
            IpAddr::V4(kept.into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix.min(128)))) };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else as is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The key a per-address limit counts under: an IPv4 address, or an IPv6 address's /64 (one subscriber
/// usually holds a whole /64, so counting single IPv6 addresses would let it rotate through 2^64 budgets).
pub(crate) fn limit_key(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => mask(IpAddr::V6(v6), 64),
        v4 => v4,
    }
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the right-most `X-Forwarded-For` hop
/// that is not one (if every hop is trusted, the left-most).
pub(crate) fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|cidr| cidr.contains(address));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An unreadable hop ends the walk: nothing before it can be vouched for.
        let Ok(address) = hop.parse::<IpAddr>().map(canonical) else { break };
        client = address;
        if !is_trusted(address) {
            break;
        }
    }
    client
}

/// The caller's address and user agent, as far as the server can tell (for sessions and the audit log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (see the module docs); `None` when the server runs without connection info.
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header, cut to 256 characters.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// Reads it from a request's parts.
    pub(crate) fn of(parts: &Parts, trusted: &[Cidr]) -> Self {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
        let user_agent = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect::<String>())
            .filter(|agent| !agent.is_empty());
        Self { ip: peer.map(|peer| resolve(peer, &parts.headers, trusted)), user_agent }
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &state.config.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).expect("a header"));
        headers
    }

    #[test]
    fn ipv6_peers_are_limited_per_64_and_ipv4_per_address() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_ne!(limit_key(ip("192.0.2.1")), limit_key(ip("192.0.2.2")));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"), "a mapped IPv4 address is that address");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_right_to_left() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"].iter().map(|text| text.parse().expect("cidr")).collect();
        // An untrusted peer's header is ignored, whatever it says.
        assert_eq!(resolve(ip("203.0.113.9"), &forwarded("198.51.100.1"), &trusted), ip("203.0.113.9"));
        // A trusted proxy's: the right-most hop that is not a trusted proxy; a spoofed left part is ignored.
        let chain = forwarded("1.1.1.1, 198.51.100.7, 10.0.0.2");
        assert_eq!(resolve(ip("10.0.0.1"), &chain, &trusted), ip("198.51.100.7"));
        assert_eq!(resolve(ip("fd00::1"), &forwarded("2001:db8::5"), &trusted), ip("2001:db8::5"));
        // Unreadable hops stop the walk at the last vouched-for address.
        assert_eq!(resolve(ip("10.0.0.1"), &forwarded("198.51.100.7, garbage"), &trusted), ip("10.0.0.1"));
        // No proxies configured: never believed.
        assert_eq!(resolve(ip("10.0.0.1"), &chain, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn cidrs_parse_and_match() {
        let cidr: Cidr = "192.168.0.0/16".parse().expect("cidr");
        assert!(cidr.contains(ip("192.168.44.1")) && !cidr.contains(ip("192.169.0.1")));
        assert!(cidr.contains(ip("::ffff:192.168.1.1")));
        let single: Cidr = "2001:db8::1".parse().expect("an address");
        assert!(single.contains(ip("2001:db8::1")) && !single.contains(ip("2001:db8::2")));
        for bad in ["", "10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
