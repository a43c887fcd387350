//! The queue's section: Redis (one server or a cluster), the BullMQ queue, tenant limits and
//! the event webhooks (parsed in `webhooks.rs`).
//!
//! This file owns [`RedisConfig`] and [`QueueConfig`], the parsers of
//! `REDIS_CLUSTER_NODES` and of `tenant=limit` lists, and the rule that a cluster needs a
//! hash-tagged key prefix. It does not connect to Redis and does not read the tenant file;
//! the worker does both when it is built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::dashboard::DashboardConfig;
use super::webhooks::WebhookConfig;
use super::{ConfigError, Secret, Vars};

/// Redis connection settings (used by the queue worker).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
    /// `REDIS_URL` wins over host/port/password when set.
    pub url: Option<Secret>,
    /// Seed nodes of a Redis Cluster (`REDIS_CLUSTER_NODES=redis://10.0.0.1:7000,…`); when set,
    /// they win over `REDIS_URL` and host/port, and `REDIS_PASSWORD` authenticates to every node.
    pub cluster_nodes: Vec<String>,
}

/// Settings of the queue worker and the `enqueue` producer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// BullMQ queue name (`QUEUE_NAME`, default `design-render`).
    pub name: String,
    /// BullMQ key prefix (`BULLMQ_PREFIX`, default `bull`; `{bull}` for Redis Cluster).
    pub prefix: String,
    /// Jobs processed at once by one worker process (`WORKER_CONCURRENCY`, default 4).
    pub worker_concurrency: usize,
    /// Per-tenant concurrency limits that replace `DEFAULT_TENANT_CONCURRENCY`
    /// (`TENANT_CONCURRENCY_OVERRIDES=tenantA=5,tenantB=1`).
    pub tenant_overrides: BTreeMap<String, u32>,
    /// A file of `tenant=limit` lines merged under the env overrides
    /// (`TENANT_CONCURRENCY_FILE`); read when the worker is built.
    pub tenant_overrides_file: Option<PathBuf>,
    /// Lifetime of a tenant slot lease, renewed while the job runs (`TENANT_LEASE_SECONDS`, default 30).
    pub tenant_lease: Duration,
    /// How long in-flight jobs may run after SIGTERM/SIGINT (`SHUTDOWN_GRACE_SECONDS`, default 30).
    pub shutdown_grace: Duration,
    /// BullMQ job lock duration (`QUEUE_LOCK_DURATION_MS`, default 30000); renewed at half of it.
    pub lock_duration: Duration,
    /// How often stalled jobs are looked for (`QUEUE_STALLED_INTERVAL_MS`, default 30000).
    pub stalled_interval: Duration,
    /// How long an idle worker's blocking fetch waits for a job before asking again
    /// (`QUEUE_DRAIN_DELAY_SECONDS`, default 5 as in BullMQ, 1..=300). A stopping worker may
    /// wait this long for its fetch to return, so short values stop faster on Redis Cluster.
    pub drain_delay: Duration,
    /// Signed, durable webhooks for render events: set exactly when `WEBHOOK_ENABLED=true`.
    pub webhook: Option<WebhookConfig>,
    /// Where the worker serves `/healthz`, `/readyz` and `/metrics` (`ADMIN_ADDR`, default
    /// `127.0.0.1:9464`; `off` disables it; port 0 picks a free port).
    pub admin_addr: Option<std::net::SocketAddr>,
    /// The operations dashboard at `/dashboard` of the admin server: set exactly when
    /// `DASHBOARD_TOKEN` is.
    pub dashboard: Option<DashboardConfig>,
}

/// Parses `REDIS_CLUSTER_NODES`: comma-separated `host:port` or `redis[s]://host:port` seed
/// nodes, returned as URLs. Credentials belong in `REDIS_PASSWORD`, never in the node list, so
/// the list can be logged.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<String>, String> {
    let mut nodes = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        // Messages show the node without anything before an `@`, which could be a password.
        let shown = match entry.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => entry.to_owned(),
        };
        let with_scheme = if entry.contains("://") {
            entry.to_owned()
        } else {
            format!("redis://{entry}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|error| format!("node `{shown}` is not host:port: {error}"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!("node `{shown}` must use redis:// or rediss://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "node `{shown}` carries credentials; set REDIS_PASSWORD instead"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
            return Err(format!("node `{shown}` needs a host and a port"));
        }
        nodes.push(format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or_default()
        ));
    }
    if nodes.is_empty() {
        return Err("lists no node".into());
    }
    Ok(nodes)
}

/// Parses `tenantA=5,tenantB=1` (commas or newlines; `#` starts a comment line).
pub fn parse_tenant_limits(text: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut limits = BTreeMap::new();
    for entry in text.split([',', '\n']).map(str::trim) {
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (tenant, limit) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry `{entry}` is not `tenant=limit`"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .ok()
            .filter(|limit| *limit > 0)
            .ok_or_else(|| format!("entry `{entry}` needs a positive whole limit"))?;
        limits.insert(tenant.trim().to_owned(), limit);
    }
    Ok(limits)
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 6379,
            password: None,
            url: None,
            cluster_nodes: Vec::new(),
        }
    }
}

impl RedisConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            host: vars.get("REDIS_HOST").unwrap_or(defaults.host),
            port: vars.parse_or("REDIS_PORT", defaults.port, |v| *v > 0)?,
            password: vars.get("REDIS_PASSWORD").map(Secret::new),
            url: vars
                .get("REDIS_URL")
                .map(|text| {
                    if text.starts_with("redis://") || text.starts_with("rediss://") {
                        Ok(Secret::new(text))
                    } else {
                        Err(ConfigError::new("REDIS_URL", "must start with redis:// or rediss://"))
                    }
                })
                .transpose()?,
            cluster_nodes: vars
                .get("REDIS_CLUSTER_NODES")
                .map(|text| parse_cluster_nodes(&text))
                .transpose()
                .map_err(|rule| ConfigError::new("REDIS_CLUSTER_NODES", rule))?
                .unwrap_or_default(),
        })
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "design-render".into(),
            prefix: "bull".into(),
            worker_concurrency: 4,
            tenant_overrides: BTreeMap::new(),
            tenant_overrides_file: None,
            tenant_lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            lock_duration: Duration::from_secs(30),
            stalled_interval: Duration::from_secs(30),
            drain_delay: Duration::from_secs(5),
            webhook: None,
            admin_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464))),
            dashboard: None,
        }
    }
}

impl QueueConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let key_part = |name: &'static str, default: String| -> Result<String, ConfigError> {
            let value = vars.get(name).map(|v| v.trim().to_owned()).unwrap_or(default);
            if value.contains(':') || value.len() > 200 {
                return Err(ConfigError::new(
                    name,
                    "must not contain `:` and be at most 200 characters",
                ));
            }
            Ok(value)
        };
        let seconds = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            vars.parse_or(name, default.as_secs(), |v| *v > 0 && *v <= 24 * 3600)
                .map(Duration::from_secs)
        };
        let webhook = WebhookConfig::from_vars(vars)?;
        let dashboard = DashboardConfig::from_vars(vars)?;
        Ok(Self {
            name: key_part("QUEUE_NAME", defaults.name)?,
            prefix: key_part("BULLMQ_PREFIX", defaults.prefix)?,
            worker_concurrency: vars.parse_or("WORKER_CONCURRENCY", defaults.worker_concurrency, |v| {
                (1..=1024).contains(v)
            })?,
            tenant_overrides: match vars.get("TENANT_CONCURRENCY_OVERRIDES") {
                None => BTreeMap::new(),
                Some(text) => {
                    parse_tenant_limits(&text).map_err(|p| ConfigError::new("TENANT_CONCURRENCY_OVERRIDES", p))?
                }
            },
            tenant_overrides_file: vars.get("TENANT_CONCURRENCY_FILE").map(PathBuf::from),
            tenant_lease: seconds("TENANT_LEASE_SECONDS", defaults.tenant_lease)?,
            shutdown_grace: seconds("SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace)?,
            lock_duration: vars.millis_or("QUEUE_LOCK_DURATION_MS", defaults.lock_duration)?,
            stalled_interval: vars.millis_or("QUEUE_STALLED_INTERVAL_MS", defaults.stalled_interval)?,
            drain_delay: Duration::from_secs(vars.parse_or(
                "QUEUE_DRAIN_DELAY_SECONDS",
                defaults.drain_delay.as_secs(),
                |seconds| (1..=300).contains(seconds),
            )?),
            webhook,
            admin_addr: match vars.get("ADMIN_ADDR").map(|text| text.trim().to_owned()) {
                None => defaults.admin_addr,
                Some(text) if text.eq_ignore_ascii_case("off") => None,
                Some(text) => Some(text.parse().map_err(|_| {
                    ConfigError::new(
                        "ADMIN_ADDR",
                        format!("must be `host:port` (an IP address) or `off` (got `{text}`)"),
                    )
                })?),
            },
            dashboard,
        })
    }

    /// In a Redis Cluster every key of a queue must hash to one slot, which only a hash tag in
    /// the prefix or the queue name guarantees.
    pub(super) fn check_cluster_keys(&self, redis: &RedisConfig) -> Result<(), ConfigError> {
        if !redis.cluster_nodes.is_empty() && !has_hash_tag(&self.prefix) && !has_hash_tag(&self.name) {
            return Err(ConfigError::new(
                "BULLMQ_PREFIX",
                "must carry a hash tag such as `{bull}` when REDIS_CLUSTER_NODES is set, so all keys of \
                 a queue share one cluster slot",
            ));
        }
        Ok(())
    }
}

/// Whether Redis Cluster would hash `key` by a tag: the text between the first `{` and the next
/// `}`, when not empty.
fn has_hash_tag(key: &str) -> bool {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .is_some_and(|(tag, _)| !tag.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::config;

    #[test]
    fn cluster_nodes_parse_and_reject_credentials() {
        let redis = config(&[
            ("REDIS_CLUSTER_NODES", "10.0.0.1:7000, rediss://cache.example:7001,"),
            ("BULLMQ_PREFIX", "{bull}"),
        ])
        .unwrap()
        .redis;
        assert_eq!(
            redis.cluster_nodes,
            ["redis://10.0.0.1:7000", "rediss://cache.example:7001"]
        );
        assert!(config(&[]).unwrap().redis.cluster_nodes.is_empty());
        for (value, needle) in [
            ("redis://:hunter2@10.0.0.1:7000", "REDIS_PASSWORD"),
            ("redis://:hunter2@[not-a-host", "not host:port"),
            ("10.0.0.1", "host and a port"),
            ("http://10.0.0.1:7000", "redis://"),
            (" , ", "lists no node"),
        ] {
            let error = config(&[("REDIS_CLUSTER_NODES", value)]).unwrap_err().to_string();
            assert!(
                error.contains("REDIS_CLUSTER_NODES") && error.contains(needle),
                "{value}: {error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn cluster_mode_needs_a_hash_tagged_prefix_or_queue() {
        let cluster = ("REDIS_CLUSTER_NODES", "10.0.0.1:7000");
        let error = config(&[cluster]).unwrap_err().to_string();
        assert!(error.contains("BULLMQ_PREFIX") && error.contains("hash tag"), "{error}");
        assert!(
            config(&[cluster, ("BULLMQ_PREFIX", "{}")]).is_err(),
            "an empty tag hashes the whole key"
        );
        assert!(config(&[cluster, ("BULLMQ_PREFIX", "{bull}")]).is_ok());
        assert!(config(&[cluster, ("QUEUE_NAME", "{design-render}")]).is_ok());
        assert!(
            config(&[("BULLMQ_PREFIX", "bull")]).is_ok(),
            "no tag needed without a cluster"
        );
    }

    #[test]
    fn queue_settings_have_defaults_and_overrides() {
        let defaults = config(&[]).unwrap().queue;
        assert_eq!(
            (defaults.name.as_str(), defaults.prefix.as_str()),
            ("design-render", "bull")
        );
        assert!(defaults.webhook.is_none());
        let queue = config(&[
            ("QUEUE_NAME", "renders"),
            ("BULLMQ_PREFIX", "{bull}"),
            ("WORKER_CONCURRENCY", "8"),
            ("TENANT_CONCURRENCY_OVERRIDES", "tenantA=5, tenantB=1"),
            ("TENANT_LEASE_SECONDS", "10"),
            ("QUEUE_DRAIN_DELAY_SECONDS", "2"),
        ])
        .unwrap()
        .queue;
        assert_eq!(queue.prefix, "{bull}");
        assert_eq!(queue.drain_delay, Duration::from_secs(2));
        assert_eq!(queue.worker_concurrency, 8);
        assert_eq!(queue.tenant_overrides.get("tenantA"), Some(&5));
        assert_eq!(queue.tenant_overrides.get("tenantB"), Some(&1));
        assert_eq!(queue.tenant_lease, Duration::from_secs(10));
        for (var, value) in [
            ("TENANT_CONCURRENCY_OVERRIDES", "tenantA"),
            ("TENANT_CONCURRENCY_OVERRIDES", "tenantA=0"),
            ("BULLMQ_PREFIX", "a:b"),
            ("WORKER_CONCURRENCY", "0"),
            ("WEBHOOK_ENABLED", "true"),
        ] {
            let error = config(&[(var, value)]).unwrap_err();
            assert!(
                error.var == var || (var == "WEBHOOK_ENABLED" && error.var == "WEBHOOK_URL"),
                "{error}"
            );
        }
    }
}
