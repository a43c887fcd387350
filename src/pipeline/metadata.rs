//! `metadata` of a rendered Design: the typed shape of the JSON object stored on the row, returned
//! as part of the job's result and read by the backend. One struct, so the wire format is
//! defined in one place and snapshot-tested.
//!
//! Absent facts are omitted rather than written as `null` (a render without maps has no
//! `normalMapUrl` key, a free provider no `cost`).

use serde::{Deserialize, Serialize};

use crate::imaging::PostprocessTimings;
use crate::providers::{Attempt, CallEstimate, Usage};
use crate::safety::RedactionKind;

/// What one completed render records about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderMetadata {
    /// The queue job that rendered it (absent for the one-shot command), so operators and the
    /// dashboard can find the job's payload and history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The provider whose image was used.
    pub provider: &'static str,
    /// Every provider tried, in order, including the one that answered.
    pub provider_attempts: Vec<Attempt>,
    /// The design's whole cost ledger (`metadata.cost` as the store keeps it), when a paid
    /// call was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<serde_json::Value>,
    /// The pre-call estimate of a paid provider (or of the call a dry run did not make).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<CallEstimate>,
    /// Present (and `true`) only for dry runs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Whether the provider chain follows the prompt (the built-in fill does not).
    pub prompt_used: bool,
    /// Provider-specific facts (algorithm, parameters, model).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub provider_details: serde_json::Value,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal_map_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roughness_map_url: Option<String>,
    pub prompt: PromptReport,
    pub sizes: Sizes,
    /// Share of the base covered by the mask, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_coverage: Option<f64>,
    /// Absent when the outputs were reused from the result cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postprocess: Option<PostprocessTimings>,
    /// Where the assets were stored.
    pub storage: StorageReport,
    pub timings: Timings,
    /// The result cache's part: whether the outputs were reused, under which key, from which
    /// design and what that saved. Absent when the cache is off for this render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
}

/// `metadata.cache`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheReport {
    pub hit: bool,
    pub key: String,
    /// The design whose render made the reused outputs (hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_design_id: Option<String>,
    /// The provider cost this render did not pay (hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_micro_cents: Option<u64>,
}

/// Where a render's assets went. Normally just the configured backend; when it could not be
/// reached and some assets were written to local storage instead, which ones and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    /// `cloudinary`, `s3` or `local` (also when assets fell back to local storage).
    pub backend: &'static str,
    /// The backend that failed, when assets fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<&'static str>,
    /// Its error, after its retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The assets that fell back (all of them, or some when others got through).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fell_back: Vec<&'static str>,
}

/// What sanitising did to the prompt (never the prompt itself, which may hold personal data).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptReport {
    pub truncated: bool,
    /// How many spans were redacted.
    pub redactions: usize,
    /// Prompt-injection phrases found (they are kept in the prompt, only flagged).
    pub injection_flags: Vec<String>,
}

impl PromptReport {
    pub fn new(truncated: bool, redactions: &[RedactionKind], injection_flags: Vec<String>) -> Self {
        Self {
            truncated,
            redactions: redactions.len(),
            injection_flags,
        }
    }
}

/// Pixel dimensions `[width, height]` of the inputs and outputs, how the outputs were fitted to
/// their boxes, and the encoded sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    pub base: [u32; 2],
    pub composite: [u32; 2],
    pub fit: crate::imaging::Fit,
    pub high_res: [u32; 2],
    pub preview: [u32; 2],
    pub bytes: EncodedBytes,
}

/// PNG sizes in bytes of every output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncodedBytes {
    pub composite: usize,
    pub high_res: usize,
    pub preview: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal_map: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roughness_map: Option<usize>,
}

/// Wall time of each step in milliseconds (to the microsecond: small jobs take well under a
/// millisecond per step), and when the render started and finished (RFC 3339, UTC).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub started_at: String,
    pub finished_at: String,
    pub mark_processing_ms: f64,
    pub sanitize_prompt_ms: f64,
    pub download_ms: f64,
    pub decode_ms: f64,
    pub inpaint_ms: f64,
    pub postprocess_ms: f64,
    pub upload_ms: f64,
    pub total_ms: f64,
    /// Writing the row; known only after it is written, so reported in the job's result but
    /// not stored on the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_ms: Option<f64>,
}
