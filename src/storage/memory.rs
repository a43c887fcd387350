//! In-memory blobs: the [`BlobStore`] twin of the disk and cloud adapters, for tests and local
//! runs.
//!
//! It owns a map from [`StorageKey`] to the last bytes and content type written there. A put
//! replaces the object whole, as the other adapters do, and the URL depends on the key alone
//! (`memory://blobs/<key>`), so re-running a job yields the same URLs. Nothing is ever evicted:
//! it is meant for runs that write a bounded number of assets.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{BlobStore, StorageError, StorageKey, Stored};

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
}

/// Objects kept in process memory.
#[derive(Default)]
pub struct MemoryBlobStore {
    objects: Mutex<HashMap<StorageKey, StoredBlob>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The URL a put of `key` returns. Keys admit only `[A-Za-z0-9._-]` segments joined by `/`,
    /// so every key is a valid URL path.
    pub fn url_of(key: &StorageKey) -> Result<url::Url, StorageError> {
        url::Url::parse(&format!("memory://blobs/{key}")).map_err(|error| StorageError::Rejected {
            key: key.clone(),
            reason: format!("cannot express the key as a URL: {error}"),
        })
    }

    /// What was last stored under `key`.
    pub fn blob(&self, key: &StorageKey) -> Option<StoredBlob> {
        self.lock().get(key).cloned()
    }

    /// Every stored key, sorted, so tests can compare listings directly.
    pub fn keys(&self) -> Vec<StorageKey> {
        let mut keys: Vec<StorageKey> = self.lock().keys().cloned().collect();
        keys.sort_by(|left, right| left.as_str().cmp(right.as_str()));
        keys
    }

    /// A poisoned lock only means a thread panicked around a single map insert; the map is
    /// still consistent.
    fn lock(&self) -> MutexGuard<'_, HashMap<StorageKey, StoredBlob>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl BlobStore for MemoryBlobStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<Stored, StorageError> {
        let url = Self::url_of(key)?;
        self.lock().insert(key.clone(), StoredBlob { bytes, content_type });
        Ok(Stored {
            url,
            backend: self.backend(),
            fallback: None,
        })
    }

    async fn get(&self, key: &StorageKey, _url: &url::Url) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_by_key(key).await
    }

    fn reads_by_key(&self) -> bool {
        true
    }

    async fn get_by_key(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().get(key).map(|blob| blob.bytes.to_vec()))
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        self.lock().remove(key);
        Ok(())
    }
}
