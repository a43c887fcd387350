//! What a failed job attempt is, and the one rule that decides what it leaves behind.
//!
//! [`JobError`] covers every way one attempt can fail (the render itself, the tenant slot store,
//! a panic) with a single [`JobError::code`], [`JobError::disposition`] and [`JobError::reason`].
//! [`settle`] is the only place that decides whether a failure is final, whether the Design row
//! is marked FAILED and whether a failed event is announced; the queue worker and the one-shot
//! `render` command both call it, so they can never disagree.
//!
//! Pure: no IO happens here.

use crate::error_code::ErrorCode;
use crate::pipeline::{Disposition, RenderError};
use crate::providers::ProviderError;
use crate::store::{FailedRender, StoreError};
use crate::tenancy::TenancyError;

/// Why one attempt of a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// The render panicked; retried, because the cause may be transient (memory, a bad host).
    #[error("internal error: the render panicked")]
    Panicked,
    /// A webhook delivery attempt failed (the webhook queue's jobs).
    #[error(transparent)]
    Webhook(#[from] crate::webhooks::deliver::WebhookError),
}

impl JobError {
    /// A stable, low-cardinality code for the database, events, logs and metric labels.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Render(error) => error.code(),
            Self::Tenancy(error) => error.code(),
            Self::Panicked => ErrorCode::Internal,
            Self::Webhook(error) => error.code(),
        }
    }

    /// Whether a later attempt could succeed.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Render(error) => error.disposition(),
            Self::Tenancy(_) | Self::Panicked => Disposition::Retry,
            Self::Webhook(error) => error.disposition(),
        }
    }

    /// How long the provider asked us to wait before trying again (a `retry-after` header, an
    /// open circuit breaker), when it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Render(RenderError::Provider(error)) => error.retry_after(),
            _ => None,
        }
    }

    /// `"<message> [<code>]"`: the job's `failedReason` in BullMQ and the CLI's error line.
    pub fn reason(&self) -> String {
        with_code(self, self.code())
    }

    /// The columns written when this failure is final.
    pub fn failed_render(&self) -> FailedRender {
        let provider_attempts = match self {
            Self::Render(RenderError::Provider(ProviderError::Exhausted { attempts, .. })) => {
                serde_json::to_value(attempts).ok()
            }
            _ => None,
        };
        FailedRender {
            code: self.code(),
            message: self.to_string(),
            cost_tokens: 0,
            cost_cents: 0,
            provider_attempts,
        }
    }

    /// Whether the failure is about a Design row this job may write. A row that is missing or
    /// owned by another tenant must stay untouched, and an invalid payload names no row at all.
    fn may_touch_row(&self) -> bool {
        !matches!(
            self,
            Self::Render(RenderError::Store(StoreError::NotFound { .. }) | RenderError::Payload(_))
        )
    }
}

/// A message followed by its stable code in brackets, the one format every surface uses.
pub fn with_code(message: &dyn std::fmt::Display, code: ErrorCode) -> String {
    format!("{message} [{code}]")
}

/// What a failed attempt leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// No further attempt will be made: the error is permanent or this was the last attempt.
    pub is_final: bool,
    /// Mark the Design FAILED (with the code and message in `metadata.error`).
    pub record_failed: bool,
    /// Publish `design.render.failed`.
    pub announce: bool,
}

/// Decides what a failure of attempt `attempt` (1-based) of `attempts_allowed` leaves behind.
///
/// While attempts remain, a transient failure leaves the row PROCESSING and announces nothing,
/// so subscribers see exactly one outcome per job. A final failure is recorded and announced
/// once; the row is left alone when it is not this job's to write.
pub fn settle(error: &JobError, attempt: u32, attempts_allowed: u32) -> Settlement {
    let is_final = error.disposition() == Disposition::Abort || attempt >= attempts_allowed;
    Settlement {
        is_final,
        record_failed: is_final && error.may_touch_row(),
        announce: is_final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{DesignId, PayloadError, TenantId};

    fn transient() -> JobError {
        JobError::Render(RenderError::Store(StoreError::Unavailable("connection refused".into())))
    }

    fn permanent() -> JobError {
        JobError::Render(RenderError::Decode {
            field: "baseTextureUrl",
            source: crate::imaging::codec::DecodeError::UnknownFormat,
        })
    }

    #[test]
    fn a_transient_failure_with_attempts_left_records_and_announces_nothing() {
        let settlement = settle(&transient(), 1, 3);
        assert_eq!(
            settlement,
            Settlement {
                is_final: false,
                record_failed: false,
                announce: false
            }
        );
        assert!(!settle(&JobError::Panicked, 2, 3).is_final);
        let tenancy = JobError::Tenancy(TenancyError::Unavailable("redis down".into()));
        assert!(!settle(&tenancy, 1, 2).announce);
    }

    #[test]
    fn the_last_attempt_of_a_transient_failure_is_final() {
        for error in [
            transient(),
            JobError::Panicked,
            JobError::Tenancy(TenancyError::Unavailable("redis down".into())),
        ] {
            let settlement = settle(&error, 3, 3);
            assert!(
                settlement.is_final && settlement.record_failed && settlement.announce,
                "{error}: {settlement:?}"
            );
        }
        // An attempt past the allowance (a recovered stalled job) is final too.
        assert!(settle(&transient(), 4, 3).is_final);
    }

    #[test]
    fn a_permanent_failure_is_final_on_the_first_attempt() {
        let settlement = settle(&permanent(), 1, 5);
        assert_eq!(
            settlement,
            Settlement {
                is_final: true,
                record_failed: true,
                announce: true
            }
        );
    }

    #[test]
    fn another_tenants_row_and_an_invalid_payload_are_announced_but_never_written() {
        let not_found = JobError::Render(RenderError::Store(StoreError::NotFound {
            design: DesignId::parse("d1").unwrap(),
            tenant: TenantId::parse("t1").unwrap(),
        }));
        let invalid = JobError::Render(RenderError::Payload(PayloadError {
            field: "prompt".into(),
            rule: "must not be empty".into(),
        }));
        for error in [not_found, invalid] {
            let settlement = settle(&error, 1, 3);
            assert!(settlement.is_final && settlement.announce, "{settlement:?}");
            assert!(!settlement.record_failed, "{error} would write a row");
        }
    }

    #[test]
    fn the_reason_is_the_message_and_the_code() {
        let error = permanent();
        assert_eq!(error.reason(), format!("{error} [image_format_unsupported]"));
        assert_eq!(
            JobError::Panicked.reason(),
            "internal error: the render panicked [internal]"
        );
        let failed = error.failed_render();
        assert_eq!(failed.code, ErrorCode::ImageFormatUnsupported);
        assert_eq!(failed.message, error.to_string());
        assert_eq!(failed.provider_attempts, None);
    }
}
