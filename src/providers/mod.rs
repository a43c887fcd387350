//! The provider port: one trait for everything that turns (base, mask, prompt) into an image.
//!
//! The pipeline holds an `Arc<dyn ImageEditor>` and never knows which adapter is behind it.
//! Adapters live in the submodules; cross-cutting behaviour (circuit breaking, fallback) is a
//! decorator implementing the same trait.

pub mod breaker;
pub mod builtin;

use image::{GrayImage, RgbaImage};

use crate::job::{Quality, RenderSize};
use crate::safety::SafePrompt;

/// One edit request. Images are borrowed: a provider that needs another encoding makes it.
pub struct EditRequest<'a> {
    /// The base texture, decoded and oriented.
    pub image: &'a RgbaImage,
    /// Coverage plane the size of `image` (255 = regenerate). `None`: the job had no mask and
    /// the whole image may change.
    pub mask: Option<&'a GrayImage>,
    pub prompt: &'a SafePrompt,
    /// The job's requested output size; providers pick the nearest size they support, and the
    /// composite step brings the result back to the base's resolution.
    pub size: RenderSize,
    pub quality: Quality,
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
    pub usage: Usage,
    /// Exact cost in millionths of a US dollar (0 for local providers).
    pub cost_micro_usd: u64,
    /// Provider-specific facts for `metadata` (algorithm, parameters, model, timings).
    pub details: serde_json::Value,
}

/// Why a provider could not produce an image.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request itself can never succeed (content policy, invalid image, nothing to sample).
    #[error("{provider} rejected the request: {reason}")]
    Rejected {
        provider: &'static str,
        code: &'static str,
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
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected { code, .. } => code,
            Self::Misconfigured { .. } => "provider_misconfigured",
            Self::Unavailable { .. } => "provider_unavailable",
        }
    }
}

/// Anything that can edit an image.
#[async_trait::async_trait]
pub trait ImageEditor: Send + Sync {
    /// Stable name, e.g. `builtin`, `openai`, `local-diffusion`.
    fn name(&self) -> &'static str;

    /// Whether the provider follows the prompt. A fill that ignores it says so, and the pipeline
    /// records that in `metadata`.
    fn uses_prompt(&self) -> bool;

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError>;
}
