//! Where a tenant's events are delivered: its own line of `WEBHOOK_ENDPOINTS_FILE`
//! (`tenantId=https://…`), else `WEBHOOK_URL`. Every endpoint passes the SSRF guard of
//! downloads when the worker starts: a private, loopback or metadata address is refused unless
//! `WEBHOOK_ALLOW_PRIVATE_HOSTS` allows it.

use std::collections::HashMap;
use std::net::IpAddr;

use sha2::Digest;

use crate::assets::guard::{self, PrivateHostPolicy};

/// One receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: url::Url,
}

impl Endpoint {
    /// A short, stable id of an endpoint URL (12 hex digits of its SHA-256): part of each
    /// delivery's job id, never the URL itself (it may carry a token).
    pub fn id_of(url: &url::Url) -> String {
        hex::encode(&sha2::Sha256::digest(url.as_str().as_bytes())[..6])
    }
}

/// Every configured endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `WEBHOOK_URL`: tenants without a line of their own.
    pub default: Option<Endpoint>,
    /// `WEBHOOK_ENDPOINTS_FILE`: tenant id → endpoint.
    pub tenants: HashMap<String, Endpoint>,
}

impl Endpoints {
    /// The endpoint of `tenant`: its own, else the default; `None` when neither exists.
    pub fn for_tenant(&self, tenant: &str) -> Option<&Endpoint> {
        self.tenants.get(tenant).or(self.default.as_ref())
    }

    /// Parses the endpoints file: `tenantId=https://…` per line; blank lines and `#` comments
    /// are skipped. Errors name the line.
    pub fn parse_file(text: &str) -> Result<HashMap<String, Endpoint>, String> {
        let mut tenants = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let (tenant, url) = line
                .split_once('=')
                .ok_or_else(|| format!("line {number} is not `tenantId=https://…`"))?;
            let tenant = tenant.trim();
            if tenant.is_empty() {
                return Err(format!("line {number} has no tenant id before `=`"));
            }
            let url = url::Url::parse(url.trim())
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https"))
                .ok_or_else(|| format!("line {number} (tenant `{tenant}`) has no http(s) URL after `=`"))?;
            if tenants.insert(tenant.to_owned(), Endpoint { url }).is_some() {
                return Err(format!("line {number} names tenant `{tenant}` a second time"));
            }
        }
        Ok(tenants)
    }

    /// Refuses any endpoint on a private, loopback or metadata address the policy does not
    /// allow, resolving host names; the error names the endpoint's host and why.
    pub async fn check(&self, policy: &PrivateHostPolicy) -> Result<(), String> {
        let all = self
            .default
            .iter()
            .map(|endpoint| ("WEBHOOK_URL".to_owned(), endpoint))
            .chain(
                self.tenants
                    .iter()
                    .map(|(tenant, endpoint)| (format!("the endpoint of tenant `{tenant}`"), endpoint)),
            );
        for (which, endpoint) in all {
            check_url(&endpoint.url, policy)
                .await
                .map_err(|problem| format!("{which} is refused: {problem}"))?;
        }
        Ok(())
    }
}

/// Whether `url` may receive deliveries under `policy`: its host (resolved, if a name) must not
/// be in a blocked range unless the policy allows it.
pub async fn check_url(url: &url::Url, policy: &PrivateHostPolicy) -> Result<(), String> {
    let port = url.port_or_known_default();
    let host = url.host_str().ok_or("the URL has no host")?.to_owned();
    let addresses: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => {
            if policy.allows_name(name, port) {
                return Ok(());
            }
            let lookup = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::net::lookup_host((name, port.unwrap_or(443))),
            )
            .await
            .map_err(|_| format!("the DNS lookup of `{name}` timed out"))?
            .map_err(|error| format!("`{name}` does not resolve ({error})"))?;
            lookup.map(|address| address.ip()).collect()
        }
        None => return Err("the URL has no host".into()),
    };
    for ip in addresses {
        if let Some(range) = guard::classify(ip).filter(|_| !policy.allows_addr(ip, port)) {
            return Err(format!(
                "`{host}` is {} ({ip}); set WEBHOOK_ALLOW_PRIVATE_HOSTS to allow it",
                range.describe()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint {
            url: url::Url::parse(url).unwrap(),
        }
    }

    #[test]
    fn a_tenants_line_wins_over_the_default() {
        let tenants = Endpoints::parse_file(
            "# per-tenant receivers\n\nacme = https://acme.example/hooks\nglobex=https://globex.example/in?token=x\n",
        )
        .unwrap();
        let endpoints = Endpoints {
            default: Some(endpoint("https://all.example/hooks")),
            tenants,
        };
        assert_eq!(
            endpoints.for_tenant("acme").unwrap().url.as_str(),
            "https://acme.example/hooks"
        );
        assert_eq!(
            endpoints.for_tenant("initech").unwrap().url.as_str(),
            "https://all.example/hooks"
        );
        let only_file = Endpoints {
            default: None,
            ..endpoints
        };
        assert!(only_file.for_tenant("initech").is_none());
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        for (text, needle) in [
            ("acme=https://a.example\nno equals sign\n", "line 2"),
            ("=https://a.example\n", "line 1 has no tenant"),
            ("acme=ftp://a.example\n", "line 1 (tenant `acme`)"),
            ("acme=https://a.example\nacme=https://b.example\n", "second time"),
        ] {
            let problem = Endpoints::parse_file(text).unwrap_err();
            assert!(problem.contains(needle), "{problem}");
        }
    }

    #[tokio::test]
    async fn private_endpoints_are_refused_unless_allowed() {
        let loopback = Endpoints {
            default: Some(endpoint("http://127.0.0.1:9000/hooks")),
            tenants: HashMap::new(),
        };
        let problem = loopback.check(&PrivateHostPolicy::Deny).await.unwrap_err();
        assert!(problem.starts_with("WEBHOOK_URL is refused"), "{problem}");
        assert!(
            problem.contains("127.0.0.1") && problem.contains("WEBHOOK_ALLOW_PRIVATE_HOSTS"),
            "{problem}"
        );
        assert!(loopback.check(&PrivateHostPolicy::AllowAll).await.is_ok());
        let metadata = Endpoints {
            default: None,
            tenants: HashMap::from([("acme".to_owned(), endpoint("http://169.254.169.254/latest"))]),
        };
        let problem = metadata.check(&PrivateHostPolicy::Deny).await.unwrap_err();
        assert!(problem.contains("tenant `acme`"), "{problem}");
        let named = Endpoints {
            default: Some(endpoint("http://localhost:9000/")),
            tenants: HashMap::new(),
        };
        assert!(
            named.check(&PrivateHostPolicy::Deny).await.is_err(),
            "localhost resolves to loopback"
        );
    }

    #[test]
    fn the_endpoint_id_is_short_stable_and_hides_the_url() {
        let url = url::Url::parse("https://hooks.example/in?token=secret").unwrap();
        let id = Endpoint::id_of(&url);
        assert_eq!(id.len(), 12);
        assert_eq!(id, Endpoint::id_of(&url));
        assert!(!id.contains("secret"));
    }
}
