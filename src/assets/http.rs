//! The HTTP asset adapter: downloads `http(s)` assets behind the SSRF guard.
//!
//! Owns the download rules: the byte limit (a declared length over it is refused before the
//! body is read, a streamed body is cut off at it), the overall time limit, and redirects,
//! which are followed here, hop by hop, never by reqwest.
//! It refuses every local path with [`AssetError::LocalRefused`]: reading files is
//! the local-files adapter's job, and only the one-shot CLI gets that adapter.
//!
//! The guard works at three points, so neither a DNS answer nor a redirect can slip past it:
//! IP literals in a URL are checked before any request, host names go through
//! `GuardedResolver`, which checks *every* resolved address and hands reqwest only checked
//! ones (so the connection is made to an address that was checked), and each redirect's new
//! URL is checked again. Which addresses are blocked is `guard.rs`' decision, not this file's.
//!
//! An allow-list entry may be limited to a port (`127.0.0.1:9000`). reqwest's resolver is told
//! only the host name, so when the policy depends on the port each hop uses a client whose
//! resolver was built for that hop's port: the address check always knows the port the
//! connection will be made on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use super::{AssetError, AssetRole, AssetSource, guard};
use crate::config::{AssetLimits, PrivateHostPolicy};
use crate::http::Traced;
use crate::job::AssetRef;

/// Downloads remote assets under the configured limits. Cloning shares the connection pool.
#[derive(Clone)]
pub struct HttpAssets {
    /// The client of every hop when the private-host policy does not depend on the port.
    client: reqwest::Client,
    /// When it does, one client per destination port, built on first use (bounded, see
    /// [`MAX_CACHED_PORT_CLIENTS`]).
    port_clients: Arc<Mutex<HashMap<u16, reqwest::Client>>>,
    limits: AssetLimits,
}

/// Port-specific clients kept for reuse; further ports get a client for the one download.
const MAX_CACHED_PORT_CLIENTS: usize = 16;

impl HttpAssets {
    pub fn new(limits: AssetLimits) -> Result<Self, reqwest::Error> {
        let client = build_client(&limits, None)?;
        Ok(Self {
            client,
            port_clients: Arc::default(),
            limits,
        })
    }

    /// The client for a hop to `url`: the shared one, or one whose resolver checks addresses
    /// for the URL's port.
    fn client_for(&self, url: &url::Url, field: &'static str) -> Result<reqwest::Client, AssetError> {
        if !self.limits.private_hosts.depends_on_port() {
            return Ok(self.client.clone());
        }
        let Some(port) = url.port_or_known_default() else {
            return Ok(self.client.clone());
        };
        // A poisoned lock only means another download panicked while inserting; the map is
        // still a valid cache.
        let mut clients = self
            .port_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&port) {
            return Ok(client.clone());
        }
        let client = build_client(&self.limits, Some(port)).map_err(|error| AssetError::Network {
            field,
            detail: error_chain(&error),
        })?;
        if clients.len() < MAX_CACHED_PORT_CLIENTS {
            clients.insert(port, client.clone());
        }
        Ok(client)
    }

    pub fn limits(&self) -> &AssetLimits {
        &self.limits
    }

    async fn download(&self, mut url: url::Url, field: &'static str) -> Result<Vec<u8>, AssetError> {
        let mut hops = 0u8;
        loop {
            check_url(&url, &self.limits.private_hosts, field)?;
            let response = self
                .client_for(&url, field)?
                .get(url.clone())
                .traced()
                .send()
                .await
                .map_err(|error| classify_request_error(&error, field))?;
            let status = response.status();
            if status.is_redirection() {
                hops += 1;
                if hops > self.limits.max_redirects {
                    return Err(AssetError::Redirect {
                        field,
                        problem: format!("chain is longer than {} hops", self.limits.max_redirects),
                    });
                }
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| AssetError::Redirect {
                        field,
                        problem: format!("HTTP {} has no usable Location header", status.as_u16()),
                    })?;
                let next = url.join(location).map_err(|error| AssetError::Redirect {
                    field,
                    problem: format!("to an invalid URL ({error})"),
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(AssetError::Redirect {
                        field,
                        problem: format!("to unsupported scheme `{}`", next.scheme()),
                    });
                }
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(AssetError::Status {
                    field,
                    status: status.as_u16(),
                });
            }
            return self.read_body(response, field).await;
        }
    }

    async fn read_body(&self, response: reqwest::Response, field: &'static str) -> Result<Vec<u8>, AssetError> {
        let limit = self.limits.max_bytes;
        let too_large = || AssetError::TooLarge { field, limit };
        // A declared length over the limit is refused before reading a byte of the body.
        if response.content_length().is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        let capacity = response.content_length().unwrap_or(64 * 1024).min(limit);
        let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| classify_request_error(&error, field))?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[async_trait::async_trait]
impl AssetSource for HttpAssets {
    async fn load(&self, asset: &AssetRef, role: AssetRole) -> Result<Vec<u8>, AssetError> {
        let field = role.field();
        match asset {
            AssetRef::Local { .. } => Err(AssetError::LocalRefused { field }),
            AssetRef::Remote(url) => {
                // One deadline over every hop and the whole body, so a slow drip of bytes or a
                // long redirect chain cannot hold a job past the limit.
                let deadline = self.limits.timeout;
                match tokio::time::timeout(deadline, self.download(url.clone(), field)).await {
                    Ok(result) => result,
                    Err(_) => Err(AssetError::Timeout { field }),
                }
            }
        }
    }
}

/// A client that follows no redirects and resolves through the guard, which checks addresses
/// for `port` (`None`: the policy does not depend on it).
fn build_client(limits: &AssetLimits, port: Option<u16>) -> Result<reqwest::Client, reqwest::Error> {
    guarded_client(&limits.private_hosts, port, limits.connect_timeout, limits.timeout)
}

/// A client that follows no redirect and whose resolver refuses host names resolving to a
/// blocked range the policy does not allow (on `port`, when the policy depends on it): the
/// SSRF guard of downloads, for any outbound call to a URL someone else chose.
pub fn guarded_client(
    policy: &PrivateHostPolicy,
    port: Option<u16>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    let resolver = Arc::new(GuardedResolver {
        policy: policy.clone(),
        port,
    });
    crate::http::client_builder(connect_timeout, timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(resolver)
        .build()
}

/// Refuses URLs whose host is an IP literal in a blocked range, unless the policy allows it on
/// the URL's port (host names are checked by the resolver, after DNS).
fn check_url(url: &url::Url, policy: &PrivateHostPolicy, field: &'static str) -> Result<(), AssetError> {
    let port = url.port_or_known_default();
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(name)) => {
            if policy.allows_name(name, port) {
                return Ok(());
            }
            // "localhost" never needs DNS to be dangerous.
            if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
                return Err(AssetError::Blocked {
                    field,
                    host: name.to_owned(),
                    reason: guard::BlockedRange::Loopback.describe(),
                });
            }
            return Ok(());
        }
        None => {
            return Err(AssetError::Redirect {
                field,
                problem: "to a URL without a host".into(),
            });
        }
    };
    match guard::classify(ip) {
        Some(range) if !policy.allows_addr(ip, port) => Err(AssetError::Blocked {
            field,
            host: match port {
                Some(port) => SocketAddr::new(ip, port).to_string(),
                None => ip.to_string(),
            },
            reason: range.describe(),
        }),
        _ => Ok(()),
    }
}

fn classify_request_error(error: &reqwest::Error, field: &'static str) -> AssetError {
    if error.is_timeout() {
        return AssetError::Timeout { field };
    }
    // The resolver's refusal travels inside reqwest's error chain; surface it as a refusal,
    // not as a network problem, so the job fails permanently instead of retrying.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<ResolverRefusal>() {
            return AssetError::Blocked {
                field,
                host: refused.host.clone(),
                reason: refused.reason,
            };
        }
        source = current.source();
    }
    AssetError::Network {
        field,
        detail: error_chain(error),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        text.push_str(": ");
        text.push_str(&current.to_string());
        source = current.source();
    }
    text
}

/// A host name whose DNS answer contained a blocked address.
#[derive(Debug, thiserror::Error)]
#[error("host `{host}` resolves to {reason}")]
struct ResolverRefusal {
    host: String,
    reason: &'static str,
}

/// Resolves names with the system resolver and refuses the whole answer if any address in it is
/// blocked: a name that resolves to both a public and a private address is treated as hostile.
/// `port` is the port the client connects on (`None` for the shared client, used only when no
/// allow-list entry names a port).
struct GuardedResolver {
    policy: PrivateHostPolicy,
    port: Option<u16>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host((host.as_str(), 0)));
            let addrs: Vec<SocketAddr> = lookup
                .await
                .map_err(|_| -> Box<dyn std::error::Error + Send + Sync> {
                    format!("DNS lookup of `{host}` timed out").into()
                })??
                .collect();
            if !policy.allows_name(&host, port) {
                for addr in &addrs {
                    if let Some(range) = guard::classify(addr.ip()).filter(|_| !policy.allows_addr(addr.ip(), port)) {
                        return Err(Box::new(ResolverRefusal {
                            host: host.clone(),
                            reason: range.describe(),
                        }) as Box<dyn std::error::Error + Send + Sync>);
                    }
                }
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_hosts_are_checked_before_any_request() {
        let deny = PrivateHostPolicy::Deny;
        for url in [
            "http://127.0.0.1/a.png",
            "http://[::1]/a.png",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/x",
            "http://2130706433/",
        ] {
            let url = url::Url::parse(url).unwrap();
            assert!(
                matches!(
                    check_url(&url, &deny, "baseTextureUrl"),
                    Err(AssetError::Blocked { .. })
                ),
                "{url}"
            );
        }
        assert!(check_url(&url::Url::parse("https://8.8.8.8/a.png").unwrap(), &deny, "maskUrl").is_ok());
        let allow = PrivateHostPolicy::Allow(vec![crate::config::AllowedHost::Network {
            addr: "127.0.0.1".parse().unwrap(),
            prefix: 32,
            port: None,
        }]);
        assert!(check_url(&url::Url::parse("http://127.0.0.1:9/a.png").unwrap(), &allow, "maskUrl").is_ok());
        assert!(check_url(&url::Url::parse("http://10.0.0.1/a.png").unwrap(), &allow, "maskUrl").is_err());
    }

    #[tokio::test]
    async fn resolver_refuses_names_that_resolve_to_blocked_addresses() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let deny = GuardedResolver {
            policy: PrivateHostPolicy::Deny,
            port: None,
        };
        let name = reqwest::dns::Name::from_str("localhost").expect("valid name");
        let refusal = match deny.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let refusal = refusal
            .downcast_ref::<ResolverRefusal>()
            .expect("a refusal, not a DNS failure");
        assert_eq!(refusal.reason, guard::BlockedRange::Loopback.describe());
        // An explicit allowance lets the same answer through, and only checked addresses come back.
        let allow = GuardedResolver {
            policy: PrivateHostPolicy::Allow(vec![
                crate::config::AllowedHost::Network {
                    addr: "127.0.0.0".parse().unwrap(),
                    prefix: 8,
                    port: None,
                },
                crate::config::AllowedHost::Network {
                    addr: "::1".parse().unwrap(),
                    prefix: 128,
                    port: None,
                },
            ]),
            port: None,
        };
        let addrs: Vec<SocketAddr> = allow
            .resolve(reqwest::dns::Name::from_str("localhost").unwrap())
            .await
            .expect("allowed")
            .collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
            "{addrs:?}"
        );
    }

    /// An entry with a port lets the resolver pass loopback only for that port.
    #[tokio::test]
    async fn resolver_checks_port_specific_entries_for_its_port() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let policy = PrivateHostPolicy::Allow(vec![
            crate::config::AllowedHost::Network {
                addr: "127.0.0.1".parse().unwrap(),
                prefix: 32,
                port: Some(9000),
            },
            crate::config::AllowedHost::Network {
                addr: "::1".parse().unwrap(),
                prefix: 128,
                port: Some(9000),
            },
        ]);
        for (port, allowed) in [(Some(9000), true), (Some(9001), false), (None, false)] {
            let resolver = GuardedResolver {
                policy: policy.clone(),
                port,
            };
            let result = resolver
                .resolve(reqwest::dns::Name::from_str("localhost").unwrap())
                .await;
            assert_eq!(result.is_ok(), allowed, "port {port:?}");
        }
        let url = url::Url::parse("http://127.0.0.1:9001/a.png").unwrap();
        match check_url(&url, &policy, "baseTextureUrl") {
            Err(AssetError::Blocked { host, .. }) => assert_eq!(host, "127.0.0.1:9001"),
            other => panic!("{other:?}"),
        }
        assert!(
            check_url(
                &url::Url::parse("http://127.0.0.1:9000/a.png").unwrap(),
                &policy,
                "maskUrl"
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn local_files_are_refused() {
        let loader = HttpAssets::new(AssetLimits::default()).unwrap();
        for path in ["/etc/passwd", "file:///etc/passwd"] {
            let asset = AssetRef::parse(path).unwrap();
            let error = loader.load(&asset, AssetRole::Mask).await.unwrap_err();
            assert!(
                matches!(error, AssetError::LocalRefused { field: "maskUrl" }),
                "{path}: {error}"
            );
        }
    }
}
