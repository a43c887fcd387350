//! The asset downloader's section: byte, size and time limits, and `ALLOW_PRIVATE_ASSET_HOSTS`.
//!
//! This file owns [`AssetLimits`] and the parsing of `ALLOW_PRIVATE_ASSET_HOSTS` into a
//! [`PrivateHostPolicy`]. What a policy allows is decided by the SSRF guard in
//! `assets/guard.rs`, which defines the type; this file only turns the operator's text into it.

use std::net::IpAddr;
use std::time::Duration;

use super::{ConfigError, Vars};
use crate::assets::guard::{AllowedHost, PrivateHostPolicy};

/// Limits and timeouts of the asset downloader and decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetLimits {
    /// Largest accepted body (`MAX_ASSET_BYTES`, default 32 MiB).
    pub max_bytes: u64,
    /// Largest accepted width or height (`MAX_IMAGE_DIMENSION`, default 8192).
    pub max_dimension: u32,
    /// Largest accepted pixel count (`MAX_IMAGE_PIXELS`, default 40 megapixels).
    pub max_pixels: u64,
    pub connect_timeout: Duration,
    /// Deadline for the whole download, headers and body (`ASSET_TIMEOUT_MS`).
    pub timeout: Duration,
    pub max_redirects: u8,
    pub private_hosts: PrivateHostPolicy,
}

impl Default for AssetLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            max_dimension: 8192,
            max_pixels: 40_000_000,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_redirects: 3,
            private_hosts: PrivateHostPolicy::Deny,
        }
    }
}

impl AssetLimits {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            max_bytes: vars.parse_or("MAX_ASSET_BYTES", defaults.max_bytes, |v| *v >= 1024)?,
            max_dimension: vars.parse_or("MAX_IMAGE_DIMENSION", defaults.max_dimension, |v| {
                (64..=65_535).contains(v)
            })?,
            // At most a gigapixel: 4 GB of RGBA, and the fill indexes pixels with 32 bits.
            max_pixels: vars.parse_or("MAX_IMAGE_PIXELS", defaults.max_pixels, |v| {
                (4096..=1_000_000_000).contains(v)
            })?,
            connect_timeout: vars.millis_or("ASSET_CONNECT_TIMEOUT_MS", defaults.connect_timeout)?,
            timeout: vars.millis_or("ASSET_TIMEOUT_MS", defaults.timeout)?,
            max_redirects: vars.parse_or("ASSET_MAX_REDIRECTS", defaults.max_redirects, |v| *v <= 10)?,
            private_hosts: match vars.get("ALLOW_PRIVATE_ASSET_HOSTS") {
                None => PrivateHostPolicy::Deny,
                Some(text) => {
                    PrivateHostPolicy::parse(&text).map_err(|p| ConfigError::new("ALLOW_PRIVATE_ASSET_HOSTS", p))?
                }
            },
        })
    }
}

// The guard owns these types; reading them from operator text is configuration, so it lives here.
impl PrivateHostPolicy {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" | "off" => return Ok(Self::Deny),
            "true" | "1" | "yes" | "on" | "*" => return Ok(Self::AllowAll),
            _ => {}
        }
        let mut hosts = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            hosts.push(AllowedHost::parse(entry)?);
        }
        Ok(Self::Allow(hosts))
    }
}

impl AllowedHost {
    /// One entry: a host name, an IP address (IPv6 in brackets when a port follows) or a CIDR
    /// block, optionally followed by `:port` (`assets.internal:8080`, `127.0.0.1:9000`,
    /// `[::1]:9000`, `10.0.0.0/8:8080`). Without a port every port of the host is allowed.
    fn parse(entry: &str) -> Result<Self, String> {
        let (host, port) = split_port(entry)?;
        let (addr_text, prefix_text) = match host.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (host, None),
        };
        if let Ok(addr) = addr_text.trim_matches(['[', ']']).parse::<IpAddr>() {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix_text {
                None => max,
                Some(text) => text
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("has an invalid prefix length in `{entry}`"))?,
            };
            return Ok(Self::Network { addr, prefix, port });
        }
        if prefix_text.is_some()
            || host.is_empty()
            || host.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(format!(
                "entry `{entry}` is neither a host name, an IP address nor a CIDR block (each optionally with `:port`)"
            ));
        }
        Ok(Self::Name {
            name: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Splits `host:port` or `[v6]:port`. A bare IPv6 address (two or more colons, no brackets)
/// has no port.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port_text) = if let Some(rest) = entry.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("entry `{entry}` has `[` without `]`"))?;
        let after = &rest[close + 1..];
        match after.strip_prefix(':') {
            Some(port) => (&entry[..close + 2], Some(port)),
            None => (entry, None),
        }
    } else if entry.matches(':').count() == 1 {
        let (host, port) = entry.split_once(':').unwrap_or((entry, ""));
        (host, Some(port))
    } else {
        (entry, None)
    };
    let port = port_text
        .map(|text| {
            text.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("has an invalid port in `{entry}` (expected 1..=65535)"))
        })
        .transpose()?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_host_policy_parses_names_addresses_and_networks() {
        let policy = PrivateHostPolicy::parse("assets.internal, 127.0.0.1, 10.0.0.0/8, [::1]").unwrap();
        assert!(policy.allows_name("ASSETS.internal", Some(443)));
        assert!(!policy.allows_name("other.internal", Some(443)));
        assert!(policy.allows_addr("127.0.0.1".parse().unwrap(), Some(6379)));
        assert!(!policy.allows_addr("127.0.0.2".parse().unwrap(), Some(80)));
        assert!(policy.allows_addr("10.200.3.4".parse().unwrap(), None));
        assert!(!policy.allows_addr("11.0.0.1".parse().unwrap(), Some(80)));
        assert!(policy.allows_addr("::1".parse().unwrap(), Some(80)));
        assert!(!policy.depends_on_port());
        assert_eq!(PrivateHostPolicy::parse("true").unwrap(), PrivateHostPolicy::AllowAll);
        assert_eq!(PrivateHostPolicy::parse("false").unwrap(), PrivateHostPolicy::Deny);
    }

    /// `host:port` entries open one port of a host, not all of them.
    #[test]
    fn private_host_entries_may_name_a_port() {
        let policy =
            PrivateHostPolicy::parse("assets.internal:8080, 127.0.0.1:9000, [::1]:9001, 10.0.0.0/8:81, [fd00::1]")
                .unwrap();
        let PrivateHostPolicy::Allow(entries) = &policy else {
            panic!("{policy:?}");
        };
        assert_eq!(
            entries,
            &[
                AllowedHost::Name {
                    name: "assets.internal".into(),
                    port: Some(8080)
                },
                AllowedHost::Network {
                    addr: "127.0.0.1".parse().unwrap(),
                    prefix: 32,
                    port: Some(9000)
                },
                AllowedHost::Network {
                    addr: "::1".parse().unwrap(),
                    prefix: 128,
                    port: Some(9001)
                },
                AllowedHost::Network {
                    addr: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                    port: Some(81)
                },
                AllowedHost::Network {
                    addr: "fd00::1".parse().unwrap(),
                    prefix: 128,
                    port: None
                },
            ]
        );
        assert!(policy.depends_on_port());
        assert!(policy.allows_name("assets.internal", Some(8080)));
        assert!(!policy.allows_name("assets.internal", Some(8081)));
        assert!(!policy.allows_name("assets.internal", None));
        assert!(policy.allows_addr("127.0.0.1".parse().unwrap(), Some(9000)));
        assert!(!policy.allows_addr("127.0.0.1".parse().unwrap(), Some(6379)));
        assert!(policy.allows_addr("::1".parse().unwrap(), Some(9001)));
        assert!(!policy.allows_addr("::1".parse().unwrap(), Some(9000)));
        assert!(policy.allows_addr("10.1.2.3".parse().unwrap(), Some(81)));
        assert!(policy.allows_addr("fd00::1".parse().unwrap(), Some(5432)));
        for bad in [
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "assets:http",
            "[::1]:x",
            "[::1",
            ":80",
        ] {
            let error = PrivateHostPolicy::parse(bad).unwrap_err();
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }
}
