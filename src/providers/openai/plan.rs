//! What one OpenAI edit will ask for and what it will cost: the size and quality sent for a
//! model, the token estimate checked against `MAX_TOKENS_PER_JOB` *before* the paid call, the
//! usage billed once it is made, and the start-up check that the model is fully priced.
//!
//! Pure: it must not build requests, parse responses or talk to the network. The model rules
//! are those of `reference/openai-images.md` §1; prices come from `budget`.

use super::{NAME, OpenAiBuildError};
use crate::budget::{self, PriceTable, TokenUsage};
use crate::providers::{CallEstimate, Usage};

const DALL_E_2: &str = "dall-e-2";
/// gpt-image-2 (and its dated snapshots) takes any size within these limits (reference, models
/// of late 2026): each side a multiple of 16, the longest at most 3840, at most 8,294,400 pixels.
const GPT_IMAGE_2: &str = "gpt-image-2";
const FREE_SIZE_STEP: u32 = 16;
const FREE_SIZE_MAX_SIDE: u32 = 3840;
const FREE_SIZE_MAX_PIXELS: u64 = 8_294_400;

/// What we send for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RequestPlan {
    /// The `size` field.
    pub(super) size: (u32, u32),
    /// The `quality` field (`None`: not sent).
    pub(super) quality: Option<budget::Quality>,
    /// The budget quality used for the estimate.
    pub(super) estimate_quality: budget::Quality,
    /// dall-e-2 needs a square image of the output size; GPT models take the base as it is.
    pub(super) resize_input_to: Option<(u32, u32)>,
    /// The size is not in the reference's token table, so the output tokens of the estimate
    /// are scaled by area from the 1024x1024 figure (rounded up): an estimate, not a price.
    pub(super) output_scaled_by_area: bool,
}

/// Models that take arbitrary output sizes: `gpt-image-2` and its dated snapshots, not the
/// `gpt-image-2.5-*` family, whose rules the reference does not cover.
fn takes_free_sizes(model: &str) -> bool {
    model == GPT_IMAGE_2
        || model
            .strip_prefix(GPT_IMAGE_2)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// The job's requested size, brought within gpt-image-2's limits: scaled down (keeping the
/// aspect ratio) until the longest side and the pixel count fit, each side then rounded down to
/// a multiple of 16 (at least 16).
fn free_size(requested: (u32, u32)) -> (u32, u32) {
    let (width, height) = (f64::from(requested.0.max(1)), f64::from(requested.1.max(1)));
    let by_side = f64::from(FREE_SIZE_MAX_SIDE) / width.max(height);
    #[allow(clippy::cast_precision_loss)]
    let by_area = (FREE_SIZE_MAX_PIXELS as f64 / (width * height)).sqrt();
    let scale = by_side.min(by_area).min(1.0);
    let side = |value: f64| {
        // In range: at most 3840 after scaling.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let scaled = (value * scale).floor() as u32;
        (scaled / FREE_SIZE_STEP * FREE_SIZE_STEP).max(FREE_SIZE_STEP)
    };
    (side(width), side(height))
}

/// dall-e-2 differs from the GPT image models in almost every field, so the other files ask.
pub(super) fn is_dall_e_2(model: &str) -> bool {
    model == DALL_E_2
}

/// Picks a size the model accepts (reference §1) and the quality to send. `requested` is the
/// job's `renderOptions.size`: a model that takes free sizes is asked for it directly (within
/// its limits), so the high-res output needs no upscaling; the others get the nearest of their
/// fixed sizes for the base's shape.
pub(super) fn plan_request(
    model: &str,
    base: (u32, u32),
    requested: (u32, u32),
    quality: crate::job::Quality,
) -> RequestPlan {
    let (width, height) = base;
    if is_dall_e_2(model) {
        let side = [256, 512, 1024]
            .into_iter()
            .find(|side| width.max(height) <= *side)
            .unwrap_or(1024);
        return RequestPlan {
            size: (side, side),
            quality: None,
            estimate_quality: budget::Quality::from(quality),
            resize_input_to: Some((side, side)),
            output_scaled_by_area: false,
        };
    }
    let api_quality = budget::Quality::from(quality);
    if takes_free_sizes(model) {
        let size = free_size(requested);
        return RequestPlan {
            size,
            quality: Some(api_quality),
            estimate_quality: api_quality,
            resize_input_to: None,
            output_scaled_by_area: !matches!(size, (1024, 1024) | (1024, 1536) | (1536, 1024)),
        };
    }
    // Landscape or portrait when the base is clearly not square (ratio beyond 1.25).
    let size = if u64::from(width) * 4 > u64::from(height) * 5 {
        (1536, 1024)
    } else if u64::from(height) * 4 > u64::from(width) * 5 {
        (1024, 1536)
    } else {
        (1024, 1024)
    };
    RequestPlan {
        size,
        quality: Some(api_quality),
        estimate_quality: api_quality,
        resize_input_to: None,
        output_scaled_by_area: false,
    }
}

pub(super) fn estimate_call(model: &str, plan: &RequestPlan, prompt_chars: usize, prices: &PriceTable) -> CallEstimate {
    let tokens = budget::estimate(model, plan.estimate_quality, plan.size, prompt_chars, 1);
    let usage = if is_dall_e_2(model) {
        budget::Usage::Images {
            count: 1,
            size: plan.size,
        }
    } else {
        budget::Usage::Tokens(estimated_usage(&tokens))
    };
    CallEstimate {
        provider: NAME,
        model: model.to_owned(),
        tokens,
        total_tokens: tokens.total(),
        cost_micro_cents: budget::cost(&usage, model, prices).ok().map(|cost| cost.total.0),
        output_scaled_by_area: plan.output_scaled_by_area,
    }
}

/// The estimate the adapter would check for this request; the dry-run adapter reports it.
pub fn estimate_for(
    model: &str,
    image: (u32, u32),
    requested: (u32, u32),
    quality: crate::job::Quality,
    prompt_chars: usize,
    prices: &PriceTable,
) -> CallEstimate {
    estimate_call(
        model,
        &plan_request(model, image, requested, quality),
        prompt_chars,
        prices,
    )
}

/// What a finished call is billed as: the usage the API reported, or, when it reported none,
/// one image of the planned size (dall-e-2 is priced per image) or the estimate (a GPT model
/// that reports no usage is billed what we expected rather than nothing).
pub(super) fn billed_usage(
    model: &str,
    plan: &RequestPlan,
    reported: Option<TokenUsage>,
    estimate: &CallEstimate,
) -> (Usage, budget::Usage) {
    let tokens = match reported {
        Some(tokens) => tokens,
        None if is_dall_e_2(model) => {
            return (
                Usage::default(),
                budget::Usage::Images {
                    count: 1,
                    size: plan.size,
                },
            );
        }
        None => estimated_usage(&estimate.tokens),
    };
    let usage = Usage {
        input_tokens: tokens.input_tokens,
        output_tokens: tokens.output_tokens,
    };
    (usage, budget::Usage::Tokens(tokens))
}

/// Fails unless every price a call of `model` can need is configured.
pub(super) fn check_priced(model: &str, prices: &PriceTable) -> Result<(), OpenAiBuildError> {
    let unpriced = |reason: &str| OpenAiBuildError::Unpriced {
        model: model.to_owned(),
        reason: reason.to_owned(),
    };
    match prices.pricing(model) {
        None => Err(unpriced("no prices at all")),
        Some(budget::ModelPricing::PerToken(token_prices)) => {
            let missing: Vec<&str> = [
                ("text input", token_prices.text_input),
                ("image input", token_prices.image_input),
                ("image output", token_prices.image_output),
            ]
            .into_iter()
            .filter(|(_, price)| price.is_none())
            .map(|(kind, _)| kind)
            .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(unpriced(&format!("missing {} price", missing.join(", "))))
            }
        }
        Some(budget::ModelPricing::PerImage(image_prices)) => {
            if [256, 512, 1024]
                .iter()
                .all(|side| image_prices.by_size.contains_key(&(*side, *side)))
            {
                Ok(())
            } else {
                Err(unpriced("missing a per-image price for 256x256, 512x512 or 1024x1024"))
            }
        }
    }
}

/// The token estimate in the shape the API reports usage in, so it can be priced and billed
/// the same way.
fn estimated_usage(tokens: &budget::TokenEstimate) -> TokenUsage {
    TokenUsage {
        input_tokens: tokens.text_input + tokens.image_input,
        output_tokens: tokens.image_output,
        total_tokens: tokens.total(),
        input_tokens_details: budget::InputTokensDetails {
            text_tokens: tokens.text_input,
            image_tokens: tokens.image_input,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Quality;

    #[test]
    fn sizes_and_quality_follow_the_model_rules() {
        let plan = plan_request("gpt-image-1.5", (256, 256), (1024, 1024), Quality::Hd);
        assert_eq!(plan.size, (1024, 1024));
        assert_eq!(plan.quality, Some(budget::Quality::High));
        assert_eq!(
            plan_request("gpt-image-1", (300, 200), (1024, 1024), Quality::Standard).size,
            (1536, 1024)
        );
        assert_eq!(
            plan_request("gpt-image-1", (200, 300), (1024, 1024), Quality::Standard).quality,
            Some(budget::Quality::Medium)
        );
        assert_eq!(
            plan_request("gpt-image-1", (200, 300), (1024, 1024), Quality::Low).size,
            (1024, 1536)
        );
        let dalle = plan_request("dall-e-2", (300, 200), (1024, 1024), Quality::Hd);
        assert_eq!((dalle.size, dalle.quality), ((512, 512), None));
        assert_eq!(
            plan_request("dall-e-2", (2048, 2048), (1024, 1024), Quality::Auto).size,
            (1024, 1024)
        );
    }

    #[test]
    fn current_models_are_priced_out_of_the_box_and_unknown_ones_refused() {
        let defaults = PriceTable::default();
        for model in ["gpt-image-1.5", "gpt-image-2", "gpt-image-1", "dall-e-2"] {
            assert!(check_priced(model, &defaults).is_ok(), "{model}");
        }
        assert!(check_priced("gpt-image-2.5-sunburst", &defaults).is_err());
        let table = PriceTable::with_overrides(
            r#"{"gpt-image-2.5-sunburst": {"text_input_usd_per_1m": 5, "image_input_usd_per_1m": 8,
                "image_output_usd_per_1m": 30}}"#,
        )
        .unwrap();
        assert!(check_priced("gpt-image-2.5-sunburst", &table).is_ok());
    }

    #[test]
    fn gpt_image_2_is_asked_for_the_requested_size_within_its_limits() {
        let plan = plan_request("gpt-image-2", (512, 512), (2048, 2048), Quality::Hd);
        assert_eq!(plan.size, (2048, 2048));
        assert!(plan.output_scaled_by_area);
        // Dated snapshots follow the same rules; the 2.5 family does not.
        assert_eq!(
            plan_request("gpt-image-2-2026-04-21", (64, 64), (1000, 600), Quality::Low).size,
            (992, 592)
        );
        assert_eq!(
            plan_request("gpt-image-2.5-flare", (64, 64), (2048, 2048), Quality::Low).size,
            (1024, 1024)
        );
        // Longest side capped at 3840, aspect ratio kept.
        assert_eq!(free_size((4096, 2048)), (3840, 1920));
        // Pixel count capped at 8,294,400 (a 4096x4096 request would be 16.7 M).
        let (w, h) = free_size((4096, 4096));
        assert!(
            u64::from(w) * u64::from(h) <= FREE_SIZE_MAX_PIXELS && w == h && w % 16 == 0,
            "{w}x{h}"
        );
        assert_eq!(w, 2880);
        // A table size keeps the table's exact estimate.
        assert!(!plan_request("gpt-image-2", (64, 64), (1024, 1024), Quality::Low).output_scaled_by_area);
    }

    #[test]
    fn gpt_image_2_estimates_output_tokens_by_area_rounded_up() {
        let prices = PriceTable::default();
        let plan = plan_request("gpt-image-2", (64, 64), (2048, 2048), Quality::Hd);
        let estimate = estimate_call("gpt-image-2", &plan, 10, &prices);
        // Four times the 1024x1024 high figure (4160).
        assert_eq!(estimate.tokens.image_output, 4 * 4160);
        assert!(estimate.output_scaled_by_area);
        assert!(estimate.cost_micro_cents.is_some(), "gpt-image-2 is priced by default");
    }

    #[test]
    fn a_call_without_reported_usage_is_billed_its_estimate_or_one_image() {
        let prices = PriceTable::default();
        let plan = plan_request("gpt-image-1", (64, 64), (1024, 1024), Quality::Hd);
        let estimate = estimate_call("gpt-image-1", &plan, 20, &prices);
        let (usage, billed) = billed_usage("gpt-image-1", &plan, None, &estimate);
        assert_eq!(usage.total(), estimate.total_tokens);
        assert_eq!(billed, budget::Usage::Tokens(estimated_usage(&estimate.tokens)));

        let plan = plan_request("dall-e-2", (64, 64), (1024, 1024), Quality::Hd);
        let estimate = estimate_call("dall-e-2", &plan, 20, &prices);
        let (usage, billed) = billed_usage("dall-e-2", &plan, None, &estimate);
        assert_eq!(usage, Usage::default());
        assert_eq!(
            billed,
            budget::Usage::Images {
                count: 1,
                size: (256, 256)
            }
        );
    }
}
