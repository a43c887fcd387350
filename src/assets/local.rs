//! The local-file asset adapter, for the one-shot `render` command only.
//!
//! Owns reading local paths (given directly or as `file://` URLs) under the byte limit. Every
//! remote ref goes to the inner [`AssetSource`] it wraps (the HTTP downloader in production), so
//! the SSRF guard and the download limits still apply to URLs given on the command line.
//! It must never be built for the queue worker: a queued job must not be able to read the
//! worker's own disk. That choice is made once, in `app.rs`.

use std::path::Path;
use std::sync::Arc;

use tokio::io::AsyncReadExt as _;

use super::{AssetError, AssetRole, AssetSource};
use crate::job::AssetRef;

/// Reads local paths itself and delegates remote refs.
pub struct LocalFiles {
    /// Largest accepted file, in bytes (`AssetLimits::max_bytes`, the same limit downloads have).
    max_bytes: u64,
    remote: Arc<dyn AssetSource>,
}

impl LocalFiles {
    pub fn new(max_bytes: u64, remote: Arc<dyn AssetSource>) -> Self {
        Self { max_bytes, remote }
    }

    async fn read(&self, path: &Path, field: &'static str) -> Result<Vec<u8>, AssetError> {
        let read_error = |source| AssetError::LocalRead {
            field,
            path: path.display().to_string(),
            source,
        };
        let too_large = || AssetError::TooLarge {
            field,
            limit: self.max_bytes,
        };
        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
        // A declared size over the limit is refused before reading a byte.
        let metadata = file.metadata().await.map_err(read_error)?;
        if metadata.len() > self.max_bytes {
            return Err(too_large());
        }
        // The size can still be wrong (a file that grows while we read, or a device such as
        // /dev/zero that reports 0), so the read itself stops one byte past the limit.
        let capacity = usize::try_from(metadata.len()).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        file.take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(read_error)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(too_large());
        }
        Ok(bytes)
    }
}

#[async_trait::async_trait]
impl AssetSource for LocalFiles {
    async fn load(&self, asset: &AssetRef, role: AssetRole) -> Result<Vec<u8>, AssetError> {
        match asset {
            AssetRef::Local { path, .. } => self.read(path, role.field()).await,
            AssetRef::Remote(_) => self.remote.load(asset, role).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::memory::MemoryAssets;

    fn local(path: &Path) -> AssetRef {
        AssetRef::parse(&path.display().to_string()).expect("a local path")
    }

    #[tokio::test]
    async fn reads_local_paths_and_file_urls_without_asking_the_remote_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.png");
        std::fs::write(&path, b"local bytes").unwrap();
        let remote = Arc::new(MemoryAssets::new());
        let files = LocalFiles::new(1024, remote.clone());

        let plain = files.load(&local(&path), AssetRole::BaseTexture).await.unwrap();
        assert_eq!(plain, b"local bytes");
        let url = url::Url::from_file_path(&path).unwrap();
        let file_url = AssetRef::parse(url.as_str()).unwrap();
        assert_eq!(files.load(&file_url, AssetRole::Mask).await.unwrap(), b"local bytes");
        assert!(remote.requests().is_empty(), "{:?}", remote.requests());
    }

    #[tokio::test]
    async fn files_over_the_limit_are_refused_and_files_at_it_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let at_limit = dir.path().join("at.png");
        let over_limit = dir.path().join("over.png");
        std::fs::write(&at_limit, vec![7u8; 16]).unwrap();
        std::fs::write(&over_limit, vec![7u8; 17]).unwrap();
        let files = LocalFiles::new(16, Arc::new(MemoryAssets::new()));

        assert_eq!(files.load(&local(&at_limit), AssetRole::Mask).await.unwrap().len(), 16);
        let error = files.load(&local(&over_limit), AssetRole::Mask).await.unwrap_err();
        assert!(
            matches!(
                error,
                AssetError::TooLarge {
                    field: "maskUrl",
                    limit: 16
                }
            ),
            "{error}"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_device_that_reports_no_size_is_cut_off_at_the_limit() {
        let files = LocalFiles::new(4096, Arc::new(MemoryAssets::new()));
        let error = files
            .load(&local(Path::new("/dev/zero")), AssetRole::BaseTexture)
            .await
            .unwrap_err();
        assert!(matches!(error, AssetError::TooLarge { limit: 4096, .. }), "{error}");
    }

    #[tokio::test]
    async fn a_missing_file_is_unreadable_and_names_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(1024, Arc::new(MemoryAssets::new()));
        let error = files
            .load(&local(&dir.path().join("missing.png")), AssetRole::BaseTexture)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                AssetError::LocalRead {
                    field: "baseTextureUrl",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(error.code(), "asset_unreadable");
    }

    #[tokio::test]
    async fn remote_refs_are_delegated_with_their_role_and_answers_passed_back() {
        let remote = Arc::new(MemoryAssets::new());
        remote.serve("https://assets.example.com/base.png", b"remote bytes".to_vec());
        remote.fail("https://assets.example.com/mask.png", |field| AssetError::Status {
            field,
            status: 503,
        });
        let files = LocalFiles::new(1024, remote.clone());

        let base = AssetRef::parse("https://assets.example.com/base.png").unwrap();
        let mask = AssetRef::parse("https://assets.example.com/mask.png").unwrap();
        assert_eq!(
            files.load(&base, AssetRole::BaseTexture).await.unwrap(),
            b"remote bytes"
        );
        let error = files.load(&mask, AssetRole::Mask).await.unwrap_err();
        assert!(
            matches!(
                error,
                AssetError::Status {
                    field: "maskUrl",
                    status: 503
                }
            ),
            "{error}"
        );
        let requested: Vec<(String, AssetRole)> = remote
            .requests()
            .into_iter()
            .map(|request| (request.asset, request.role))
            .collect();
        assert_eq!(
            requested,
            [
                ("https://assets.example.com/base.png".to_owned(), AssetRole::BaseTexture),
                ("https://assets.example.com/mask.png".to_owned(), AssetRole::Mask),
            ]
        );
    }
}
