//! The in-process [`CacheIndex`]: entries and locks in a map, for the one-shot command (whose
//! entries outlive the process through their durable copies in local storage) and for tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{CacheError, CacheIndex, CacheKey};

#[derive(Default)]
pub struct MemoryCacheIndex {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<CacheKey, (String, Instant)>,
    locks: HashMap<CacheKey, (String, Instant)>,
}

impl MemoryCacheIndex {
    fn with<T>(&self, work: impl FnOnce(&mut State, Instant) -> T) -> Result<T, CacheError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| CacheError("the in-memory index was poisoned by a panic".into()))?;
        let now = Instant::now();
        state.entries.retain(|_, (_, expiry)| *expiry > now);
        state.locks.retain(|_, (_, expiry)| *expiry > now);
        Ok(work(&mut state, now))
    }
}

#[async_trait::async_trait]
impl CacheIndex for MemoryCacheIndex {
    async fn read(&self, key: &CacheKey) -> Result<Option<String>, CacheError> {
        self.with(|state, _| state.entries.get(key).map(|(text, _)| text.clone()))
    }

    async fn write(&self, key: &CacheKey, manifest: &str, ttl: Duration) -> Result<(), CacheError> {
        self.with(|state, now| {
            state.entries.insert(key.clone(), (manifest.to_owned(), now + ttl));
        })
    }

    async fn try_lock(&self, key: &CacheKey, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        self.with(|state, now| {
            if state.locks.contains_key(key) {
                return false;
            }
            state.locks.insert(key.clone(), (token.to_owned(), now + ttl));
            true
        })
    }

    async fn renew_lock(&self, key: &CacheKey, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        self.with(|state, now| match state.locks.get_mut(key) {
            Some((holder, expiry)) if holder == token => {
                *expiry = now + ttl;
                true
            }
            _ => false,
        })
    }

    async fn unlock(&self, key: &CacheKey, token: &str) -> Result<(), CacheError> {
        self.with(|state, _| {
            if state.locks.get(key).is_some_and(|(holder, _)| holder == token) {
                state.locks.remove(key);
            }
        })
    }

    async fn is_locked(&self, key: &CacheKey) -> Result<bool, CacheError> {
        self.with(|state, _| state.locks.contains_key(key))
    }
}
