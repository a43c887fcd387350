//! Local-disk storage under `STORAGE_DIR`.
//!
//! Writes go to a temporary file in the target directory and are renamed into place, so a reader
//! never sees half a PNG and a crash leaves no truncated asset behind.

use std::path::{Path, PathBuf};

use super::{BlobStore, StorageError, StorageKey, Stored};

pub struct LocalStore {
    root: PathBuf,
    public_base: Option<url::Url>,
}

impl LocalStore {
    /// Creates the root if needed. URLs are `public_base + key` when a base is given, otherwise
    /// `file://` URLs of the written files.
    pub fn new(root: &Path, public_base: Option<url::Url>) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.canonicalize()?,
            public_base,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &StorageKey) -> PathBuf {
        // StorageKey admits only plain segments, so the join stays under the root.
        key.as_str()
            .split('/')
            .fold(self.root.clone(), |path, segment| path.join(segment))
    }

    fn url_of(&self, key: &StorageKey, path: &Path) -> Result<url::Url, StorageError> {
        let url = match &self.public_base {
            Some(base) => base.join(key.as_str()).ok(),
            None => url::Url::from_file_path(path).ok(),
        };
        url.ok_or_else(|| StorageError::Rejected {
            key: key.clone(),
            reason: "cannot express the location as a URL".into(),
        })
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        _content_type: &'static str,
    ) -> Result<Stored, StorageError> {
        let path = self.path_of(key);
        let io_error = |source| StorageError::Io {
            key: key.clone(),
            source,
        };
        let directory = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&directory).await.map_err(io_error)?;
        // Unique per write: two jobs of this process may store the same content-addressed key
        // at once, and each must rename its own complete file into place.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let temporary = directory.join(format!(
            ".{}.{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("asset"),
            std::process::id(),
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        tokio::fs::write(&temporary, &bytes).await.map_err(io_error)?;
        if let Err(source) = tokio::fs::rename(&temporary, &path).await {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(io_error(source));
        }
        Ok(Stored {
            url: self.url_of(key, &path)?,
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
        match tokio::fs::read(self.path_of(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io {
                key: key.clone(),
                source,
            }),
        }
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(StorageError::Io {
                key: key.clone(),
                source: error,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_under_the_root_and_returns_urls() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), None).unwrap();
        let key = StorageKey::parse("renders/t/d/preview-00.png").unwrap();
        let url = store
            .put(&key, bytes::Bytes::from_static(b"png"), "image/png")
            .await
            .unwrap()
            .url;
        let path = url.to_file_path().unwrap();
        assert!(path.starts_with(store.root()));
        assert_eq!(std::fs::read(&path).unwrap(), b"png");
        // Rewriting the same key replaces the object and leaves no temporary file behind.
        store
            .put(&key, bytes::Bytes::from_static(b"png2"), "image/png")
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"png2");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        let public = LocalStore::new(
            dir.path(),
            Some(url::Url::parse("https://cdn.example.com/assets/").unwrap()),
        )
        .unwrap();
        let url = public
            .put(&key, bytes::Bytes::from_static(b"png"), "image/png")
            .await
            .unwrap()
            .url;
        assert_eq!(
            url.as_str(),
            "https://cdn.example.com/assets/renders/t/d/preview-00.png"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_of_one_key_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path(), None).unwrap());
        let key = StorageKey::parse("renders/t/d/composite-00.png").unwrap();
        let writes: Vec<_> = (0..32)
            .map(|_| {
                let (store, key) = (std::sync::Arc::clone(&store), key.clone());
                tokio::spawn(async move { store.put(&key, vec![7; 64 * 1024].into(), "image/png").await })
            })
            .collect();
        for write in writes {
            write.await.unwrap().expect("every write succeeds");
        }
        let directory = dir.path().join("renders/t/d");
        assert_eq!(
            std::fs::read(directory.join("composite-00.png")).unwrap(),
            vec![7; 64 * 1024]
        );
        assert_eq!(
            std::fs::read_dir(&directory).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
