//! The storage port: where rendered assets are written and what URL reaches them.
//!
//! Keys are built only from validated ids and content hashes ([`StorageKey::for_asset`]) or
//! checked segment by segment ([`StorageKey::parse`]); a key can never name a parent directory,
//! an absolute path or contain NUL, so no adapter can be led outside its root.
//!
//! Adapters: Cloudinary (signed uploads), S3-compatible buckets, local disk and memory.
//! [`fallback::LocalFallback`] writes to local disk when the primary is unreachable after its
//! retries; [`flaky::FlakyBlobStore`] injects planned faults, for tests of the retry paths.

pub mod cloudinary;
pub mod fallback;
pub mod flaky;
pub mod local;
pub mod memory;
pub mod s3;

use std::fmt;

use crate::job::{DesignId, TenantId};

/// A relative, slash-separated object key made of safe segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StorageKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage key: {0}")]
pub struct InvalidKey(String);

impl StorageKey {
    /// Accepts `seg/seg/...` where every segment is 1..=128 characters of `[A-Za-z0-9._-]`,
    /// is not `.` or `..`, and does not start with a dot.
    pub fn parse(text: &str) -> Result<Self, InvalidKey> {
        if text.is_empty() || text.len() > 1024 {
            return Err(InvalidKey("must be 1..=1024 bytes".into()));
        }
        for segment in text.split('/') {
            if segment.is_empty() {
                return Err(InvalidKey("empty segment (leading, trailing or doubled '/')".into()));
            }
            if segment.starts_with('.') {
                return Err(InvalidKey(format!(
                    "segment `{}` starts with a dot",
                    segment.escape_default()
                )));
            }
            if segment.len() > 128
                || !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(InvalidKey(format!(
                    "segment `{}` has characters outside [A-Za-z0-9._-]",
                    segment.escape_default()
                )));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// `renders/{tenant}/{design}/{kind}-{first 16 hex of sha256(content)}.png`. Re-running the
    /// same job with the same result rewrites the same key.
    pub fn for_asset(tenant: &TenantId, design: &DesignId, kind: AssetKind, content: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(content);
        let short = hex::encode(&digest[..8]);
        // Ids and kinds are validated to the key alphabet already, so this cannot fail.
        Self(format!("renders/{tenant}/{design}/{}-{short}.png", kind.as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which rendered asset an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetKind {
    Composite,
    HighRes,
    Preview,
    NormalMap,
    RoughnessMap,
}

impl AssetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Composite => "composite",
            Self::HighRes => "highres",
            Self::Preview => "preview",
            Self::NormalMap => "normal",
            Self::RoughnessMap => "roughness",
        }
    }
}

/// How a remote backend talks to its service: timeouts of one request, retries of a transient
/// failure within one put, and how many requests the process keeps in flight.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    pub connect_timeout: std::time::Duration,
    pub timeout: std::time::Duration,
    pub retries: u32,
    pub max_in_flight: usize,
}

/// Where one object ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The URL the Design row keeps.
    pub url: url::Url,
    /// The backend that holds the object (`cloudinary`, `s3`, `local`, `memory`).
    pub backend: &'static str,
    /// Set when the primary backend could not be reached and the object went to local storage.
    pub fallback: Option<FellBack>,
}

/// Why an object is not where the configuration wanted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FellBack {
    /// The primary backend that failed.
    pub from: &'static str,
    /// Its error, after its retries.
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("writing `{key}` failed: {source}")]
    Io { key: StorageKey, source: std::io::Error },
    #[error("storage backend rejected `{key}`: {reason}")]
    Rejected { key: StorageKey, reason: String },
    #[error("storage backend unavailable for `{key}`: {reason}")]
    Unavailable { key: StorageKey, reason: String },
}

impl StorageError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Unavailable { .. } => true,
            Self::Rejected { .. } => false,
        }
    }
}

/// A place that stores bytes under a key and returns a URL for them.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// The backend's name, for metadata and logs.
    fn backend(&self) -> &'static str;

    /// Stores `bytes` under `key` (replacing what was there) and says where they went. The
    /// buffer is shared, not copied, by retries and fallbacks.
    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<Stored, StorageError>;

    /// Reads back the object a put of `key` answered with `url`; `None` when it is not there.
    /// For operators' checks and tests, not the render path.
    async fn get(&self, key: &StorageKey, url: &url::Url) -> Result<Option<Vec<u8>>, StorageError>;

    /// Whether [`BlobStore::get_by_key`] can find objects: true for backends that address
    /// objects by key or can derive the URL of one (every backend here), false for one that
    /// only knows the URL a put answered. Each adapter says which it is.
    fn reads_by_key(&self) -> bool;

    /// Reads the object of `key` without the URL its put answered; `None` when it is not there
    /// or when the backend cannot read by key (see [`BlobStore::reads_by_key`]). The result
    /// cache keeps a durable copy of its index this way.
    async fn get_by_key(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError>;

    /// Deletes the object of `key`; deleting what is not there succeeds.
    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_their_root() {
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/abs/path",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "a\0b",
            "a\\..\\b",
            "C:/windows",
            ".hidden",
            "a/b c",
            "",
            "%2e%2e/x",
        ] {
            assert!(StorageKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(StorageKey::parse("renders/t-1/d_2/preview-0123abcd.png").is_ok());
    }

    #[test]
    fn asset_keys_are_valid_and_content_addressed() {
        let tenant = TenantId::parse("tenant-1").unwrap();
        let design = DesignId::parse("design.9").unwrap();
        let key = StorageKey::for_asset(&tenant, &design, AssetKind::Preview, b"pixels");
        assert_eq!(StorageKey::parse(key.as_str()).unwrap(), key);
        assert!(key.as_str().starts_with("renders/tenant-1/design.9/preview-"));
        assert_eq!(
            key,
            StorageKey::for_asset(&tenant, &design, AssetKind::Preview, b"pixels")
        );
        assert_ne!(
            key,
            StorageKey::for_asset(&tenant, &design, AssetKind::Preview, b"other")
        );
    }
}
