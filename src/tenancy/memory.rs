//! In-process tenant leases: the [`TenantLimiter`] twin of the Redis adapter, for tests and
//! single-process runs.
//!
//! It owns a map of tenant → token → expiry behind a short-lived mutex and applies the Redis
//! scripts' rules: expired leases are dropped before an acquire, a token that still holds a lease
//! re-acquires it without a second slot (and extends it), renewal fails once a lease has expired,
//! and release is idempotent. Time is [`tokio::time::Instant`], so a test under
//! `tokio::time::pause()` can let leases expire with `advance` instead of waiting.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{TenancyError, TenantLimiter, TenantLimits};
use crate::job::TenantId;

/// One unexpired lease, as listed by [`MemoryTenantLimiter::held_leases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub tenant: TenantId,
    pub token: String,
    /// How long the lease lives without renewal, from the moment it was listed.
    pub expires_in: Duration,
}

/// Tenant leases kept in process memory.
pub struct MemoryTenantLimiter {
    limits: TenantLimits,
    lease: Duration,
    /// Expiry of each token's lease, per tenant. Expired entries stay until the tenant's next
    /// acquire drops them, as in the Redis sorted sets.
    leases: Mutex<HashMap<TenantId, HashMap<String, Instant>>>,
}

impl MemoryTenantLimiter {
    pub fn new(limits: TenantLimits, lease: Duration) -> Self {
        Self {
            limits,
            lease,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Every lease that has not expired yet, ordered by tenant and token. A finished test should
    /// find none: each job gives its slot back.
    pub fn held_leases(&self) -> Vec<HeldLease> {
        let now = Instant::now();
        let leases = self.lock();
        let mut held: Vec<HeldLease> = leases
            .iter()
            .flat_map(|(tenant, tokens)| {
                tokens
                    .iter()
                    .filter(move |(_, expiry)| **expiry > now)
                    .map(move |(token, expiry)| HeldLease {
                        tenant: tenant.clone(),
                        token: token.clone(),
                        expires_in: expiry.duration_since(now),
                    })
            })
            .collect();
        held.sort_by(|left, right| (&left.tenant, &left.token).cmp(&(&right.tenant, &right.token)));
        held
    }

    /// How many unexpired leases each tenant holds, for tenants holding at least one.
    #[cfg(test)]
    fn held_counts(&self) -> std::collections::BTreeMap<TenantId, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for lease in self.held_leases() {
            *counts.entry(lease.tenant).or_insert(0) += 1;
        }
        counts
    }

    /// A poisoned lock only means a thread panicked between map operations that each leave the
    /// map consistent, so the leases stay usable.
    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, HashMap<String, Instant>>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl TenantLimiter for MemoryTenantLimiter {
    async fn try_acquire(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError> {
        let now = Instant::now();
        let limit = usize::try_from(self.limits.limit_for(tenant)).unwrap_or(usize::MAX);
        let mut leases = self.lock();
        let tokens = leases.entry(tenant.clone()).or_default();
        // The Redis script removes scores up to and including now, so a lease expiring exactly
        // now is gone.
        tokens.retain(|_, expiry| *expiry > now);
        if tokens.contains_key(token) || tokens.len() < limit {
            tokens.insert(token.to_owned(), now + self.lease);
            return Ok(true);
        }
        Ok(false)
    }

    async fn renew(&self, tenant: &TenantId, token: &str) -> Result<bool, TenancyError> {
        let now = Instant::now();
        let mut leases = self.lock();
        match leases.get_mut(tenant).and_then(|tokens| tokens.get_mut(token)) {
            Some(expiry) if *expiry > now => {
                *expiry = now + self.lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, tenant: &TenantId, token: &str) -> Result<(), TenancyError> {
        let mut leases = self.lock();
        if let Some(tokens) = leases.get_mut(tenant) {
            tokens.remove(token);
            if tokens.is_empty() {
                leases.remove(tenant);
            }
        }
        Ok(())
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn held_leases_lists_only_unexpired_leases() {
        let limiter = MemoryTenantLimiter::new(
            TenantLimits {
                default: 2,
                overrides: BTreeMap::new(),
            },
            Duration::from_secs(10),
        );
        let tenant = TenantId::parse("tenant-1").unwrap();
        assert!(limiter.try_acquire(&tenant, "job-1").await.unwrap());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(limiter.try_acquire(&tenant, "job-2").await.unwrap());
        let held = limiter.held_leases();
        assert_eq!(
            held.iter().map(|lease| lease.token.as_str()).collect::<Vec<_>>(),
            ["job-1", "job-2"]
        );
        assert_eq!(held[0].expires_in, Duration::from_secs(6));
        tokio::time::advance(Duration::from_secs(6)).await;
        let held = limiter.held_leases();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(limiter.held_counts().get(&tenant), Some(&1));
        limiter.release(&tenant, "job-2").await.unwrap();
        assert!(limiter.held_leases().is_empty());
    }
}
