//! `STORAGE_FALLBACK=local`: when the primary backend is unreachable after its own retries, the
//! object is written to local storage instead, and the result says so.
//!
//! Only transient failures fall back. A permanent refusal (bad credentials, a bad request) is a
//! configuration problem that local storage would only hide, so it is returned as it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BlobStore, FellBack, StorageError, StorageKey, Stored};

/// The primary store, and the local one it falls back to.
pub struct LocalFallback {
    primary: Arc<dyn BlobStore>,
    local: Arc<dyn BlobStore>,
    fallbacks: AtomicU64,
}

impl LocalFallback {
    pub fn new(primary: Arc<dyn BlobStore>, local: Arc<dyn BlobStore>) -> Self {
        Self {
            primary,
            local,
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Objects written to local storage instead of the primary since start-up.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalFallback {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<Stored, StorageError> {
        // A second handle on the same buffer, for the local write if the primary fails.
        let spare = bytes.clone();
        match self.primary.put(key, bytes, content_type).await {
            Err(error) if error.is_transient() => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("design_render_storage_fallbacks_total", "from" => self.primary.backend())
                    .increment(1);
                tracing::warn!(
                    storage.backend = self.primary.backend(),
                    "Storage {} failed for {key} after its retries; writing it to local storage instead: {error}",
                    self.primary.backend()
                );
                let stored = self.local.put(key, spare, content_type).await?;
                Ok(Stored {
                    fallback: Some(FellBack {
                        from: self.primary.backend(),
                        reason: error.to_string(),
                    }),
                    ..stored
                })
            }
            other => other,
        }
    }

    /// An object that fell back is on local disk; look there first (keys are content
    /// addressed, so a copy in both places is the same bytes).
    async fn get(&self, key: &StorageKey, url: &url::Url) -> Result<Option<Vec<u8>>, StorageError> {
        match self.local.get(key, url).await? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.primary.get(key, url).await,
        }
    }

    /// Only when the primary can: a durable copy written through this store should land on the
    /// primary, and one the primary cannot read back is not durable.
    fn reads_by_key(&self) -> bool {
        self.primary.reads_by_key()
    }

    async fn get_by_key(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        match self.local.get_by_key(key).await? {
            Some(bytes) => Ok(Some(bytes)),
            None => self.primary.get_by_key(key).await,
        }
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        self.primary.delete(key).await?;
        self.local.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::flaky::{Fault, FaultPlan, FlakyBlobStore};
    use crate::storage::local::LocalStore;
    use crate::storage::memory::MemoryBlobStore;

    fn key() -> StorageKey {
        StorageKey::parse("renders/t/d/preview-01.png").unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_primary_falls_back_to_local_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let primary = Arc::new(FlakyBlobStore::with_plan(
            Arc::new(MemoryBlobStore::new()),
            FaultPlan::new().fail_next_puts(1, Fault::Unavailable),
        ));
        let store = LocalFallback::new(primary.clone(), Arc::new(LocalStore::new(dir.path(), None).unwrap()));
        let stored = store
            .put(&key(), bytes::Bytes::from_static(b"png"), "image/png")
            .await
            .unwrap();
        assert_eq!(stored.backend, "local");
        let fell_back = stored.fallback.clone().expect("a fallback");
        assert_eq!(fell_back.from, "memory");
        assert!(fell_back.reason.contains("fault injected"), "{}", fell_back.reason);
        assert_eq!(
            store.get(&key(), &stored.url).await.unwrap().as_deref(),
            Some(&b"png"[..])
        );
        assert_eq!(store.fallbacks(), 1);
        // The primary is back: the next put goes there.
        let again = store
            .put(&key(), bytes::Bytes::from_static(b"png"), "image/png")
            .await
            .unwrap();
        assert_eq!((again.backend, again.fallback), ("memory", None));
        store.delete(&key()).await.unwrap();
        assert_eq!(store.get(&key(), &stored.url).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_permanent_refusal_is_not_hidden_by_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let primary = Arc::new(FlakyBlobStore::with_plan(
            Arc::new(MemoryBlobStore::new()),
            FaultPlan::new().fail_next_puts(1, Fault::Rejected),
        ));
        let store = LocalFallback::new(primary, Arc::new(LocalStore::new(dir.path(), None).unwrap()));
        let error = store
            .put(&key(), bytes::Bytes::from_static(b"png"), "image/png")
            .await
            .unwrap_err();
        assert!(matches!(error, StorageError::Rejected { .. }), "{error:?}");
        assert_eq!(store.fallbacks(), 0);
    }
}
