//! The closed table of error codes: every stable code this worker writes to a Design row's
//! `metadata.error.code`, a `design.render.failed` event, a job's `failedReason`, a log line or a
//! metric label. Adapters return one of these variants; they cannot invent a code, and a new
//! code is a new variant here (and a reviewed change of the snapshot of [`ErrorCode::ALL`]).
//!
//! Pure: names only, no policy. Whether an error is retried is decided by the error types
//! themselves (`disposition()`), since the same code can be transient in one place and
//! permanent in another only by mistake.

use std::fmt;

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident => $code:literal,)+) => {
        /// A stable, low-cardinality error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as written on the wire (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// One sentence saying what the code means; the documented table is made from it.
            #[cfg(test)]
            fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),+).trim_ascii(),)+
                }
            }
        }
    };
}

error_codes! {
    /// The job payload is not a valid render request (the message names the field).
    InvalidPayload => "invalid_payload",
    /// The prompt is empty after sanitising.
    PromptEmpty => "prompt_empty",
    /// The prompt matches a blocked category, locally or in the provider's moderation.
    PromptBlocked => "prompt_blocked",
    /// The prompt is longer than the provider accepts.
    PromptTooLong => "prompt_too_long",
    /// An asset URL or path is refused: a private address, a local file in a queued job, a bad redirect.
    AssetRefused => "asset_refused",
    /// A local asset file cannot be read.
    AssetUnreadable => "asset_unreadable",
    /// An asset is larger than the byte limit.
    AssetTooLarge => "asset_too_large",
    /// The asset server answered with an HTTP error status.
    AssetHttpStatus => "asset_http_status",
    /// The asset download timed out.
    AssetTimeout => "asset_timeout",
    /// The asset download failed on the network.
    AssetNetwork => "asset_network",
    /// An input image is in no supported format.
    ImageFormatUnsupported => "image_format_unsupported",
    /// An input image is wider, taller or has more pixels than the decoder accepts.
    ImageTooLarge => "image_too_large",
    /// An input image is empty or corrupt.
    ImageCorrupt => "image_corrupt",
    /// An image could not be encoded for a provider request.
    ImageEncodeFailed => "image_encode_failed",
    /// An output PNG could not be encoded.
    EncodeFailed => "encode_failed",
    /// The built-in fill was given a mask of another size than the image.
    FillMaskSizeMismatch => "fill_mask_size_mismatch",
    /// The mask covers the whole image, so the built-in fill has nothing to sample from.
    FillNoSource => "fill_no_source",
    /// The provider refused the request itself (bad parameters).
    ProviderRejected => "provider_rejected",
    /// The provider's safety system blocked the content.
    ProviderContentBlocked => "provider_content_blocked",
    /// The provider is misconfigured: credentials, quota, model or sampler; an operator must act.
    ProviderMisconfigured => "provider_misconfigured",
    /// The provider is temporarily unavailable (network, timeout, 5xx, rate limit).
    ProviderUnavailable => "provider_unavailable",
    /// The provider's circuit breaker is open, so it was not called.
    ProviderCircuitOpen => "provider_circuit_open",
    /// Every provider of the chain failed or was skipped.
    ProvidersExhausted => "providers_exhausted",
    /// The next paid call would exceed the job's token limit.
    TokenLimitExceeded => "token_limit_exceeded",
    /// The price table has no entry for the model.
    PriceModelUnknown => "price_model_unknown",
    /// The price table lacks a price the call needs.
    PriceMissing => "price_missing",
    /// The provider's reported usage does not fit the price table.
    PriceUsageMismatch => "price_usage_mismatch",
    /// `PRICE_TABLE_OVERRIDES` cannot be parsed.
    PriceOverridesInvalid => "price_overrides_invalid",
    /// An asset could not be written to storage.
    StorageFailed => "storage_failed",
    /// No Design row with this id belongs to the job's tenant.
    DesignNotFound => "design_not_found",
    /// The Design table lacks a column or has an unexpected type.
    DatabaseSchema => "database_schema",
    /// The database could not be reached or failed.
    DatabaseUnavailable => "database_unavailable",
    /// The tenant slot store (Redis) could not be reached.
    TenantSlotsUnavailable => "tenant_slots_unavailable",
    /// The job's tenant lease could not be renewed (Redis down or the lease lost), so the render
    /// stopped at the next step instead of running on without a slot; it is retried.
    TenantLeaseLost => "tenant_lease_lost",
    /// The render was cancelled between two steps: Ctrl-C on `render` (the design is marked
    /// FAILED), or a worker's shutdown grace ran out (the job is left to stalled recovery).
    Cancelled => "cancelled",
    /// The queue (Redis) could not be reached.
    QueueUnavailable => "queue_unavailable",
    /// An event could not be serialised.
    EventSerialize => "event_serialize",
    /// An event sink could not be reached.
    EventSinkUnavailable => "event_sink_unavailable",
    /// A webhook endpoint could not be reached (connection refused, timeout).
    WebhookUnreachable => "webhook_unreachable",
    /// A webhook endpoint answered with a status other than 2xx (a redirect included).
    WebhookRejected => "webhook_rejected",
    /// A webhook endpoint answered 410 Gone: it wants no more deliveries.
    WebhookGone => "webhook_gone",
    /// A bug or a crashed task (a panic included).
    Internal => "internal",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Lets tests and callers compare with the wire spelling: `assert_eq!(error.code(), "image_corrupt")`.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_codes_is_reviewed_as_a_whole() {
        let table: String = ErrorCode::ALL
            .iter()
            .map(|code| format!("{:<26} {}\n", code.as_str(), code.description()))
            .collect();
        insta::assert_snapshot!(table);
    }

    #[test]
    fn codes_are_unique_snake_case_and_described() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') && !text.starts_with('_'),
                "{text} is not snake_case"
            );
            assert!(code.description().ends_with('.'), "{text} has no description");
            assert_eq!(serde_json::to_value(code).unwrap(), text);
        }
    }
}
