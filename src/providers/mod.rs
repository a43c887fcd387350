//! The provider port: one trait for everything that turns (base, mask, prompt) into an image.
//!
//! The pipeline holds an `Arc<dyn ImageEditor>` and never knows which adapter is behind it.
//! Adapters live in the submodules; cross-cutting behaviour (circuit breaking, fallback) is a
//! decorator implementing the same trait. `scripted` is the in-memory editor tests script.

pub mod breaker;
pub mod breakered;
pub mod builtin;
pub mod dry_run;
pub mod fallback;
pub mod http;
pub mod local_diffusion;
pub mod openai;
pub mod scripted;

use image::{GrayImage, RgbaImage};

use crate::error_code::ErrorCode;
use crate::job::{Quality, RenderSize};
use crate::safety::SafePrompt;

/// One edit request. Images are borrowed: a provider that needs another encoding makes it.
/// Copy, so a chain hands the same request to each provider it tries.
#[derive(Clone, Copy)]
pub struct EditRequest<'a> {
    /// The base texture, decoded and oriented. Shared, so a provider that works on another
    /// thread takes a reference count instead of copying the pixels.
    pub image: &'a std::sync::Arc<RgbaImage>,
    /// Coverage plane the size of `image` (255 = regenerate). `None`: the job had no mask and
    /// the whole image may change.
    pub mask: Option<&'a GrayImage>,
    pub prompt: &'a SafePrompt,
    /// The job's requested output size; providers pick the nearest size they support, and the
    /// composite step brings the result back to the base's resolution.
    pub size: RenderSize,
    pub quality: Quality,
    /// Tokens already recorded for this job by its earlier attempts; a paid provider checks
    /// them plus its estimate against `MAX_TOKENS_PER_JOB` before calling.
    pub tokens_spent: u64,
}

/// Token usage reported (or, for estimates, predicted) for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// What a provider returns.
#[derive(Debug, Clone)]
pub struct EditResponse {
    /// The edited image, at whatever resolution the provider works in.
    pub image: RgbaImage,
    /// Stable provider name, recorded as `metadata.provider`.
    pub provider: &'static str,
    /// Whether this provider followed the prompt (the built-in fill does not), recorded as
    /// `metadata.promptUsed` for the provider that produced the image, not the whole chain.
    pub prompt_used: bool,
    pub usage: Usage,
    /// Exact cost in millionths of a US dollar (0 for local providers).
    pub cost_micro_usd: u64,
    /// Provider-specific facts for `metadata` (algorithm, parameters, model, timings).
    pub details: serde_json::Value,
    /// Money spent and expected: the paid call behind this image, the pre-call estimate, and
    /// whether this was a dry run.
    pub accounting: Accounting,
    /// Every provider tried for this image, in order, including the one that produced it.
    /// Filled by the fallback chain; a single adapter leaves it empty.
    pub attempts: Vec<Attempt>,
}

/// Cost facts of one edit, recorded in `metadata` by the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    /// The paid call that produced the image. The pipeline persists it (idempotently, by
    /// `call_id`) before any later step can fail.
    pub paid_call: Option<PaidCall>,
    /// The token estimate made before the call, with its expected cost when priced.
    pub estimate: Option<CallEstimate>,
    /// No paid provider was called; the image comes from the offline fill.
    pub dry_run: bool,
}

/// One paid provider call.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaidCall {
    /// Stable per call: the provider's request id when it sends one, else a digest of the
    /// response. Recording the same call twice counts it once.
    pub call_id: String,
    pub provider: &'static str,
    pub model: String,
    pub usage: Usage,
    pub cost: crate::budget::Cost,
}

/// What a paid call was expected to use before it was made.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEstimate {
    pub provider: &'static str,
    pub model: String,
    pub tokens: crate::budget::TokenEstimate,
    pub total_tokens: u64,
    /// `None` when the price table cannot price the estimate.
    pub cost_micro_cents: Option<u64>,
    /// The output tokens were scaled by area from the reference's 1024x1024 figure (a size the
    /// table does not list, as gpt-image-2 allows): a conservative estimate, not a table value.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_scaled_by_area: bool,
}

/// One try of one provider, for `metadata.providerAttempts`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub provider: &'static str,
    /// `ok`, or the error's stable code (`provider_circuit_open`, `provider_unavailable`, …).
    pub outcome: &'static str,
    pub latency_ms: u64,
}

/// Which provider, model and settings would make an image: what the result cache keys on, so
/// a changed model or setting never reuses an image made by another.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EditorIdentity {
    pub provider: &'static str,
    pub model: String,
    /// The settings that shape the image, as the adapter describes them.
    pub settings: String,
    /// The same inputs always give the same image (the built-in fill). Generative providers
    /// are not: users may render again to get another image.
    pub deterministic: bool,
}

/// Why a provider could not produce an image.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request itself can never succeed (content policy, invalid image, nothing to sample).
    #[error("{provider} rejected the request: {reason}")]
    Rejected {
        provider: &'static str,
        code: ErrorCode,
        reason: String,
    },
    /// The provider is misconfigured (bad credentials, unknown model); an operator must act.
    #[error("{provider} is misconfigured: {reason}")]
    Misconfigured { provider: &'static str, reason: String },
    /// A temporary failure (network, timeout, 5xx, rate limit); trying later may succeed.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable {
        provider: &'static str,
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The provider's circuit breaker is open; the call was not made.
    #[error("{provider} is paused by its circuit breaker (retry in {}s)", retry_after.as_secs())]
    CircuitOpen {
        provider: &'static str,
        retry_after: std::time::Duration,
    },
    /// Every provider of a fallback chain failed or was skipped.
    #[error("no provider could render the image: {summary}")]
    Exhausted {
        summary: String,
        retry_after: Option<std::time::Duration>,
        /// What each provider did, for `metadata.providerAttempts`.
        attempts: Vec<Attempt>,
    },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::CircuitOpen { .. } | Self::Exhausted { .. }
        )
    }

    /// When a retry makes sense, if the provider said so.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::Exhausted { retry_after, .. } => *retry_after,
            Self::CircuitOpen { retry_after, .. } => Some(*retry_after),
            Self::Rejected { .. } | Self::Misconfigured { .. } => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected { code, .. } => *code,
            Self::Misconfigured { .. } => ErrorCode::ProviderMisconfigured,
            Self::Unavailable { .. } => ErrorCode::ProviderUnavailable,
            Self::CircuitOpen { .. } => ErrorCode::ProviderCircuitOpen,
            Self::Exhausted { .. } => ErrorCode::ProvidersExhausted,
        }
    }
}

/// Anything that can edit an image.
#[async_trait::async_trait]
pub trait ImageEditor: Send + Sync {
    /// Stable name, e.g. `builtin`, `openai`, `local-diffusion`.
    fn name(&self) -> &'static str;

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError>;

    /// The provider this editor asks first and its settings, for the result cache's key; `None`
    /// when its images must never be reused (a dry run's image stands in for a paid call).
    fn identity(&self) -> Option<EditorIdentity> {
        None
    }

    /// The circuit breakers guarding this editor and those it wraps, by provider name (the
    /// dashboard's worker heartbeat). None by default.
    fn breaker_states(&self) -> Vec<(&'static str, breaker::BreakerState)> {
        Vec::new()
    }
}
