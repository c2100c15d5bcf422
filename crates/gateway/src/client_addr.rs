//! Who is on the other end of a request: the client's IP address (for accounts'
//! throttling) and whether it came over HTTPS (for the `Secure` cookie attribute), given
//! the proxies this gateway trusts (`CHAT_TRUSTED_PROXIES`).
//!
//! A proxy's headers are only believed when the TCP peer is one of the trusted proxies:
//! anyone else can send any `X-Forwarded-For` they like. Behind trusted proxies, the
//! client is the rightmost address of `X-Forwarded-For` that is not itself a trusted
//! proxy (the entries to its left were written by the client or by proxies we do not
//! know, so they prove nothing).

use std::net::{IpAddr, SocketAddr};

use actix_web::HttpRequest;

/// The header proxies append the address they received a request from to.
const FORWARDED_FOR: &str = "x-forwarded-for";
/// The header a TLS-terminating proxy sets to `https`.
const FORWARDED_PROTO: &str = "x-forwarded-proto";

/// One IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `CHAT_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` and `X-Forwarded-Proto`
/// this gateway believes. Empty (the default): none, the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// Parses a comma-separated list of IP addresses (`172.30.80.10`, `::1`) and CIDR
    /// networks (`10.0.0.0/8`, `fd00::/8`). An empty list trusts no proxy.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or a CIDR network"))?;
            let addr = addr.to_canonical();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?,
            };
            networks.push(Network { addr, prefix });
        }
        Ok(Self(networks))
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address, from the TCP `peer` and the `X-Forwarded-For` values (in
    /// header order): the peer unless it is a trusted proxy; else, walking the list from
    /// the right, the first address that is not a trusted proxy (the leftmost when all
    /// are; the last trusted hop when an entry is not an address).
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops: Vec<&str> = forwarded_for
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(addr) = parse_hop(hop) else {
                break;
            };
            client = addr;
            if !self.contains(client) {
                break;
            }
        }
        client
    }

    /// The client's address for `req` (see [`TrustedProxies::client_addr`]); `None` when
    /// the peer address is unknown (a test request).
    pub fn client_addr_of(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let values = req
            .headers()
            .get_all(FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok());
        Some(self.client_addr(peer, values))
    }

    /// Whether `req` reached the client's side over HTTPS: a TLS listener, or
    /// `X-Forwarded-Proto: https` from a trusted proxy.
    pub fn is_https(&self, req: &HttpRequest) -> bool {
        if req.app_config().secure() {
            return true;
        }
        let from_proxy = req.peer_addr().is_some_and(|p| self.contains(p.ip()));
        from_proxy
            && req
                .headers()
                .get(FORWARDED_PROTO)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn parses_addresses_and_networks() {
        let trusted =
            TrustedProxies::parse(" 172.30.80.10, 10.0.0.0/8 ,fd00::/8,::1").expect("valid");
        assert!(trusted.contains(ip("172.30.80.10")));
        assert!(!trusted.contains(ip("172.30.80.11")));
        assert!(trusted.contains(ip("10.255.1.2")));
        assert!(!trusted.contains(ip("11.0.0.1")));
        assert!(trusted.contains(ip("fd12:3456::1")));
        assert!(!trusted.contains(ip("fe80::1")));
        assert!(trusted.contains(ip("::1")));
        // An IPv4 peer seen through a dual-stack socket.
        assert!(trusted.contains(ip("::ffff:172.30.80.10")));
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        let everything = TrustedProxies::parse("0.0.0.0/0").expect("valid");
        assert!(everything.contains(ip("203.0.113.9")));
        assert!(!everything.contains(ip("2001:db8::1")));
        for bad in [
            "nginx",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "1.2.3.4/x",
        ] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = TrustedProxies::parse("172.30.80.10").expect("valid");
        assert_eq!(
            trusted.client_addr(ip("198.51.100.7"), ["203.0.113.1"]),
            ip("198.51.100.7")
        );
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_addr(ip("172.30.80.10"), ["203.0.113.1"]),
            ip("172.30.80.10")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::parse("172.30.80.10, 10.0.0.0/8").expect("valid");
        let proxy = ip("172.30.80.10");
        // nginx's single address.
        assert_eq!(
            trusted.client_addr(proxy, ["203.0.113.1"]),
            ip("203.0.113.1")
        );
        // A client that forges a first entry does not get it believed.
        assert_eq!(
            trusted.client_addr(proxy, ["1.2.3.4, 203.0.113.1"]),
            ip("203.0.113.1")
        );
        // Trusted hops on the right are skipped, over several headers too.
        assert_eq!(
            trusted.client_addr(proxy, ["1.2.3.4, 203.0.113.1", "10.1.2.3"]),
            ip("203.0.113.1")
        );
        // Ports and brackets.
        assert_eq!(
            trusted.client_addr(proxy, ["[2001:db8::5]:4711"]),
            ip("2001:db8::5")
        );
        assert_eq!(
            trusted.client_addr(proxy, ["203.0.113.1:80"]),
            ip("203.0.113.1")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            trusted.client_addr(proxy, ["10.0.0.1, 10.0.0.2"]),
            ip("10.0.0.1")
        );
        // No header: the proxy itself.
        assert_eq!(trusted.client_addr(proxy, []), proxy);
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(trusted.client_addr(proxy, ["203.0.113.1, nonsense"]), proxy);
        assert_eq!(
            trusted.client_addr(proxy, ["nonsense, 10.0.0.7"]),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn https_only_from_a_trusted_proxy() {
        use actix_web::test::TestRequest;
        let trusted = TrustedProxies::parse("172.30.80.10").expect("valid");
        let from = |peer: &str| {
            TestRequest::default()
                .peer_addr(SocketAddr::new(ip(peer), 40000))
                .insert_header(("X-Forwarded-Proto", "https"))
                .to_http_request()
        };
        assert!(trusted.is_https(&from("172.30.80.10")));
        assert!(!trusted.is_https(&from("198.51.100.7")));
        let plain = TestRequest::default()
            .peer_addr(SocketAddr::new(ip("172.30.80.10"), 40000))
            .to_http_request();
        assert!(!trusted.is_https(&plain));
        assert_eq!(trusted.client_addr_of(&plain), Some(ip("172.30.80.10")));
    }
}
