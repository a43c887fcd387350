//! The asset port: where input images (base texture, mask) come from, and why loading one failed.
//!
//! Owns the [`AssetSource`] trait, the [`AssetRole`] that names the payload field, and
//! [`AssetError`] with its retry answer ([`AssetError::is_transient`]) and stable code.
//! It returns raw bytes; decoding (and its pixel limits) belongs to `imaging::codec`.
//! It must not name reqwest, the file system or any other transport: those live in the adapters.
//!
//! Adapters:
//! - [`http::HttpAssets`]: http(s) downloads behind the SSRF guard, under byte and time limits.
//!   It refuses local paths, so a queued job cannot read the worker's own disk.
//! - [`local::LocalFiles`]: the one-shot CLI's source; reads local paths and hands remote refs
//!   to an inner source (the `HttpAssets`).
//! - [`memory::MemoryAssets`]: in-memory bytes for tests, with scripted failures and gates.
//!
//! `app.rs` picks the adapters; the pipeline only sees `Arc<dyn AssetSource>`.

pub mod guard;
pub mod http;
pub mod local;
pub mod memory;

use crate::error_code::ErrorCode;
use crate::job::AssetRef;

/// Which input an asset is; used to name the payload field in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetRole {
    BaseTexture,
    Mask,
}

impl AssetRole {
    pub fn field(self) -> &'static str {
        match self {
            Self::BaseTexture => "baseTextureUrl",
            Self::Mask => "maskUrl",
        }
    }
}

/// Anything that can produce the bytes of one input asset.
///
/// An implementation decides which kinds of [`AssetRef`] it accepts and enforces its own
/// limits; it reports a refusal as an [`AssetError`] naming `role`'s payload field.
#[async_trait::async_trait]
pub trait AssetSource: Send + Sync {
    /// Reads or downloads one asset.
    async fn load(&self, asset: &AssetRef, role: AssetRole) -> Result<Vec<u8>, AssetError>;
}

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("`{field}`: local files are not accepted for queued jobs")]
    LocalRefused { field: &'static str },
    #[error("`{field}`: cannot read local file {path}: {source}")]
    LocalRead {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("`{field}`: host `{host}` is {reason}; downloads from it are refused (see ALLOW_PRIVATE_ASSET_HOSTS)")]
    Blocked {
        field: &'static str,
        host: String,
        reason: &'static str,
    },
    #[error("`{field}`: redirect {problem}")]
    Redirect { field: &'static str, problem: String },
    #[error("`{field}`: body is larger than the limit of {limit} bytes")]
    TooLarge { field: &'static str, limit: u64 },
    #[error("`{field}`: server answered HTTP {status}")]
    Status { field: &'static str, status: u16 },
    #[error("`{field}`: download timed out")]
    Timeout { field: &'static str },
    #[error("`{field}`: download failed: {detail}")]
    Network { field: &'static str, detail: String },
}

impl AssetError {
    /// Whether trying again later could succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Network { .. } => true,
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A stable, low-cardinality code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::LocalRefused { .. } | Self::Blocked { .. } | Self::Redirect { .. } => ErrorCode::AssetRefused,
            Self::LocalRead { .. } => ErrorCode::AssetUnreadable,
            Self::TooLarge { .. } => ErrorCode::AssetTooLarge,
            Self::Status { .. } => ErrorCode::AssetHttpStatus,
            Self::Timeout { .. } => ErrorCode::AssetTimeout,
            Self::Network { .. } => ErrorCode::AssetNetwork,
        }
    }
}
