//! The Redis [`CacheIndex`] every worker of a fleet shares.
//!
//! Keys: `<prefix>:<queue>:cache:<key>` holds the manifest JSON with the entry's TTL, and
//! `<prefix>:<queue>:cache:<key>:lock` the token of the worker rendering it. The lock is taken
//! with `SET NX PX`, and renewed or released by Lua scripts that first check the token, so a
//! worker never extends or frees another's lock.

use std::time::Duration;

use super::{CacheError, CacheIndex, CacheKey};

/// `KEYS[1]` = lock, `ARGV` = token, ttl ms. Returns 1 when the token held it and it was extended.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// `KEYS[1]` = lock, `ARGV[1]` = token. Deletes the lock only when the token holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisCacheIndex<C> {
    connection: C,
    prefix: String,
    renew: ::redis::Script,
    unlock: ::redis::Script,
}

impl<C> RedisCacheIndex<C> {
    /// Entries under the queue's prefix, so they share its hash slot on Redis Cluster when the
    /// prefix is hash-tagged.
    pub fn new(connection: C, prefix: &str, queue: &str) -> Self {
        Self {
            connection,
            prefix: format!("{prefix}:{queue}:cache:"),
            renew: ::redis::Script::new(RENEW),
            unlock: ::redis::Script::new(UNLOCK),
        }
    }

    fn entry(&self, key: &CacheKey) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock(&self, key: &CacheKey) -> String {
        format!("{}{key}:lock", self.prefix)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(error: ::redis::RedisError) -> CacheError {
    CacheError(error.to_string())
}

#[async_trait::async_trait]
impl<C> CacheIndex for RedisCacheIndex<C>
where
    C: ::redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn read(&self, key: &CacheKey) -> Result<Option<String>, CacheError> {
        let mut connection = self.connection.clone();
        ::redis::cmd("GET")
            .arg(self.entry(key))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn write(&self, key: &CacheKey, manifest: &str, ttl: Duration) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        ::redis::cmd("SET")
            .arg(self.entry(key))
            .arg(manifest)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn try_lock(&self, key: &CacheKey, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut connection = self.connection.clone();
        let answer: Option<String> = ::redis::cmd("SET")
            .arg(self.lock(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(answer.is_some())
    }

    async fn renew_lock(&self, key: &CacheKey, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut connection = self.connection.clone();
        let renewed: i64 = self
            .renew
            .key(self.lock(key))
            .arg(token)
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn unlock(&self, key: &CacheKey, token: &str) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .unlock
            .key(self.lock(key))
            .arg(token)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn is_locked(&self, key: &CacheKey) -> Result<bool, CacheError> {
        let mut connection = self.connection.clone();
        let exists: i64 = ::redis::cmd("EXISTS")
            .arg(self.lock(key))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(exists == 1)
    }
}
