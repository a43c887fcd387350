//! The Redis lease store behind [`TenantLimiter`]: one sorted set per tenant, changed only by
//! atomic Lua scripts that read the Redis server clock.
//!
//! It owns the scripts and the key layout ([`lease_key_prefix`]); the limit policy comes from
//! [`TenantLimits`]. Because every worker process shares the server clock, lease expiry does not
//! depend on the clocks of the machines running workers.

use std::time::Duration;

use super::{TenancyError, TenantLimiter, TenantLimits};
use crate::job::TenantId;

/// Removes expired leases, then adds (or refreshes) the token if there is room; when there is
/// none, counts the refusal for the tenant in the saturation set (the dashboard's figure).
/// `KEYS[1]` = lease set, `KEYS[2]` = saturation sorted set; ARGV = token, limit, lease ms, tenant.
/// Returns 1 when the slot is held.
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
redis.call('ZINCRBY', KEYS[2], 1, ARGV[4])
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
    saturated_key: String,
    limits: TenantLimits,
    lease: Duration,
    acquire: ::redis::Script,
    renew: ::redis::Script,
}

impl<C> RedisTenantLimiter<C> {
    pub fn new(connection: C, prefix: &str, queue: &str, limits: TenantLimits, lease: Duration) -> Self {
        Self {
            connection,
            key_prefix: lease_key_prefix(prefix, queue),
            saturated_key: saturation_key(prefix, queue),
            limits,
            lease,
            acquire: ::redis::Script::new(ACQUIRE),
            renew: ::redis::Script::new(RENEW),
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

/// The sorted set of how often each tenant's job found its slots full: tenant id scored by the
/// count, so the most saturated tenants are read without reading them all.
pub fn saturation_key(prefix: &str, queue: &str) -> String {
    format!("{prefix}:{queue}:tenant-saturated")
}

fn unavailable(error: ::redis::RedisError) -> TenancyError {
    TenancyError::Unavailable(error.to_string())
}

#[async_trait::async_trait]
impl<C> TenantLimiter for RedisTenantLimiter<C>
where
    C: ::redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn try_acquire(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError> {
        let mut connection = self.connection.clone();
        let held: i64 = self
            .acquire
            .key(self.key(tenant))
            .key(&self.saturated_key)
            .arg(token)
            .arg(self.limits.limit_for(tenant))
            .arg(self.lease_ms())
            .arg(tenant.as_str())
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
        let _: i64 = ::redis::cmd("ZREM")
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
