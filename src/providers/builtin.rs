//! The built-in, offline provider: content-aware fill of the masked region from the rest of the
//! image (exemplar-based PatchMatch completion, see `imaging::inpaint`).
//!
//! It ignores the prompt, costs nothing and needs no network. The CPU work runs on tokio's
//! blocking pool so the async runtime stays responsive.

use std::time::Instant;

use image::RgbaImage;

use super::{EditRequest, EditResponse, ImageEditor, ProviderError, Usage};
use crate::imaging::{self, inpaint};

pub const NAME: &str = "builtin";

/// Settings of the built-in fill.
#[derive(Debug, Clone, Default)]
pub struct BuiltinFill {
    pub params: inpaint::PatchMatchParams,
}

#[async_trait::async_trait]
impl ImageEditor for BuiltinFill {
    fn name(&self) -> &'static str {
        NAME
    }

    fn identity(&self) -> Option<super::EditorIdentity> {
        Some(super::EditorIdentity {
            provider: NAME,
            model: "patchmatch".to_owned(),
            settings: format!("{:?}", self.params),
            deterministic: true,
        })
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let Some(mask) = request.mask else {
            // Without a mask there is no hole to fill: the texture comes back as it was.
            return Ok(response(
                RgbaImage::clone(request.image),
                serde_json::json!({
                    "algorithm": "none",
                    "note": "no mask given: the built-in fill has nothing to fill and returned the base unchanged",
                    "promptUsed": false,
                }),
            ));
        };
        let image = std::sync::Arc::clone(request.image);
        let hole = imaging::binary_hole(mask);
        let params = self.params.clone();
        let span = tracing::Span::current();
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            inpaint::patchmatch_fill(&image, &hole, &params).map(|outcome| (outcome, params))
        })
        .await
        .map_err(|join_error| ProviderError::Unavailable {
            provider: NAME,
            reason: format!("fill task failed: {join_error}"),
            retry_after: None,
        })?;
        let (outcome, params) = outcome.map_err(|error| ProviderError::Rejected {
            provider: NAME,
            code: error.code(),
            reason: match error {
                // The job's own input is at fault: say which field, and what would work.
                inpaint::FillError::NoSource => "`maskUrl` selects the whole image, so the fill has no \
                    surrounding texture to continue; leave part of the base unmasked, or configure a \
                    generative provider"
                    .to_owned(),
                other => other.to_string(),
            },
        })?;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let details = match outcome.stats {
            inpaint::FillStats::PatchMatch {
                pyramid_levels,
                patch_size,
                em_iterations_run,
            } => serde_json::json!({
                "algorithm": "patchmatch",
                "params": {
                    "patchSize": patch_size,
                    "requestedPatchSize": params.patch_size,
                    "pyramidLevels": pyramid_levels,
                    "emIterationsRun": em_iterations_run,
                    "nnfIterations": params.nnf_iterations,
                    "seed": params.seed,
                },
                "filledPixels": outcome.filled_pixels,
                "elapsedMs": elapsed_ms,
                "promptUsed": false,
                "note": "the built-in fill continues the surrounding texture and ignores the prompt",
            }),
            inpaint::FillStats::Telea { radius } => serde_json::json!({
                "algorithm": "telea",
                "params": { "radius": radius },
                "filledPixels": outcome.filled_pixels,
                "elapsedMs": elapsed_ms,
                "promptUsed": false,
            }),
            inpaint::FillStats::Unchanged => serde_json::json!({
                "algorithm": "none",
                "note": "the mask is empty: nothing to fill, the base is returned unchanged",
                "promptUsed": false,
            }),
        };
        Ok(response(outcome.image, details))
    }
}

fn response(image: image::RgbaImage, details: serde_json::Value) -> EditResponse {
    EditResponse {
        image,
        provider: NAME,
        prompt_used: false,
        usage: Usage::default(),
        cost_micro_usd: 0,
        details,
        accounting: super::Accounting::default(),
        attempts: Vec::new(),
    }
}
