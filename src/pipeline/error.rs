//! The error of one render and the two questions every error answers: retry or abort, and
//! which stable code to report.

use crate::assets::AssetError;
use crate::error_code::ErrorCode;
use crate::imaging::EncodeError;
use crate::imaging::codec::DecodeError;
use crate::job::PayloadError;
use crate::providers::ProviderError;
use crate::safety::PromptRejection;
use crate::storage::StorageError;
use crate::store::StoreError;

/// What the caller should do with a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A later attempt may succeed (network, timeouts, unavailable services).
    Retry,
    /// No attempt can succeed (bad input, refused content, missing design).
    Abort,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Prompt(#[from] PromptRejection),
    #[error(transparent)]
    Asset(#[from] AssetError),
    #[error("`{field}` {source}")]
    Decode { field: &'static str, source: DecodeError },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("upload failed: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or a crashed task; retried, because the cause may be transient (e.g. memory).
    #[error("internal error: {0}")]
    Internal(String),
    /// The render was asked to stop between two steps.
    #[error("stopped before {}: {}", before.describe(), match stop {
        super::Stop::LeaseLost => "the tenant lease could not be renewed",
        super::Stop::Cancelled => "the render was cancelled",
    })]
    Stopped { stop: super::Stop, before: super::Step },
}

impl RenderError {
    pub fn disposition(&self) -> Disposition {
        let transient = match self {
            Self::Payload(_) | Self::Prompt(_) | Self::Decode { .. } | Self::Encode(_) => false,
            Self::Asset(error) => error.is_transient(),
            Self::Provider(error) => error.is_retryable(),
            Self::Storage(error) => error.is_transient(),
            Self::Store(error) => error.is_transient(),
            Self::Internal(_) => true,
            Self::Stopped { stop, .. } => match stop {
                // A cancelled run did not fail; another run may succeed.
                super::Stop::LeaseLost | super::Stop::Cancelled => true,
            },
        };
        if transient {
            Disposition::Retry
        } else {
            Disposition::Abort
        }
    }

    /// A stable, low-cardinality code for the database, events and metric labels.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Payload(_) => ErrorCode::InvalidPayload,
            Self::Prompt(rejection) => rejection.code(),
            Self::Asset(error) => error.code(),
            Self::Decode { source, .. } => match source {
                DecodeError::UnknownFormat => ErrorCode::ImageFormatUnsupported,
                DecodeError::TooWide { .. } | DecodeError::TooManyPixels { .. } => ErrorCode::ImageTooLarge,
                DecodeError::Empty | DecodeError::Corrupt(_) => ErrorCode::ImageCorrupt,
            },
            Self::Provider(error) => error.code(),
            Self::Encode(_) => ErrorCode::EncodeFailed,
            Self::Storage(_) => ErrorCode::StorageFailed,
            Self::Store(StoreError::NotFound { .. }) => ErrorCode::DesignNotFound,
            Self::Store(StoreError::Schema(_) | StoreError::MissingColumns { .. }) => ErrorCode::DatabaseSchema,
            Self::Store(StoreError::Unavailable(_)) => ErrorCode::DatabaseUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Stopped { stop, .. } => match stop {
                super::Stop::LeaseLost => ErrorCode::TenantLeaseLost,
                super::Stop::Cancelled => ErrorCode::Cancelled,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_and_transient_errors_are_told_apart() {
        let refused = RenderError::Asset(AssetError::Blocked {
            field: "baseTextureUrl",
            host: "10.0.0.1".into(),
            reason: "a private-network address",
        });
        assert_eq!(refused.disposition(), Disposition::Abort);
        assert_eq!(refused.code(), "asset_refused");
        let timeout = RenderError::Asset(AssetError::Timeout { field: "maskUrl" });
        assert_eq!(timeout.disposition(), Disposition::Retry);
        let server = RenderError::Asset(AssetError::Status {
            field: "maskUrl",
            status: 503,
        });
        assert_eq!(server.disposition(), Disposition::Retry);
        let gone = RenderError::Asset(AssetError::Status {
            field: "maskUrl",
            status: 404,
        });
        assert_eq!(gone.disposition(), Disposition::Abort);
        let bomb = RenderError::Decode {
            field: "baseTextureUrl",
            source: DecodeError::TooManyPixels {
                width: 1,
                height: 1,
                pixels: 1,
                limit: 0,
            },
        };
        assert_eq!(
            (bomb.disposition(), bomb.code()),
            (Disposition::Abort, ErrorCode::ImageTooLarge)
        );
        assert!(bomb.to_string().starts_with("`baseTextureUrl`"));
        let db = RenderError::Store(StoreError::Unavailable("connection refused".into()));
        assert_eq!(db.disposition(), Disposition::Retry);
    }
}
