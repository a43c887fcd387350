//! Per-tenant concurrency: how many jobs of one tenant may run at once, across every worker
//! process and machine sharing the Redis.
//!
//! A slot is a *lease*, not a counter: each tenant has a sorted set whose members are job ids and
//! whose scores are expiry times (Redis server clock, milliseconds). Acquire, renew and release
//! are single Lua scripts, so they are atomic, and expired leases are dropped before every
//! acquire. A worker killed mid-job therefore leaks its slot for at most one lease period, instead
//! of the spec's INCR/DECR counter that leaks until its key expires. The job id is the lease token,
//! so a job recovered after a crash takes over its own lease instead of needing a second slot.
//!
//! This module owns the limit policy and the Redis scripts; it knows nothing about BullMQ or the
//! pipeline.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::job::TenantId;

/// The limit for each tenant: a default plus explicit overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLimits {
    pub default: u32,
    pub overrides: BTreeMap<String, u32>,
}

impl TenantLimits {
    pub fn limit_for(&self, tenant: &TenantId) -> u32 {
        self.overrides
            .get(tenant.as_str())
            .copied()
            .unwrap_or(self.default)
            .max(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// Redis could not be reached or the script failed; the job should be retried.
    #[error("tenant slot store unavailable: {0}")]
    Unavailable(String),
}

impl TenancyError {
    pub fn code(&self) -> &'static str {
        "tenant_slots_unavailable"
    }
}

/// Acquires and releases per-tenant slots. Object safe, so the worker holds an `Arc<dyn _>`.
#[async_trait::async_trait]
pub trait TenantLimiter: Send + Sync {
    /// Takes a slot for `token` if the tenant is below its limit; `Ok(false)` when saturated.
    /// Taking a slot the token already holds succeeds and extends it.
    async fn try_acquire(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError>;
    /// Extends a held lease; `Ok(false)` when it had already expired and was lost.
    async fn renew(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError>;
    /// Gives the slot back (idempotent).
    async fn release(&self, tenant: &TenantId, token: &str) -> Result<(), TenancyError>;
    /// How long a lease lives without renewal.
    fn lease(&self) -> Duration;
}

/// Removes expired leases, then adds (or refreshes) the token if there is room.
/// `KEYS[1]` = lease set; ARGV = token, limit, lease ms. Returns 1 when the slot is held.
const ACQUIRE: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0
";

/// Extends a lease that has not expired yet. Returns 1 when it was still held.
const RENEW: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[2])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now_ms then
  redis.call('ZADD', KEYS[1], now_ms + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0
";

/// The Redis implementation. Keys: `<prefix>:<queue>:tenant-slots:<tenant>` (sharing the queue's
/// prefix keeps them in the queue's hash slot on Redis Cluster when the prefix is hash-tagged).
pub struct RedisTenantLimiter<C> {
    connection: C,
    key_prefix: String,
    limits: TenantLimits,
    lease: Duration,
    acquire: redis::Script,
    renew: redis::Script,
}

impl<C> RedisTenantLimiter<C> {
    pub fn new(connection: C, prefix: &str, queue: &str, limits: TenantLimits, lease: Duration) -> Self {
        Self {
            connection,
            key_prefix: lease_key_prefix(prefix, queue),
            limits,
            lease,
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
        }
    }

    fn key(&self, tenant: &TenantId) -> String {
        format!("{}{}", self.key_prefix, tenant.as_str())
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// The prefix of every tenant's lease set; the tenant id is appended.
pub fn lease_key_prefix(prefix: &str, queue: &str) -> String {
    format!("{prefix}:{queue}:tenant-slots:")
}

fn unavailable(error: redis::RedisError) -> TenancyError {
    TenancyError::Unavailable(error.to_string())
}

#[async_trait::async_trait]
impl<C> TenantLimiter for RedisTenantLimiter<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn try_acquire(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError> {
        let mut connection = self.connection.clone();
        let held: i64 = self
            .acquire
            .key(self.key(tenant))
            .arg(token)
            .arg(self.limits.limit_for(tenant))
            .arg(self.lease_ms())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn renew(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError> {
        let mut connection = self.connection.clone();
        let held: i64 = self
            .renew
            .key(self.key(tenant))
            .arg(token)
            .arg(self.lease_ms())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn release(&self, tenant: &TenantId, token: &str) -> Result<(), TenancyError> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("ZREM")
            .arg(self.key(tenant))
            .arg(token)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_the_default() {
        let limits = TenantLimits {
            default: 2,
            overrides: BTreeMap::from([("big".to_owned(), 5)]),
        };
        assert_eq!(limits.limit_for(&TenantId::parse("big").unwrap()), 5);
        assert_eq!(limits.limit_for(&TenantId::parse("small").unwrap()), 2);
    }
}
