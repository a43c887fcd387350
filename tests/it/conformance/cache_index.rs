//! The [`CacheIndex`] contract, run against the memory index (under paused Tokio time, so an
//! entry or a lock expires without waiting) and the Redis index (real server time, short TTLs,
//! its own key prefix).
//!
//! The suite lets time pass with `tokio::time::sleep` of [`TTL`] fractions: under a paused
//! clock the sleep returns as soon as the runtime is idle, against Redis it is the bounded wait
//! an expiry needs on the server.

use std::time::Duration;

use design_render::cache::{CacheIndex, CacheKey};

/// Short, so expiry tests against Redis wait well under a second.
const TTL: Duration = Duration::from_millis(400);

fn key(digit: char) -> CacheKey {
    CacheKey::from_hex(&digit.to_string().repeat(64)).expect("64 hex digits")
}

async fn locked(index: &dyn CacheIndex, key: &CacheKey) -> bool {
    index.is_locked(key).await.expect("is_locked answers")
}

pub async fn an_entry_is_read_back_until_it_expires(index: &dyn CacheIndex) {
    let (a, b) = (key('a'), key('b'));
    assert_eq!(index.read(&a).await.expect("read"), None);
    index.write(&a, r#"{"entry":"a"}"#, TTL).await.expect("write");
    index.write(&b, r#"{"entry":"b"}"#, TTL * 10).await.expect("write");
    assert_eq!(index.read(&a).await.expect("read").as_deref(), Some(r#"{"entry":"a"}"#));
    index.write(&a, r#"{"entry":"a2"}"#, TTL).await.expect("overwrite");
    assert_eq!(
        index.read(&a).await.expect("read").as_deref(),
        Some(r#"{"entry":"a2"}"#)
    );
    tokio::time::sleep(TTL + TTL / 2).await;
    assert_eq!(index.read(&a).await.expect("read"), None, "an expired entry was read");
    assert_eq!(
        index.read(&b).await.expect("read").as_deref(),
        Some(r#"{"entry":"b"}"#),
        "a longer-lived entry went with it"
    );
}

pub async fn a_lock_has_one_holder_until_it_is_released(index: &dyn CacheIndex) {
    let (a, b) = (key('1'), key('2'));
    assert!(!locked(index, &a).await);
    assert!(index.try_lock(&a, "worker-1", TTL * 10).await.expect("lock"));
    assert!(locked(index, &a).await);
    assert!(
        !index.try_lock(&a, "worker-2", TTL * 10).await.expect("lock"),
        "two holders"
    );
    assert!(
        index.try_lock(&b, "worker-2", TTL * 10).await.expect("lock"),
        "keys share a lock"
    );
    index.unlock(&a, "worker-2").await.expect("unlock by another");
    assert!(locked(index, &a).await, "another worker's unlock freed the lock");
    index.unlock(&a, "worker-1").await.expect("unlock");
    assert!(!locked(index, &a).await);
    index.unlock(&a, "worker-1").await.expect("a second unlock succeeds");
    assert!(
        index.try_lock(&a, "worker-2", TTL * 10).await.expect("lock"),
        "the freed lock"
    );
    assert!(locked(index, &b).await, "unlocking one key freed another");
}

pub async fn only_the_holder_renews_and_an_unrenewed_lock_expires(index: &dyn CacheIndex) {
    let a = key('c');
    assert!(index.try_lock(&a, "worker-1", TTL).await.expect("lock"));
    assert!(
        !index.renew_lock(&a, "worker-2", TTL).await.expect("renew"),
        "renewed by another"
    );
    tokio::time::sleep(TTL * 6 / 10).await;
    assert!(index.renew_lock(&a, "worker-1", TTL).await.expect("renew"));
    // Past the first expiry, inside the renewed one.
    tokio::time::sleep(TTL * 6 / 10).await;
    assert!(locked(index, &a).await, "the renewal did not extend the lock");
    // The holder died: nobody renews.
    tokio::time::sleep(TTL + TTL / 2).await;
    assert!(!locked(index, &a).await, "a dead holder's lock never expired");
    assert!(
        !index.renew_lock(&a, "worker-1", TTL).await.expect("renew"),
        "renewed after expiry"
    );
    assert!(index.try_lock(&a, "worker-2", TTL).await.expect("lock"));
}

macro_rules! cache_index_conformance {
    (#[$attribute:meta]) => {
        cache_index_conformance!(#[$attribute]
            an_entry_is_read_back_until_it_expires,
            a_lock_has_one_holder_until_it_is_released,
            only_the_holder_renews_and_an_unrenewed_lock_expires,
        );
    };
    (#[$attribute:meta] $($test:ident),* $(,)?) => {
        $(
            #[$attribute]
            async fn $test() {
                let subject = open().await;
                super::$test(subject.index()).await;
            }
        )*
    };
}

mod memory {
    use design_render::cache::CacheIndex;
    use design_render::cache::memory::MemoryCacheIndex;

    struct Memory(MemoryCacheIndex);

    impl Memory {
        fn index(&self) -> &dyn CacheIndex {
            &self.0
        }
    }

    async fn open() -> Memory {
        Memory(MemoryCacheIndex::default())
    }

    cache_index_conformance!(#[tokio::test(start_paused = true)]);
}

mod redis {
    use design_render::cache::CacheIndex;
    use design_render::cache::redis::RedisCacheIndex;
    use redis::aio::MultiplexedConnection;

    use crate::helpers::{REDIS_URL, RedisKeys};

    /// The index on a prefix of its own, whose keys are deleted with the fixture.
    struct Redis {
        index: RedisCacheIndex<MultiplexedConnection>,
        keys: RedisKeys,
    }

    impl Redis {
        fn index(&self) -> &dyn CacheIndex {
            &self.index
        }
    }

    async fn open() -> Redis {
        let connection = redis::Client::open(REDIS_URL)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis on 127.0.0.1:6379");
        let keys = RedisKeys::new("drcache");
        Redis {
            index: RedisCacheIndex::new(connection, keys.prefix(), "renders"),
            keys,
        }
    }

    cache_index_conformance!(#[tokio::test]);

    /// The layout operators and other tools see: the manifest under `<prefix>:<queue>:cache:<key>`
    /// with its TTL, the lock beside it.
    #[tokio::test]
    async fn entries_and_locks_live_under_the_queue_prefix_with_their_ttl() {
        let subject = open().await;
        let key = super::key('d');
        subject
            .index()
            .write(&key, "{}", std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(
            subject
                .index()
                .try_lock(&key, "w", std::time::Duration::from_secs(30))
                .await
                .unwrap()
        );
        let prefix = subject.keys.prefix().to_owned();
        let mut connection = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let entry = format!("{prefix}:renders:cache:{key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&entry)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((3_590_000..=3_600_000).contains(&ttl), "TTL {ttl} ms");
        let holder: String = redis::cmd("GET")
            .arg(format!("{entry}:lock"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(holder, "w");
    }
}
