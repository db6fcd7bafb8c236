//! The SSRF guard: which addresses a webhook or Slack URL may reach.
//!
//! Loopback, private, link-local, CGNAT, multicast, documentation, benchmarking, reserved and unspecified
//! ranges, and IPv6 addresses that embed an IPv4 one (IPv4-mapped, IPv4-compatible, NAT64) judged by that IPv4
//! address, are refused unless the operator's allowlist names them. The check runs on every resolved address,
//! when an endpoint is created and again at every connect (the HTTP client's resolver asks it), so a name that
//! later resolves elsewhere is still refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::{Error, Result};

/// A CIDR block (`10.0.0.0/8`, `fd00::/8`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Whether `ip` is inside the block (IPv4 blocks never hold IPv6 addresses and the other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpBlock {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::invalid_input(format!("{text:?} is not an IP address or CIDR block"));
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|prefix| *prefix <= max).ok_or_else(invalid)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which special addresses the operator allows (`TECHHUB_WEBHOOK_ALLOW_PRIVATE`); public ones always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpBlock>,
}

impl AddressPolicy {
    /// Only public addresses.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Also allows the addresses in `block`.
    pub fn allow(mut self, block: IpBlock) -> Self {
        self.allowed.push(block);
        self
    }

    /// Also allows the loopback ranges (`127.0.0.0/8`, `::1`): for development and tests.
    pub fn allow_loopback(self) -> Self {
        self.allow(IpBlock { network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 })
            .allow(IpBlock { network: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 })
    }

    /// Parses a comma-separated list of CIDR blocks and the word `loopback`; an empty text allows nothing.
    pub fn parse(text: &str) -> Result<Self> {
        text.split(',').map(str::trim).filter(|part| !part.is_empty()).try_fold(Self::default(), |policy, part| {
            if part.eq_ignore_ascii_case("loopback") {
                Ok(policy.allow_loopback())
            } else {
                Ok(policy.allow(part.parse()?))
            }
        })
    }

    /// Whether a connection to `ip` is allowed: a public address, or one the allowlist names.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = embedded_ipv4(ip).map_or(ip, IpAddr::V4);
        !is_special(ip) || self.allowed.iter().any(|block| block.contains(ip))
    }

    /// `Ok` if `ip` is permitted, else an `InvalidInput` on `url` that names the address.
    pub fn check(&self, ip: IpAddr) -> Result<()> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Error::invalid_field("url", format!("the address {ip} is private or special and is not allowed")))
        }
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or NAT64
/// (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let low = Ipv4Addr::from(u32::try_from(u128::from(v6) & 0xffff_ffff).unwrap_or_default());
    let compatible = segments[..6].iter().all(|segment| *segment == 0) && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compatible || nat64).then_some(low)
}

/// Whether `ip` is anything but a public unicast address.
fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || a == 0 // "this network"
                || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
                || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18.0.0/15
                || a >= 240 // reserved 240.0.0.0/4
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation 2001:db8::/32
                || first == 0x0100 && v6.segments()[1..4] == [0, 0, 0] // discard 100::/64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    #[test]
    fn special_ranges_are_refused_and_public_ones_pass() {
        let policy = AddressPolicy::public_only();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused} passed");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"] {
            assert!(policy.permits(ip(public)), "{public} was refused");
        }
    }

    #[test]
    fn the_allowlist_opens_only_what_it_names() {
        let policy = AddressPolicy::parse("loopback, 10.0.0.0/8").expect("valid");
        assert!(policy.permits(ip("127.0.0.1")) && policy.permits(ip("::1")) && policy.permits(ip("10.9.9.9")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")));
        assert!(!policy.permits(ip("192.168.0.1")) && !policy.permits(ip("169.254.169.254")));
        assert!(AddressPolicy::parse("10.0.0.0/33").is_err() && AddressPolicy::parse("nope").is_err());
        assert_eq!(AddressPolicy::parse(" ").expect("valid"), AddressPolicy::public_only());
    }
}
