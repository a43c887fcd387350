//! The [`TenantLimiter`] contract, run against the memory limiter (under paused Tokio time, so a
//! lease expires without waiting) and the Redis limiter (real server time, a short lease, its own
//! key prefix).
//!
//! Every adapter is built with [`suite_limits`]. The suite lets time pass with
//! `tokio::time::sleep`, derived from the adapter's own [`TenantLimiter::lease`]: under a paused
//! clock the sleep returns as soon as the runtime is idle, against Redis it is the bounded wait a
//! lease needs to expire on the server. "Still held" checks come 0.6 lease after the last renewal,
//! leaving 0.4 lease of slack on a busy machine.

use std::collections::BTreeMap;
use std::time::Duration;

use design_render::job::TenantId;
use design_render::tenancy::{TenantLimiter, TenantLimits};

/// Default 2; `wide` may run 3 jobs, `solo` one.
pub fn suite_limits() -> TenantLimits {
    TenantLimits {
        default: 2,
        overrides: BTreeMap::from([("wide".to_owned(), 3), ("solo".to_owned(), 1)]),
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).expect("valid tenant id")
}

async fn acquire(limiter: &dyn TenantLimiter, tenant: &TenantId, token: &str) -> bool {
    limiter.try_acquire(tenant, token).await.expect("acquire answers")
}

async fn renew(limiter: &dyn TenantLimiter, tenant: &TenantId, token: &str) -> bool {
    limiter.renew(tenant, token).await.expect("renew answers")
}

/// Lets `fraction` of a lease pass.
async fn pass(limiter: &dyn TenantLimiter, fraction: f64) {
    tokio::time::sleep(limiter.lease().mul_f64(fraction)).await;
}

/// Long enough for every lease taken or renewed before it to expire.
async fn outlive_the_lease(limiter: &dyn TenantLimiter) {
    tokio::time::sleep(limiter.lease() + limiter.lease() / 4 + Duration::from_millis(20)).await;
}

pub async fn the_limit_holds(limiter: &dyn TenantLimiter) {
    let busy = tenant("busy");
    assert!(acquire(limiter, &busy, "job-1").await);
    assert!(acquire(limiter, &busy, "job-2").await);
    assert!(
        !acquire(limiter, &busy, "job-3").await,
        "a third slot under a limit of 2"
    );
    assert!(!acquire(limiter, &busy, "job-4").await);
}

pub async fn other_tenants_are_independent(limiter: &dyn TenantLimiter) {
    let (busy, calm) = (tenant("busy"), tenant("calm"));
    assert!(acquire(limiter, &busy, "job-1").await);
    assert!(acquire(limiter, &busy, "job-2").await);
    assert!(!acquire(limiter, &busy, "job-3").await);
    assert!(acquire(limiter, &calm, "job-3").await, "blocked by another tenant");
    assert!(acquire(limiter, &calm, "job-4").await);
    assert!(!acquire(limiter, &calm, "job-5").await, "calm has a limit of its own");
    limiter.release(&calm, "job-3").await.expect("release");
    assert!(
        !acquire(limiter, &busy, "job-5").await,
        "a release freed another tenant's slot"
    );
}

pub async fn an_override_replaces_the_default_limit(limiter: &dyn TenantLimiter) {
    let (wide, solo) = (tenant("wide"), tenant("solo"));
    for token in ["job-1", "job-2", "job-3"] {
        assert!(acquire(limiter, &wide, token).await, "{token} under a limit of 3");
    }
    assert!(!acquire(limiter, &wide, "job-4").await);
    assert!(acquire(limiter, &solo, "job-1").await);
    assert!(
        !acquire(limiter, &solo, "job-2").await,
        "a second slot under a limit of 1"
    );
}

pub async fn an_expired_lease_frees_its_slot(limiter: &dyn TenantLimiter) {
    let busy = tenant("busy");
    assert!(acquire(limiter, &busy, "job-1").await);
    assert!(acquire(limiter, &busy, "job-2").await);
    assert!(!acquire(limiter, &busy, "job-3").await);
    // Both holders died without releasing.
    outlive_the_lease(limiter).await;
    assert!(acquire(limiter, &busy, "job-3").await, "an expired lease still blocks");
    assert!(acquire(limiter, &busy, "job-4").await);
    assert!(!acquire(limiter, &busy, "job-5").await, "the new leases count");
    assert!(!renew(limiter, &busy, "job-1").await, "an expired lease was renewed");
}

pub async fn renewal_extends_a_lease_and_fails_once_it_expired(limiter: &dyn TenantLimiter) {
    let solo = tenant("solo");
    assert!(acquire(limiter, &solo, "job-1").await);
    pass(limiter, 0.6).await;
    assert!(renew(limiter, &solo, "job-1").await, "a live lease was not renewed");
    // Past the first expiry, inside the renewed one.
    pass(limiter, 0.6).await;
    assert!(
        !acquire(limiter, &solo, "job-2").await,
        "the renewal did not extend the lease"
    );
    assert!(renew(limiter, &solo, "job-1").await);
    outlive_the_lease(limiter).await;
    assert!(!renew(limiter, &solo, "job-1").await, "renewed after expiry");
    assert!(acquire(limiter, &solo, "job-2").await);
    assert!(!renew(limiter, &solo, "never-held").await);
}

pub async fn release_frees_the_slot_and_is_idempotent(limiter: &dyn TenantLimiter) {
    let solo = tenant("solo");
    assert!(acquire(limiter, &solo, "job-1").await);
    assert!(!acquire(limiter, &solo, "job-2").await);
    limiter.release(&solo, "job-1").await.expect("release");
    limiter.release(&solo, "job-1").await.expect("second release");
    limiter
        .release(&solo, "never-held")
        .await
        .expect("release of an unknown token");
    limiter
        .release(&tenant("unknown-tenant"), "job-1")
        .await
        .expect("release for a tenant without leases");
    assert!(!renew(limiter, &solo, "job-1").await, "a released lease was renewed");
    assert!(acquire(limiter, &solo, "job-2").await, "the released slot is free");
    assert!(
        !acquire(limiter, &solo, "job-3").await,
        "the double release freed a second slot"
    );
}

pub async fn the_same_token_reacquires_without_a_second_slot(limiter: &dyn TenantLimiter) {
    let busy = tenant("busy");
    assert!(acquire(limiter, &busy, "job-1").await);
    assert!(
        acquire(limiter, &busy, "job-1").await,
        "the holder was refused its own slot"
    );
    assert!(acquire(limiter, &busy, "job-2").await, "job-1 took two slots");
    // Saturated, yet the holder (a job recovered after a crash) gets its slot back.
    assert!(acquire(limiter, &busy, "job-1").await);
    assert!(!acquire(limiter, &busy, "job-3").await);

    let solo = tenant("solo");
    assert!(acquire(limiter, &solo, "job-1").await);
    pass(limiter, 0.6).await;
    assert!(acquire(limiter, &solo, "job-1").await);
    // Past the first expiry: only the re-acquire's extension keeps the slot.
    pass(limiter, 0.6).await;
    assert!(
        !acquire(limiter, &solo, "job-2").await,
        "the re-acquire did not extend the lease"
    );
}

/// One test per suite function, with the given test attribute, for an adapter module that defines
/// `async fn open()` returning a fixture with `limiter()` that cleans up in `Drop`.
macro_rules! tenant_limiter_conformance {
    (#[$attribute:meta]) => {
        tenant_limiter_conformance!(#[$attribute]
            the_limit_holds,
            other_tenants_are_independent,
            an_override_replaces_the_default_limit,
            an_expired_lease_frees_its_slot,
            renewal_extends_a_lease_and_fails_once_it_expired,
            release_frees_the_slot_and_is_idempotent,
            the_same_token_reacquires_without_a_second_slot,
        );
    };
    (#[$attribute:meta] $($test:ident),* $(,)?) => {
        $(
            #[$attribute]
            async fn $test() {
                let subject = open().await;
                super::$test(subject.limiter()).await;
            }
        )*
    };
}

mod memory {
    use std::time::Duration;

    use design_render::tenancy::{MemoryTenantLimiter, TenantLimiter};

    struct Memory(MemoryTenantLimiter);

    impl Memory {
        fn limiter(&self) -> &dyn TenantLimiter {
            &self.0
        }
    }

    /// A long lease: under paused time it costs nothing, and it proves no test relies on wall time.
    async fn open() -> Memory {
        Memory(MemoryTenantLimiter::new(super::suite_limits(), Duration::from_secs(30)))
    }

    tenant_limiter_conformance!(#[tokio::test(start_paused = true)]);
}

mod redis {
    use std::time::Duration;

    use design_render::tenancy::{RedisTenantLimiter, TenantLimiter};
    use redis::aio::MultiplexedConnection;

    use crate::helpers::{REDIS_URL, RedisKeys};

    /// Short, so expiry tests wait about a second; long enough that a "still held" check keeps
    /// 200 ms of slack.
    const LEASE: Duration = Duration::from_millis(500);

    /// The limiter on a prefix of its own, whose keys are deleted with the fixture.
    struct Redis {
        limiter: RedisTenantLimiter<MultiplexedConnection>,
        _keys: RedisKeys,
    }

    impl Redis {
        fn limiter(&self) -> &dyn TenantLimiter {
            &self.limiter
        }
    }

    async fn open() -> Redis {
        let client = redis::Client::open(REDIS_URL).expect("redis url");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis on 127.0.0.1:6379");
        let keys = RedisKeys::new("drconf");
        Redis {
            limiter: RedisTenantLimiter::new(connection, keys.prefix(), "limiter", super::suite_limits(), LEASE),
            _keys: keys,
        }
    }

    tenant_limiter_conformance!(#[tokio::test]);

    /// The dashboard's figure: each refusal counts once for its tenant, and only refusals.
    #[tokio::test]
    async fn refusals_are_counted_per_tenant_in_the_saturation_set() {
        use design_render::job::TenantId;
        use redis::AsyncCommands;

        let redis = open().await;
        let tenant = TenantId::parse("tenant-sat").unwrap();
        let limit = super::suite_limits().limit_for(&tenant);
        for token in 0..limit {
            assert!(
                redis
                    .limiter()
                    .try_acquire(&tenant, &format!("job-{token}"))
                    .await
                    .unwrap()
            );
        }
        assert!(!redis.limiter().try_acquire(&tenant, "job-over-1").await.unwrap());
        assert!(!redis.limiter().try_acquire(&tenant, "job-over-2").await.unwrap());
        let mut connection = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let key = design_render::tenancy::saturation_key(redis._keys.prefix(), "limiter");
        let counted: Option<f64> = connection.zscore(&key, "tenant-sat").await.unwrap();
        assert_eq!(counted, Some(2.0));
    }
}
