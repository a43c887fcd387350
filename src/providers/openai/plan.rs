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
}

/// dall-e-2 differs from the GPT image models in almost every field, so the other files ask.
pub(super) fn is_dall_e_2(model: &str) -> bool {
    model == DALL_E_2
}

/// Picks a size the model accepts (reference §1) and the quality to send.
pub(super) fn plan_request(model: &str, base: (u32, u32), quality: crate::job::Quality) -> RequestPlan {
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
    let api_quality = budget::Quality::from(quality);
    RequestPlan {
        size,
        quality: Some(api_quality),
        estimate_quality: api_quality,
        resize_input_to: None,
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
    }
}

/// The estimate the adapter would check for this request; the dry-run adapter reports it.
pub fn estimate_for(
    model: &str,
    image: (u32, u32),
    quality: crate::job::Quality,
    prompt_chars: usize,
    prices: &PriceTable,
) -> CallEstimate {
    estimate_call(model, &plan_request(model, image, quality), prompt_chars, prices)
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
        let plan = plan_request("gpt-image-1.5", (256, 256), Quality::Hd);
        assert_eq!(plan.size, (1024, 1024));
        assert_eq!(plan.quality, Some(budget::Quality::High));
        assert_eq!(
            plan_request("gpt-image-1", (300, 200), Quality::Standard).size,
            (1536, 1024)
        );
        assert_eq!(
            plan_request("gpt-image-1", (200, 300), Quality::Standard).quality,
            Some(budget::Quality::Medium)
        );
        assert_eq!(plan_request("gpt-image-1", (200, 300), Quality::Low).size, (1024, 1536));
        let dalle = plan_request("dall-e-2", (300, 200), Quality::Hd);
        assert_eq!((dalle.size, dalle.quality), ((512, 512), None));
        assert_eq!(plan_request("dall-e-2", (2048, 2048), Quality::Auto).size, (1024, 1024));
    }

    #[test]
    fn unpriced_models_are_refused_at_build_time() {
        // The reference gives no input prices for gpt-image-1.5.
        assert!(check_priced("gpt-image-1.5", &PriceTable::default()).is_err());
        assert!(check_priced("gpt-image-1", &PriceTable::default()).is_ok());
        assert!(check_priced("dall-e-2", &PriceTable::default()).is_ok());
        let table = PriceTable::with_overrides(
            r#"{"gpt-image-1.5": {"text_input_usd_per_1m": 5, "image_input_usd_per_1m": 8}}"#,
        )
        .unwrap();
        assert!(check_priced("gpt-image-1.5", &table).is_ok());
    }

    #[test]
    fn a_call_without_reported_usage_is_billed_its_estimate_or_one_image() {
        let prices = PriceTable::default();
        let plan = plan_request("gpt-image-1", (64, 64), Quality::Hd);
        let estimate = estimate_call("gpt-image-1", &plan, 20, &prices);
        let (usage, billed) = billed_usage("gpt-image-1", &plan, None, &estimate);
        assert_eq!(usage.total(), estimate.total_tokens);
        assert_eq!(billed, budget::Usage::Tokens(estimated_usage(&estimate.tokens)));

        let plan = plan_request("dall-e-2", (64, 64), Quality::Hd);
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
