//! Token estimation, the per-job token cap, and the money an image edit costs.
//!
//! This module owns the arithmetic: how many tokens an OpenAI image edit is expected to use
//! before the call ([`estimate`], [`check_limit`]), what a finished call cost from its reported
//! usage ([`cost`], [`PriceTable`]). The per-job ledger of paid calls is kept by the store
//! (`store::merge_paid_call`), not here.
//! It must not do IO, read the environment, log, or call a provider. Callers pass in model
//! names, usage numbers and override text; where the overrides come from is the config's job.
//!
//! Every number below comes from `/work/shared/reference/openai-images.md` (called "the
//! reference"), section by section as cited. Where the reference has no figure, there is no
//! built-in default: the price is absent and [`cost`] fails with [`BudgetError::MissingPrice`]
//! until the operator supplies it through [`PriceTable::with_overrides`].
//!
//! Money is kept as integer micro-cents ([`MicroCents`], 1 USD = 10^8 micro-cents). A price of
//! `X` USD per 1M tokens is exactly `X × 100` micro-cents per token, so every per-token price in
//! the reference (two decimals per 1M) and every per-image price is exact, and sums never drift.

use std::collections::BTreeMap;
use std::fmt;

use crate::error_code::ErrorCode;
use serde::{Deserialize, Serialize};

/// Image quality as the GPT image models understand it (reference §1, `quality` for GPT image
/// models: `low`, `medium`, `high`, `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Low,
    Medium,
    High,
    Auto,
}

/// Expected tokens for one edit call that returns one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEstimate {
    pub text_input: u64,
    pub image_input: u64,
    pub image_output: u64,
}

/// Assumptions behind [`estimate`] that the reference does not pin down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateSettings {
    /// Characters per text token. The reference gives no tokenizer rule for prompts, so the
    /// estimate uses the common English rule of thumb `ceil(chars / 4)`. Values below 1 are
    /// treated as 1.
    pub chars_per_text_token: u32,
    /// Tokens charged per input image. The reference says these are not tabled officially and
    /// quotes a third-party (fal.ai, unverified) figure of ≈135 per 1024² image at low input
    /// fidelity, the API default, and ≈3 050 at high fidelity (reference §5).
    pub tokens_per_input_image: u32,
}

/// Token usage as reported in the `usage` object of an OpenAI image response (reference §2:
/// `input_tokens`, `output_tokens`, `total_tokens`, `input_tokens_details{text_tokens,
/// image_tokens}`; only GPT image models report it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub text_tokens: u64,
    pub image_tokens: u64,
}

/// What a finished call consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// GPT image models report tokens.
    Tokens(TokenUsage),
    /// dall-e-2 returns no `usage` and is billed per image by size (reference §5).
    Images { count: u32, size: (u32, u32) },
}

/// An amount of money in micro-cents (10^-8 USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MicroCents(pub u64);

/// Prices per model. Start from [`PriceTable::default`] (the reference's prices) and add or
/// replace prices with [`PriceTable::with_overrides`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPricing>,
}

/// How one model is billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPricing {
    PerToken(TokenPrices),
    PerImage(ImagePrices),
}

/// Prices of one token of each kind, in micro-cents (numerically equal to US cents per 1M
/// tokens). `None` means the reference does not give the price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenPrices {
    pub text_input: Option<MicroCents>,
    pub image_input: Option<MicroCents>,
    pub image_output: Option<MicroCents>,
}

/// Prices of one generated image, by `(width, height)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagePrices {
    pub by_size: BTreeMap<(u32, u32), MicroCents>,
}

/// What one call cost, with the parts that make it up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub total: MicroCents,
    pub breakdown: CostBreakdown,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostBreakdown {
    pub text_input: MicroCents,
    pub image_input: MicroCents,
    pub image_output: MicroCents,
    /// Per-image charges (dall-e-2 style models).
    pub images: MicroCents,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "estimated {estimated} tokens, with {spent} already used by earlier attempts of this job, exceed the job's limit of {limit} tokens (MAX_TOKENS_PER_JOB)"
    )]
    TokenLimitExceeded { estimated: u64, spent: u64, limit: u64 },
    #[error("no prices are configured for model {model:?}")]
    UnknownModel { model: String },
    #[error("no {kind} price is configured for model {model:?}")]
    MissingPrice { model: String, kind: PriceKind },
    #[error("model {model:?} is billed {billed_by}, but the usage reported is not")]
    UsageMismatch { model: String, billed_by: &'static str },
    #[error("price overrides are invalid: {reason}")]
    InvalidOverrides { reason: String },
}

/// Which price was missing, for [`BudgetError::MissingPrice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceKind {
    TextInput,
    ImageInput,
    ImageOutput,
    Image { width: u32, height: u32 },
}

/// Longest prompt, in characters, that a model accepts (reference §1, `prompt`: "max 1 000
/// chars (dall-e-2); max 32 000 chars (GPT image models)"). Models the reference does not cover
/// are assumed to share the GPT image limit.
pub fn prompt_char_limit(model: &str) -> usize {
    if model == DALL_E_2 { 1_000 } else { 32_000 }
}

/// Estimates the tokens of one edit that returns one image, with [`EstimateSettings::default`].
///
/// dall-e-2 is billed per image and has no token accounting (reference §2 and §5), so its
/// estimate is all zeros. Every other model is estimated with the GPT image output table
/// (reference §5, "same for gpt-image-1, -1-mini, -1.5"); see `output_image_tokens`.
pub fn estimate(
    model: &str,
    quality: Quality,
    size: (u32, u32),
    prompt_chars: usize,
    input_images: u32,
) -> TokenEstimate {
    EstimateSettings::default().estimate(model, quality, size, prompt_chars, input_images)
}

/// Output image tokens for one image, from the reference §5 table:
///
/// | quality | 1024x1024 | 1024x1536 | 1536x1024 |
/// |---|---|---|---|
/// | low | 272 | 408 | 400 |
/// | medium | 1056 | 1584 | 1568 |
/// | high | 4160 | 6240 | 6208 |
///
/// `Auto` is billed by what the model actually produced (reference §5), which is unknown
/// before the call, so the estimate assumes the worst case, `High`.
/// Sizes outside the table (gpt-image-2 accepts arbitrary sizes, reference §1) are
/// extrapolated from the 1024x1024 figure in proportion to pixel area, rounded up. That rule
/// reproduces the 1024x1536 column exactly and slightly over-estimates 1536x1024.
fn output_image_tokens(quality: Quality, size: (u32, u32)) -> u64 {
    let row: [u64; 3] = match quality {
        Quality::Low => [272, 408, 400],
        Quality::Medium => [1056, 1584, 1568],
        Quality::High | Quality::Auto => [4160, 6240, 6208],
    };
    match size {
        (1024, 1024) => row[0],
        (1024, 1536) => row[1],
        (1536, 1024) => row[2],
        (width, height) => {
            let pixels = u128::from(width) * u128::from(height);
            let square = 1024u128 * 1024;
            let tokens = (u128::from(row[0]) * pixels).div_ceil(square);
            u64::try_from(tokens).unwrap_or(u64::MAX)
        }
    }
}

/// Fails when the tokens already recorded for this job (`spent`, by earlier attempts) plus the
/// estimate of the next call are above the job's cap. Reaching the cap exactly passes.
pub fn check_limit(estimate: &TokenEstimate, spent: u64, max_tokens: u64) -> Result<(), BudgetError> {
    let estimated = estimate.total();
    if spent.saturating_add(estimated) > max_tokens {
        Err(BudgetError::TokenLimitExceeded {
            estimated,
            spent,
            limit: max_tokens,
        })
    } else {
        Ok(())
    }
}

/// What a finished call cost.
///
/// Per-token models use the reference §5 formula: `text_tokens × text_in + image_tokens ×
/// image_in + output_tokens × image_out`. A price is only required for a kind of token that was
/// actually used. Per-image models charge `count × price(size)`.
pub fn cost(usage: &Usage, model: &str, table: &PriceTable) -> Result<Cost, BudgetError> {
    let pricing = table.pricing(model).ok_or_else(|| BudgetError::UnknownModel {
        model: model.to_owned(),
    })?;
    let missing = |kind| BudgetError::MissingPrice {
        model: model.to_owned(),
        kind,
    };
    match (pricing, usage) {
        (ModelPricing::PerToken(prices), Usage::Tokens(tokens)) => {
            let charge = |count: u64, price: Option<MicroCents>, kind| {
                if count == 0 {
                    return Ok(MicroCents(0));
                }
                let price = price.ok_or_else(|| missing(kind))?;
                Ok(MicroCents(count.saturating_mul(price.0)))
            };
            let breakdown = CostBreakdown {
                text_input: charge(
                    tokens.input_tokens_details.text_tokens,
                    prices.text_input,
                    PriceKind::TextInput,
                )?,
                image_input: charge(
                    tokens.input_tokens_details.image_tokens,
                    prices.image_input,
                    PriceKind::ImageInput,
                )?,
                image_output: charge(tokens.output_tokens, prices.image_output, PriceKind::ImageOutput)?,
                images: MicroCents(0),
            };
            Ok(Cost::from_breakdown(breakdown))
        }
        (ModelPricing::PerImage(prices), Usage::Images { count, size }) => {
            let (width, height) = *size;
            let price = prices
                .by_size
                .get(size)
                .ok_or_else(|| missing(PriceKind::Image { width, height }))?;
            let breakdown = CostBreakdown {
                images: MicroCents(u64::from(*count).saturating_mul(price.0)),
                ..CostBreakdown::default()
            };
            Ok(Cost::from_breakdown(breakdown))
        }
        (ModelPricing::PerToken(_), Usage::Images { .. }) => Err(BudgetError::UsageMismatch {
            model: model.to_owned(),
            billed_by: "per token",
        }),
        (ModelPricing::PerImage(_), Usage::Tokens(_)) => Err(BudgetError::UsageMismatch {
            model: model.to_owned(),
            billed_by: "per image",
        }),
    }
}

impl Quality {
    /// The value of the `quality` field sent to GPT image models.
    pub fn as_api_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
            Quality::Auto => "auto",
        }
    }
}

impl From<crate::job::Quality> for Quality {
    /// The one mapping from the job's quality option to the API's: the legacy `standard` →
    /// `Medium` and `hd` → `High` (reference §1: "`hd` is dall-e-3/generations-only … map an
    /// app-level "hd" to `high`"); the GPT image names map to themselves. Parsing the option
    /// text is `job::Quality::parse`'s job, so there is no second parser here.
    fn from(quality: crate::job::Quality) -> Self {
        use crate::job::Quality as Job;
        match quality {
            Job::Low => Quality::Low,
            Job::Medium | Job::Standard => Quality::Medium,
            Job::High | Job::Hd => Quality::High,
            Job::Auto => Quality::Auto,
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_api_str())
    }
}

impl TokenEstimate {
    pub fn total(&self) -> u64 {
        self.text_input
            .saturating_add(self.image_input)
            .saturating_add(self.image_output)
    }
}

impl Default for EstimateSettings {
    fn default() -> Self {
        Self {
            chars_per_text_token: 4,
            tokens_per_input_image: 135,
        }
    }
}

impl EstimateSettings {
    /// [`estimate`] with these assumptions.
    pub fn estimate(
        &self,
        model: &str,
        quality: Quality,
        size: (u32, u32),
        prompt_chars: usize,
        input_images: u32,
    ) -> TokenEstimate {
        if model == DALL_E_2 {
            return TokenEstimate::default();
        }
        let chars = u64::try_from(prompt_chars).unwrap_or(u64::MAX);
        let chars_per_token = u64::from(self.chars_per_text_token.max(1));
        TokenEstimate {
            text_input: chars.div_ceil(chars_per_token),
            image_input: u64::from(input_images).saturating_mul(u64::from(self.tokens_per_input_image)),
            image_output: output_image_tokens(quality, size),
        }
    }
}

impl MicroCents {
    const PER_CENT: u64 = 1_000_000;

    /// Whole cents, rounded up so that a fraction of a cent is never lost from a bill.
    pub fn cents_rounded_up(self) -> u64 {
        self.0.div_ceil(Self::PER_CENT)
    }

    pub fn saturating_add(self, other: MicroCents) -> MicroCents {
        MicroCents(self.0.saturating_add(other.0))
    }
}

impl Cost {
    fn from_breakdown(breakdown: CostBreakdown) -> Self {
        let total = breakdown
            .text_input
            .saturating_add(breakdown.image_input)
            .saturating_add(breakdown.image_output)
            .saturating_add(breakdown.images);
        Cost { total, breakdown }
    }
}

impl Default for PriceTable {
    /// The reference's prices (reference §5):
    ///
    /// - `gpt-image-1` (official model page): text input $5.00, image input $10.00, image
    ///   output $40.00 per 1M tokens.
    /// - `gpt-image-1-mini` (official de-DE page): text input $2.00, image input $2.50, image
    ///   output $8.00 per 1M tokens.
    /// - `gpt-image-1.5` (the default model, late 2026 prices): text input $5.00, image input
    ///   $8.00, image output $32.00 per 1M tokens.
    /// - `gpt-image-2` (late 2026 prices): text input $5.00, image input $8.00, image output
    ///   $30.00 per 1M tokens.
    /// - `dall-e-2` (official page + third-party size mapping): $0.016 for 256x256, $0.018 for
    ///   512x512, $0.020 for 1024x1024, per image.
    ///
    /// Cached-input prices are listed in the reference but the usage object it documents has no
    /// cached-token field, so they are not modelled. Models the references do not price
    /// (`gpt-image-2.5-*`, `chatgpt-image-latest`) are absent and refused until configured.
    fn default() -> Self {
        let per_token = |text_input, image_input, image_output| {
            ModelPricing::PerToken(TokenPrices {
                text_input,
                image_input,
                image_output,
            })
        };
        let mut models = BTreeMap::new();
        models.insert(
            "gpt-image-1".to_owned(),
            per_token(
                Some(usd_cents_per_million_tokens(500)),
                Some(usd_cents_per_million_tokens(1_000)),
                Some(usd_cents_per_million_tokens(4_000)),
            ),
        );
        models.insert(
            "gpt-image-1-mini".to_owned(),
            per_token(
                Some(usd_cents_per_million_tokens(200)),
                Some(usd_cents_per_million_tokens(250)),
                Some(usd_cents_per_million_tokens(800)),
            ),
        );
        models.insert(
            "gpt-image-1.5".to_owned(),
            per_token(
                Some(usd_cents_per_million_tokens(500)),
                Some(usd_cents_per_million_tokens(800)),
                Some(usd_cents_per_million_tokens(3_200)),
            ),
        );
        models.insert(
            "gpt-image-2".to_owned(),
            per_token(
                Some(usd_cents_per_million_tokens(500)),
                Some(usd_cents_per_million_tokens(800)),
                Some(usd_cents_per_million_tokens(3_000)),
            ),
        );
        models.insert(
            DALL_E_2.to_owned(),
            ModelPricing::PerImage(ImagePrices {
                by_size: BTreeMap::from([
                    ((256, 256), usd_mills_per_image(16)),
                    ((512, 512), usd_mills_per_image(18)),
                    ((1024, 1024), usd_mills_per_image(20)),
                ]),
            }),
        );
        Self { models }
    }
}

impl PriceTable {
    /// The default table with prices from `json` laid over it.
    ///
    /// The JSON is an object keyed by model name. A per-token model takes any of
    /// `text_input_usd_per_1m`, `image_input_usd_per_1m`, `image_output_usd_per_1m`; a per-image
    /// model takes `per_image_usd`, an object keyed by `"<width>x<height>"`. Amounts are USD as
    /// JSON numbers or decimal strings; they must be exact in micro-cents (at most two decimals
    /// per 1M tokens, eight per image). Fields left out keep their default; unknown models are
    /// added. Mixing both billing styles in one model, or switching a known model's billing
    /// style, is rejected.
    ///
    /// ```json
    /// { "gpt-image-1.5": { "text_input_usd_per_1m": 5, "image_input_usd_per_1m": "8.00" },
    ///   "dall-e-2": { "per_image_usd": { "1024x1024": 0.02 } } }
    /// ```
    pub fn with_overrides(json: &str) -> Result<Self, BudgetError> {
        let overrides: BTreeMap<String, ModelOverride> =
            serde_json::from_str(json).map_err(|error| invalid(error.to_string()))?;
        let mut table = PriceTable::default();
        for (model, model_override) in overrides {
            table.apply(model, model_override)?;
        }
        Ok(table)
    }

    pub fn pricing(&self, model: &str) -> Option<&ModelPricing> {
        self.models.get(model)
    }

    fn apply(&mut self, model: String, model_override: ModelOverride) -> Result<(), BudgetError> {
        let ModelOverride {
            text_input_usd_per_1m,
            image_input_usd_per_1m,
            image_output_usd_per_1m,
            per_image_usd,
        } = model_override;
        let has_token_prices =
            text_input_usd_per_1m.is_some() || image_input_usd_per_1m.is_some() || image_output_usd_per_1m.is_some();
        let per_million = |amount: Option<UsdAmount>| amount.map(|a| a.to_micro_cents(USD_PER_1M_SCALE)).transpose();
        match (has_token_prices, per_image_usd) {
            (true, Some(_)) => Err(invalid(format!("model {model:?} mixes per-token and per-image prices"))),
            (false, None) => Err(invalid(format!("model {model:?} sets no price"))),
            (true, None) => {
                let text_input = per_million(text_input_usd_per_1m)?;
                let image_input = per_million(image_input_usd_per_1m)?;
                let image_output = per_million(image_output_usd_per_1m)?;
                let entry = self
                    .models
                    .entry(model.clone())
                    .or_insert_with(|| ModelPricing::PerToken(TokenPrices::default()));
                let ModelPricing::PerToken(prices) = entry else {
                    return Err(invalid(format!("model {model:?} is billed per image")));
                };
                prices.text_input = text_input.or(prices.text_input);
                prices.image_input = image_input.or(prices.image_input);
                prices.image_output = image_output.or(prices.image_output);
                Ok(())
            }
            (false, Some(sizes)) => {
                let mut parsed = BTreeMap::new();
                for (size, amount) in sizes {
                    parsed.insert(parse_size(&size)?, amount.to_micro_cents(USD_PER_IMAGE_SCALE)?);
                }
                let entry = self
                    .models
                    .entry(model.clone())
                    .or_insert_with(|| ModelPricing::PerImage(ImagePrices::default()));
                let ModelPricing::PerImage(prices) = entry else {
                    return Err(invalid(format!("model {model:?} is billed per token")));
                };
                prices.by_size.extend(parsed);
                Ok(())
            }
        }
    }
}

const DALL_E_2: &str = "dall-e-2";

/// Decimal places that make a "USD per 1M tokens" amount an integer number of micro-cents per
/// token (`X` USD/1M = `X × 10^2` micro-cents per token).
const USD_PER_1M_SCALE: u32 = 2;
/// Decimal places that make a "USD per image" amount an integer number of micro-cents.
const USD_PER_IMAGE_SCALE: u32 = 8;

/// `cents` US cents per 1M tokens, as micro-cents per token (the same number).
const fn usd_cents_per_million_tokens(cents: u64) -> MicroCents {
    MicroCents(cents)
}

/// `mills` thousandths of a USD per image, as micro-cents.
const fn usd_mills_per_image(mills: u64) -> MicroCents {
    MicroCents(mills * 100_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelOverride {
    text_input_usd_per_1m: Option<UsdAmount>,
    image_input_usd_per_1m: Option<UsdAmount>,
    image_output_usd_per_1m: Option<UsdAmount>,
    per_image_usd: Option<BTreeMap<String, UsdAmount>>,
}

/// A USD amount as written in the overrides: a JSON number or a decimal string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UsdAmount {
    Number(f64),
    Text(String),
}

impl UsdAmount {
    /// Converts to micro-cents by shifting the decimal point `scale` places, exactly.
    fn to_micro_cents(&self, scale: u32) -> Result<MicroCents, BudgetError> {
        // `f64`'s Display prints the shortest decimal that reads back as the same number and
        // never uses an exponent, so `0.29` stays "0.29" and the conversion below is exact for
        // anything a person would type.
        let text = match self {
            UsdAmount::Number(number) => number.to_string(),
            UsdAmount::Text(text) => text.trim().to_owned(),
        };
        parse_scaled_decimal(&text, scale).map(MicroCents).ok_or_else(|| {
            invalid(format!(
                "price {text:?} is not a non-negative decimal with at most {scale} decimals"
            ))
        })
    }
}

/// Parses `digits[.digits]` times 10^`scale` into an integer, or `None` if the text is not a
/// plain non-negative decimal, is not exact at that scale, or overflows.
fn parse_scaled_decimal(text: &str, scale: u32) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    let scale = usize::try_from(scale).ok()?;
    if fraction.len() > scale {
        return None;
    }
    let padded = format!("{whole}{fraction:0<scale$}");
    padded.parse::<u64>().ok()
}

fn parse_size(text: &str) -> Result<(u32, u32), BudgetError> {
    text.split_once('x')
        .and_then(|(width, height)| Some((width.parse().ok()?, height.parse().ok()?)))
        .ok_or_else(|| invalid(format!("size {text:?} is not <width>x<height>")))
}

fn invalid(reason: String) -> BudgetError {
    BudgetError::InvalidOverrides { reason }
}

impl BudgetError {
    /// A stable, low-cardinality code for the DB, events and metric labels.
    pub fn code(&self) -> ErrorCode {
        match self {
            BudgetError::TokenLimitExceeded { .. } => ErrorCode::TokenLimitExceeded,
            BudgetError::UnknownModel { .. } => ErrorCode::PriceModelUnknown,
            BudgetError::MissingPrice { .. } => ErrorCode::PriceMissing,
            BudgetError::UsageMismatch { .. } => ErrorCode::PriceUsageMismatch,
            BudgetError::InvalidOverrides { .. } => ErrorCode::PriceOverridesInvalid,
        }
    }
}

impl fmt::Display for PriceKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceKind::TextInput => formatter.write_str("text input"),
            PriceKind::ImageInput => formatter.write_str("image input"),
            PriceKind::ImageOutput => formatter.write_str("image output"),
            PriceKind::Image { width, height } => write!(formatter, "{width}x{height} image"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_usage(text: u64, image: u64, output: u64) -> Usage {
        Usage::Tokens(TokenUsage {
            input_tokens: text + image,
            output_tokens: output,
            total_tokens: text + image + output,
            input_tokens_details: InputTokensDetails {
                text_tokens: text,
                image_tokens: image,
            },
        })
    }

    #[test]
    fn quality_maps_job_options_including_legacy_names() {
        use crate::job::Quality as Job;
        let cases = [
            (Job::Low, Quality::Low),
            (Job::Medium, Quality::Medium),
            (Job::Standard, Quality::Medium),
            (Job::High, Quality::High),
            (Job::Hd, Quality::High),
            (Job::Auto, Quality::Auto),
        ];
        for (input, expected) in cases {
            assert_eq!(Quality::from(input), expected, "{input:?}");
        }
        assert_eq!(Quality::High.as_api_str(), "high");
    }

    #[test]
    fn output_tokens_follow_the_reference_table() {
        let table = [
            (Quality::Low, [272, 408, 400]),
            (Quality::Medium, [1056, 1584, 1568]),
            (Quality::High, [4160, 6240, 6208]),
        ];
        for (quality, row) in table {
            assert_eq!(output_image_tokens(quality, (1024, 1024)), row[0]);
            assert_eq!(output_image_tokens(quality, (1024, 1536)), row[1]);
            assert_eq!(output_image_tokens(quality, (1536, 1024)), row[2]);
        }
    }

    #[test]
    fn auto_quality_is_estimated_as_high() {
        for size in [(1024, 1024), (1024, 1536), (1536, 1024), (2048, 2048)] {
            assert_eq!(
                output_image_tokens(Quality::Auto, size),
                output_image_tokens(Quality::High, size)
            );
        }
    }

    #[test]
    fn sizes_outside_the_table_scale_with_area_rounded_up() {
        assert_eq!(output_image_tokens(Quality::Low, (2048, 2048)), 272 * 4);
        assert_eq!(output_image_tokens(Quality::Medium, (512, 512)), 1056 / 4);
        assert_eq!(output_image_tokens(Quality::Low, (1, 1)), 1);
        assert_eq!(output_image_tokens(Quality::Low, (0, 1024)), 0);
        assert!(output_image_tokens(Quality::High, (u32::MAX, u32::MAX)) > 0);
    }

    #[test]
    fn estimate_adds_text_input_and_output_tokens() {
        let estimate = estimate("gpt-image-1", Quality::High, (1024, 1024), 45, 2);
        assert_eq!(
            estimate,
            TokenEstimate {
                text_input: 12,
                image_input: 270,
                image_output: 4160,
            }
        );
        assert_eq!(estimate.total(), 12 + 270 + 4160);
    }

    #[test]
    fn text_tokens_are_chars_over_four_rounded_up() {
        let text = |chars| estimate("gpt-image-1.5", Quality::Low, (1024, 1024), chars, 0).text_input;
        assert_eq!(text(0), 0);
        assert_eq!(text(1), 1);
        assert_eq!(text(4), 1);
        assert_eq!(text(5), 2);
        assert_eq!(text(32_000), 8_000);
    }

    #[test]
    fn estimate_settings_are_configurable() {
        let settings = EstimateSettings {
            chars_per_text_token: 0,
            tokens_per_input_image: 3_050,
        };
        let estimate = settings.estimate("gpt-image-1", Quality::Low, (1024, 1024), 10, 1);
        assert_eq!(estimate.text_input, 10, "0 chars per token is treated as 1");
        assert_eq!(estimate.image_input, 3_050);
    }

    #[test]
    fn dall_e_2_has_no_token_estimate() {
        assert_eq!(
            estimate("dall-e-2", Quality::High, (1024, 1024), 900, 1),
            TokenEstimate::default()
        );
    }

    #[test]
    fn prompt_limits_follow_the_reference() {
        assert_eq!(prompt_char_limit("dall-e-2"), 1_000);
        assert_eq!(prompt_char_limit("gpt-image-1"), 32_000);
        assert_eq!(prompt_char_limit("gpt-image-1.5"), 32_000);
    }

    #[test]
    fn check_limit_allows_up_to_and_including_the_limit() {
        let estimate = TokenEstimate {
            text_input: 10,
            image_input: 0,
            image_output: 90,
        };
        assert_eq!(check_limit(&estimate, 0, 100), Ok(()));
        let error = check_limit(&estimate, 0, 99).unwrap_err();
        assert_eq!(
            error,
            BudgetError::TokenLimitExceeded {
                estimated: 100,
                spent: 0,
                limit: 99
            }
        );
        assert_eq!(error.code(), "token_limit_exceeded");
        // What earlier attempts of the job used counts against the same cap.
        assert_eq!(check_limit(&estimate, 50, 150), Ok(()));
        let error = check_limit(&estimate, 51, 150).unwrap_err();
        assert!(error.to_string().contains("51 already used"), "{error}");
    }

    #[test]
    fn gpt_image_1_cost_of_the_reference_response() {
        // Reference §2 example usage: 45 text + 65 image input tokens, 4160 output tokens.
        let cost = cost(&token_usage(45, 65, 4160), "gpt-image-1", &PriceTable::default()).expect("priced");
        assert_eq!(cost.breakdown.text_input, MicroCents(45 * 500));
        assert_eq!(cost.breakdown.image_input, MicroCents(65 * 1_000));
        assert_eq!(cost.breakdown.image_output, MicroCents(16_640_000));
        assert_eq!(cost.total, MicroCents(16_727_500)); // $0.167275
        assert_eq!(cost.total.cents_rounded_up(), 17);
    }

    #[test]
    fn high_square_output_matches_the_official_per_image_price() {
        // Reference §5 check: 4160 × $40/1M = $0.1664 ≈ official $0.167.
        let cost = cost(&token_usage(0, 0, 4160), "gpt-image-1", &PriceTable::default()).expect("priced");
        assert_eq!(cost.total, MicroCents(16_640_000));
    }

    #[test]
    fn mini_prices_with_fractional_micro_dollars_stay_exact() {
        let cost = cost(&token_usage(3, 65, 272), "gpt-image-1-mini", &PriceTable::default()).expect("priced");
        assert_eq!(cost.breakdown.text_input, MicroCents(3 * 200));
        assert_eq!(cost.breakdown.image_input, MicroCents(65 * 250)); // $0.0001625
        assert_eq!(cost.breakdown.image_output, MicroCents(272 * 800));
    }

    #[test]
    fn current_models_are_priced_by_default_and_overrides_still_apply() {
        let table = PriceTable::default();
        let output_only = cost(&token_usage(0, 0, 272), "gpt-image-1.5", &table).expect("priced");
        assert_eq!(output_only.total, MicroCents(870_400)); // $0.008704 for a low 1024² image
        let full = cost(&token_usage(45, 65, 272), "gpt-image-1.5", &table).expect("priced");
        assert_eq!(full.total, MicroCents(45 * 500 + 65 * 800 + 272 * 3_200));
        let two = cost(&token_usage(45, 65, 4160), "gpt-image-2", &table).expect("priced");
        assert_eq!(two.total, MicroCents(45 * 500 + 65 * 800 + 4160 * 3_000));

        let table = PriceTable::with_overrides(r#"{"gpt-image-1.5": {"image_output_usd_per_1m": "16.00"}}"#)
            .expect("valid overrides");
        let cheaper = cost(&token_usage(45, 65, 272), "gpt-image-1.5", &table).expect("priced");
        assert_eq!(cheaper.total, MicroCents(45 * 500 + 65 * 800 + 272 * 1_600));
    }

    #[test]
    fn a_price_the_table_lacks_is_named() {
        let table =
            PriceTable::with_overrides(r#"{"house-model": {"image_output_usd_per_1m": 1}}"#).expect("valid overrides");
        let error = cost(&token_usage(45, 65, 272), "house-model", &table).unwrap_err();
        assert_eq!(
            error,
            BudgetError::MissingPrice {
                model: "house-model".to_owned(),
                kind: PriceKind::TextInput
            }
        );
        assert_eq!(error.code(), "price_missing");
    }

    #[test]
    fn dall_e_2_is_billed_per_image_by_size() {
        let table = PriceTable::default();
        let priced = |count, size| cost(&Usage::Images { count, size }, "dall-e-2", &table);
        assert_eq!(priced(1, (256, 256)).expect("priced").total, MicroCents(1_600_000));
        assert_eq!(priced(1, (512, 512)).expect("priced").total, MicroCents(1_800_000));
        let two = priced(2, (1024, 1024)).expect("priced");
        assert_eq!(two.breakdown.images, MicroCents(4_000_000));
        assert_eq!(two.total.cents_rounded_up(), 4);
        assert_eq!(
            priced(1, (2048, 2048)).unwrap_err(),
            BudgetError::MissingPrice {
                model: "dall-e-2".to_owned(),
                kind: PriceKind::Image {
                    width: 2048,
                    height: 2048
                }
            }
        );
    }

    #[test]
    fn usage_of_the_wrong_kind_and_unknown_models_are_errors() {
        let table = PriceTable::default();
        let error = cost(&token_usage(1, 1, 1), "dall-e-2", &table).unwrap_err();
        assert_eq!(error.code(), "price_usage_mismatch");
        let error = cost(
            &Usage::Images {
                count: 1,
                size: (1024, 1024),
            },
            "gpt-image-1",
            &table,
        )
        .unwrap_err();
        assert_eq!(error.code(), "price_usage_mismatch");
        let error = cost(&token_usage(1, 1, 1), "gpt-image-2.5-sunburst", &table).unwrap_err();
        assert_eq!(error.code(), "price_model_unknown");
    }

    #[test]
    fn cents_round_up() {
        assert_eq!(MicroCents(0).cents_rounded_up(), 0);
        assert_eq!(MicroCents(1).cents_rounded_up(), 1);
        assert_eq!(MicroCents(1_000_000).cents_rounded_up(), 1);
        assert_eq!(MicroCents(1_000_001).cents_rounded_up(), 2);
    }

    #[test]
    fn overrides_add_models_and_replace_single_prices() {
        let table = PriceTable::with_overrides(
            r#"{
                "gpt-image-1": {"image_output_usd_per_1m": 0.29},
                "gpt-image-2": {"text_input_usd_per_1m": "1", "image_input_usd_per_1m": 2,
                                "image_output_usd_per_1m": 3.5},
                "dall-e-2": {"per_image_usd": {"1024x1024": "0.021", "2048x2048": 0.00000001}}
            }"#,
        )
        .expect("valid");
        let Some(ModelPricing::PerToken(gpt1)) = table.pricing("gpt-image-1") else {
            panic!("gpt-image-1 is per token");
        };
        assert_eq!(gpt1.image_output, Some(MicroCents(29)));
        assert_eq!(gpt1.text_input, Some(MicroCents(500)), "untouched price kept");
        assert_eq!(
            table.pricing("gpt-image-2"),
            Some(&ModelPricing::PerToken(TokenPrices {
                text_input: Some(MicroCents(100)),
                image_input: Some(MicroCents(200)),
                image_output: Some(MicroCents(350)),
            }))
        );
        let Some(ModelPricing::PerImage(dalle)) = table.pricing("dall-e-2") else {
            panic!("dall-e-2 is per image");
        };
        assert_eq!(dalle.by_size[&(1024, 1024)], MicroCents(2_100_000));
        assert_eq!(dalle.by_size[&(2048, 2048)], MicroCents(1));
        assert_eq!(dalle.by_size[&(256, 256)], MicroCents(1_600_000));
    }

    #[test]
    fn overrides_reject_bad_input() {
        let rejected = [
            "not json",
            r#"{"gpt-image-1": {"text_input_usd_per_1m": -1}}"#,
            r#"{"gpt-image-1": {"text_input_usd_per_1m": "1e3"}}"#,
            r#"{"gpt-image-1": {"text_input_usd_per_1m": 0.001}}"#,
            r#"{"gpt-image-1": {"text_input_usd_per_1m": "abc"}}"#,
            r#"{"gpt-image-1": {"text_input_usd_per_1m": ".5"}}"#,
            r#"{"gpt-image-1": {"text_input_usd_per_1m": 99999999999999999999}}"#,
            r#"{"gpt-image-1": {"typo_usd": 1}}"#,
            r#"{"gpt-image-1": {}}"#,
            r#"{"gpt-image-1": {"per_image_usd": {"1024x1024": 0.02}}}"#,
            r#"{"dall-e-2": {"text_input_usd_per_1m": 1}}"#,
            r#"{"dall-e-2": {"per_image_usd": {"big": 0.02}}}"#,
            r#"{"x": {"text_input_usd_per_1m": 1, "per_image_usd": {"1x1": 1}}}"#,
        ];
        for json in rejected {
            let error = PriceTable::with_overrides(json).unwrap_err();
            assert_eq!(error.code(), "price_overrides_invalid", "{json}");
        }
    }

    #[test]
    fn token_usage_deserialises_from_the_reference_response() {
        let usage: TokenUsage = serde_json::from_str(
            r#"{"total_tokens": 4270, "input_tokens": 110, "output_tokens": 4160,
                "input_tokens_details": {"text_tokens": 45, "image_tokens": 65},
                "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0}}"#,
        )
        .expect("reference shape");
        assert_eq!(usage.input_tokens_details.image_tokens, 65);
        assert_eq!(usage.total_tokens, 4270);
    }
}
