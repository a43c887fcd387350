//! Per-tenant concurrency: how many jobs of one tenant may run at once, across every worker
//! process and machine sharing the Redis.
//!
//! A slot is a *lease*, not a counter: each tenant has a sorted set whose members are job ids and
//! whose scores are expiry times (Redis server clock, milliseconds). In Redis, acquire, renew and
//! release are single Lua scripts, so they are atomic, and expired leases are dropped before every
//! acquire. A worker killed mid-job therefore leaks its slot for at most one lease period, instead
//! of the spec's INCR/DECR counter that leaks until its key expires. The job id is the lease token,
//! so a job recovered after a crash takes over its own lease instead of needing a second slot.
//!
//! This module owns the port ([`TenantLimiter`]) and the limit policy ([`TenantLimits`]); the
//! Redis scripts live in [`redis`] and an in-process twin with the same lease rules in
//! [`memory`]. It knows nothing about BullMQ or the pipeline.

pub mod memory;
pub mod redis;

pub use self::memory::MemoryTenantLimiter;
pub use self::redis::{RedisTenantLimiter, lease_key_prefix, saturation_key};

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error_code::ErrorCode;
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
    pub fn code(&self) -> ErrorCode {
        ErrorCode::TenantSlotsUnavailable
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
