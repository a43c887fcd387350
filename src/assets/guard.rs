//! Address classification for the SSRF guard, and the operator's exceptions to it.
//!
//! Decides, for one IP address, whether the downloader may connect to it ([`classify`]), and
//! whether a host name or address the guard would refuse is explicitly allowed anyway
//! ([`PrivateHostPolicy`]). It is pure and has no idea where addresses come from: the resolver
//! and the URL check in `assets/mod.rs` call it for every address a host name resolves to and
//! for every IP literal, on every redirect hop. Parsing `ALLOW_PRIVATE_ASSET_HOSTS` into a
//! policy is the config's job, not this file's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is off limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedRange {
    Loopback,
    Private,
    LinkLocal,
    CloudMetadata,
    SharedAddressSpace,
    Multicast,
    Unspecified,
    Broadcast,
    Reserved,
}

impl BlockedRange {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private-network address",
            Self::LinkLocal => "a link-local address",
            Self::CloudMetadata => "a cloud metadata address",
            Self::SharedAddressSpace => "a carrier-grade NAT (100.64.0.0/10) address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "an unspecified address",
            Self::Broadcast => "the broadcast address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// Which hosts the asset downloader may reach even though they resolve to private, loopback or
/// link-local addresses. The default refuses them all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PrivateHostPolicy {
    #[default]
    Deny,
    /// `ALLOW_PRIVATE_ASSET_HOSTS=true`: anything goes (development only).
    AllowAll,
    /// A comma-separated list of host names, IP addresses or CIDR blocks, each optionally
    /// with a port.
    Allow(Vec<AllowedHost>),
}

/// One entry of the allow-list. `port: None` allows every port of the host; `Some(port)` only
/// that one, so a development allow-list can open one asset server without opening every
/// other service on the same host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    Name {
        name: String,
        port: Option<u16>,
    },
    Network {
        addr: IpAddr,
        prefix: u8,
        port: Option<u16>,
    },
}

/// Whether an entry's port allows a connection to `port`. An unknown port (`None`) is allowed
/// only by entries without a port.
fn port_matches(allowed: Option<u16>, port: Option<u16>) -> bool {
    allowed.is_none() || allowed == port
}

/// Returns the reason an address must not be contacted, or `None` for a public address.
pub fn classify(addr: IpAddr) -> Option<BlockedRange> {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(addr: Ipv4Addr) -> Option<BlockedRange> {
    let [a, b, c, d] = addr.octets();
    let range = match (a, b, c, d) {
        // Metadata endpoints first, so they get their own, more alarming label.
        (169, 254, 169, 254) | (100, 100, 100, 200) => BlockedRange::CloudMetadata,
        (0, ..) => BlockedRange::Unspecified,
        (127, ..) => BlockedRange::Loopback,
        (10, ..) | (192, 168, ..) => BlockedRange::Private,
        (172, 16..=31, ..) => BlockedRange::Private,
        (169, 254, ..) => BlockedRange::LinkLocal,
        (100, 64..=127, ..) => BlockedRange::SharedAddressSpace,
        (255, 255, 255, 255) => BlockedRange::Broadcast,
        (224..=239, ..) => BlockedRange::Multicast,
        // 192.0.0.0/24 (IETF protocol assignments), 198.18.0.0/15 (benchmarking),
        // the documentation ranges and 240.0.0.0/4 (future use).
        (192, 0, 0, _)
        | (198, 18..=19, ..)
        | (192, 0, 2, _)
        | (198, 51, 100, _)
        | (203, 0, 113, _)
        | (240..=255, ..) => BlockedRange::Reserved,
        _ => return None,
    };
    Some(range)
}

fn classify_v6(addr: Ipv6Addr) -> Option<BlockedRange> {
    if addr.is_unspecified() {
        return Some(BlockedRange::Unspecified);
    }
    if addr.is_loopback() {
        return Some(BlockedRange::Loopback);
    }
    // Addresses that embed an IPv4 address are judged by the address they reach.
    if let Some(v4) = embedded_v4(addr) {
        return classify_v4(v4);
    }
    let segments = addr.segments();
    let first = segments[0];
    let range = if addr == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        BlockedRange::CloudMetadata
    } else if first & 0xfe00 == 0xfc00 {
        BlockedRange::Private
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        // fe80::/10 link-local and the deprecated fec0::/10 site-local.
        BlockedRange::LinkLocal
    } else if first & 0xff00 == 0xff00 {
        BlockedRange::Multicast
    } else if first == 0x2001 && segments[1] == 0x0db8 || first == 0x0100 && segments[1..4] == [0, 0, 0] {
        // Documentation (2001:db8::/32) and discard-only (100::/64) prefixes.
        BlockedRange::Reserved
    } else {
        return None;
    };
    Some(range)
}

/// The IPv4 address carried by IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`) addresses.
fn embedded_v4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = addr.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

impl PrivateHostPolicy {
    /// Whether a host name (as written in the URL) is explicitly allowed on `port` (`None`:
    /// the port is not known, so only entries without a port count).
    pub fn allows_name(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Self::Deny => false,
            Self::AllowAll => true,
            Self::Allow(hosts) => hosts.iter().any(|h| {
                matches!(h, AllowedHost::Name { name, port: allowed }
                    if name.eq_ignore_ascii_case(host) && port_matches(*allowed, port))
            }),
        }
    }

    /// Whether an address is explicitly allowed on `port` (`None` as for [`Self::allows_name`]).
    pub fn allows_addr(&self, addr: IpAddr, port: Option<u16>) -> bool {
        match self {
            Self::Deny => false,
            Self::AllowAll => true,
            Self::Allow(hosts) => hosts.iter().any(|h| match h {
                AllowedHost::Network {
                    addr: network,
                    prefix,
                    port: allowed,
                } => ip_in_network(addr, *network, *prefix) && port_matches(*allowed, port),
                AllowedHost::Name { .. } => false,
            }),
        }
    }

    /// Whether some entry is limited to a port, so a decision depends on the port connected to.
    pub fn depends_on_port(&self) -> bool {
        match self {
            Self::Deny | Self::AllowAll => false,
            Self::Allow(hosts) => hosts.iter().any(|h| match h {
                AllowedHost::Name { port, .. } | AllowedHost::Network { port, .. } => port.is_some(),
            }),
        }
    }
}

fn ip_in_network(addr: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (addr, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(url: &str) -> IpAddr {
        match url::Url::parse(url).expect("valid URL").host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            other => panic!("{url} did not parse to an IP literal: {other:?}"),
        }
    }

    #[test]
    fn classification_table() {
        let table: &[(&str, Option<BlockedRange>)] = &[
            ("127.0.0.1", Some(BlockedRange::Loopback)),
            ("127.255.1.2", Some(BlockedRange::Loopback)),
            ("10.1.2.3", Some(BlockedRange::Private)),
            ("172.16.0.1", Some(BlockedRange::Private)),
            ("172.31.255.255", Some(BlockedRange::Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(BlockedRange::Private)),
            ("169.254.169.254", Some(BlockedRange::CloudMetadata)),
            ("169.254.10.1", Some(BlockedRange::LinkLocal)),
            ("100.64.0.1", Some(BlockedRange::SharedAddressSpace)),
            ("100.127.255.254", Some(BlockedRange::SharedAddressSpace)),
            ("100.128.0.1", None),
            ("100.100.100.200", Some(BlockedRange::CloudMetadata)),
            ("224.0.0.1", Some(BlockedRange::Multicast)),
            ("0.0.0.0", Some(BlockedRange::Unspecified)),
            ("255.255.255.255", Some(BlockedRange::Broadcast)),
            ("240.0.0.1", Some(BlockedRange::Reserved)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::1", Some(BlockedRange::Loopback)),
            ("::", Some(BlockedRange::Unspecified)),
            ("fc00::1", Some(BlockedRange::Private)),
            ("fd12:3456::1", Some(BlockedRange::Private)),
            ("fd00:ec2::254", Some(BlockedRange::CloudMetadata)),
            ("fe80::1", Some(BlockedRange::LinkLocal)),
            ("ff02::1", Some(BlockedRange::Multicast)),
            ("::ffff:127.0.0.1", Some(BlockedRange::Loopback)),
            ("::ffff:169.254.169.254", Some(BlockedRange::CloudMetadata)),
            ("::ffff:10.0.0.1", Some(BlockedRange::Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(BlockedRange::Loopback)),
            ("64:ff9b::10.0.0.1", Some(BlockedRange::Private)),
            ("2002:c0a8:0101::1", Some(BlockedRange::Private)),
            ("2001:db8::1", Some(BlockedRange::Reserved)),
            ("2606:4700:4700::1111", None),
        ];
        for (text, expected) in table {
            let addr: IpAddr = text.parse().expect("valid address");
            assert_eq!(classify(addr), *expected, "{text}");
        }
    }

    #[test]
    fn alternative_ipv4_spellings_are_normalised_before_classification() {
        for url in [
            "http://2130706433/",      // decimal
            "http://0x7f000001/",      // hex
            "http://0x7f.0.0.1/",      // hex octet
            "http://0177.0.0.1/",      // octal octet
            "http://017700000001/",    // octal whole
            "http://127.1/",           // short form
            "http://[::ffff:7f00:1]/", // mapped, hex
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        ] {
            assert_eq!(classify(host_of(url)), Some(BlockedRange::Loopback), "{url}");
        }
        assert_eq!(
            classify(host_of("http://0xa9fea9fe/")),
            Some(BlockedRange::CloudMetadata)
        );
        assert_eq!(
            classify(host_of("http://2852039166/")),
            Some(BlockedRange::CloudMetadata)
        );
    }

    #[test]
    fn private_host_policy_matches_names_and_networks() {
        let network = |text: &str, prefix| AllowedHost::Network {
            addr: text.parse().expect("valid address"),
            prefix,
            port: None,
        };
        let policy = PrivateHostPolicy::Allow(vec![
            AllowedHost::Name {
                name: "assets.internal".into(),
                port: None,
            },
            network("10.0.0.0", 8),
            network("fd00::", 16),
            network("192.168.1.7", 32),
        ]);
        assert!(policy.allows_name("Assets.Internal", Some(80)));
        assert!(!policy.allows_name("10.0.0.1", Some(80)), "addresses are not names");
        assert!(policy.allows_addr("10.255.0.1".parse().unwrap(), Some(80)));
        assert!(!policy.allows_addr("11.0.0.1".parse().unwrap(), Some(80)));
        assert!(policy.allows_addr("fd00:1::2".parse().unwrap(), Some(80)));
        assert!(!policy.allows_addr("fd01::2".parse().unwrap(), Some(80)));
        assert!(policy.allows_addr("192.168.1.7".parse().unwrap(), Some(80)));
        assert!(!policy.allows_addr("192.168.1.8".parse().unwrap(), Some(80)));
        assert!(
            !policy.allows_addr("::ffff:10.0.0.1".parse().unwrap(), Some(80)),
            "an IPv4 network does not match IPv6 spellings"
        );
        assert!(
            PrivateHostPolicy::Allow(vec![network("0.0.0.0", 0)]).allows_addr("8.8.8.8".parse().unwrap(), Some(80))
        );
        assert!(!PrivateHostPolicy::Deny.allows_name("localhost", Some(80)));
        assert!(!PrivateHostPolicy::default().allows_addr("127.0.0.1".parse().unwrap(), Some(80)));
        assert!(PrivateHostPolicy::AllowAll.allows_addr("127.0.0.1".parse().unwrap(), Some(80)));
    }
}
