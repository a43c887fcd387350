//! The OpenAI Image Edit adapter: `POST {base}/images/edits` (multipart), plus the optional
//! `POST {base}/moderations` pre-check, as described in `reference/openai-images.md`.
//!
//! It owns the wire format (fields per model, the mask convention, sizes, quality names), the
//! token cap checked *before* a paid call, the cost of a finished call, and the mapping of
//! HTTP outcomes onto [`ProviderError`]. It must not retry, count failures or fall back: the
//! breaker and fallback decorators do that. The API key never appears in `Debug` output, logs
//! or error messages (provider messages are scrubbed of anything that looks like a key).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use image::{GrayImage, RgbaImage};
use serde::Deserialize;
use sha2::Digest as _;

use super::{Accounting, CallEstimate, EditRequest, EditResponse, ImageEditor, PaidCall, ProviderError, Usage};
use crate::budget::{self, PriceTable, TokenUsage};
use crate::config::Secret;

pub const NAME: &str = "openai";

/// The moderation model named in reference §6.
const MODERATION_MODEL: &str = "omni-moderation-latest";
const DALL_E_2: &str = "dall-e-2";

/// Everything the adapter needs, taken from the configuration by `app.rs`.
#[derive(Clone)]
pub struct OpenAiSettings {
    /// e.g. `https://api.openai.com/v1`; `images/edits` and `moderations` are appended.
    pub base_url: url::Url,
    pub api_key: Secret,
    pub model: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub moderation: bool,
    /// `MAX_TOKENS_PER_JOB`: an estimate above it fails the job before any request.
    pub max_tokens_per_job: u64,
    pub prices: PriceTable,
}

impl fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &"[redacted]")
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("moderation", &self.moderation)
            .field("max_tokens_per_job", &self.max_tokens_per_job)
            .finish()
    }
}

/// The OpenAI image editor.
#[derive(Debug)]
pub struct OpenAiEditor {
    client: reqwest::Client,
    settings: OpenAiSettings,
}

/// Why the adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiBuildError {
    #[error("building the HTTP client failed: {0}")]
    Client(#[from] reqwest::Error),
    /// A paid model must be fully priced, or its calls could not be accounted for.
    #[error("model `{model}` is not fully priced ({reason}); add its prices to PRICE_TABLE_OVERRIDES")]
    Unpriced { model: String, reason: String },
}

impl OpenAiEditor {
    pub fn new(settings: OpenAiSettings) -> Result<Self, OpenAiBuildError> {
        check_priced(&settings.model, &settings.prices)?;
        let client = crate::http::client_builder(settings.connect_timeout, settings.timeout)
            .timeout(settings.timeout)
            .build()?;
        Ok(Self { client, settings })
    }

    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// The prompt limit of the configured model (reference §1).
    pub fn prompt_char_limit(&self) -> usize {
        budget::prompt_char_limit(&self.settings.model)
    }

    fn endpoint(&self, path: &str) -> url::Url {
        let mut url = self.settings.base_url.clone();
        let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    /// Reference §6: a flagged prompt is refused before the paid call, naming the categories.
    async fn moderate(&self, prompt: &str) -> Result<(), ProviderError> {
        let (_, body) = self
            .send(
                self.client
                    .post(self.endpoint("moderations"))
                    .json(&serde_json::json!({ "model": MODERATION_MODEL, "input": prompt })),
            )
            .await?;
        let parsed: ModerationResponse = serde_json::from_str(&body).map_err(|error| ProviderError::Unavailable {
            provider: NAME,
            reason: format!("moderation response is not valid JSON: {error}"),
            retry_after: None,
        })?;
        let flagged: Vec<String> = parsed
            .results
            .iter()
            .filter(|result| result.flagged)
            .flat_map(|result| {
                result
                    .categories
                    .iter()
                    .filter(|(_, value)| matches!(value, Some(true)))
                    .map(|(name, _)| name.clone())
            })
            .collect();
        if parsed.results.iter().any(|result| result.flagged) {
            let categories = if flagged.is_empty() {
                "unspecified".to_owned()
            } else {
                flagged.join(", ")
            };
            return Err(ProviderError::Rejected {
                provider: NAME,
                code: "prompt_blocked",
                reason: format!("prompt blocked by moderation (category: {categories})"),
            });
        }
        Ok(())
    }

    /// Sends an authenticated request and returns the headers and body of a successful answer;
    /// transport failures and error statuses are mapped once, here.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, String), ProviderError> {
        let response = request
            .bearer_auth(self.settings.api_key.expose())
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.map_err(|error| self.transport_error(&error))?;
        if !status.is_success() {
            return Err(self.status_error(status.as_u16(), &headers, &body));
        }
        Ok((headers, body))
    }

    fn transport_error(&self, error: &reqwest::Error) -> ProviderError {
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        ProviderError::Unavailable {
            provider: NAME,
            // reqwest errors carry the URL, never headers, so the key cannot leak here.
            reason: scrub(&format!("{kind}: {error}"), self.settings.api_key.expose()),
            retry_after: None,
        }
    }

    /// Maps a non-2xx answer (reference §4).
    fn status_error(&self, status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> ProviderError {
        let error = serde_json::from_str::<ErrorEnvelope>(body).ok().map(|e| e.error);
        let message = error
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = scrub(&message, self.settings.api_key.expose());
        let code = error.as_ref().and_then(|e| e.code.clone()).unwrap_or_default();
        let kind = error.as_ref().and_then(|e| e.kind.clone()).unwrap_or_default();
        match status {
            400 if is_content_policy(&code, &kind) => {
                let categories = error
                    .as_ref()
                    .and_then(|e| e.moderation_details.as_ref())
                    .map(|details| details.categories.join(", "))
                    .filter(|categories| !categories.is_empty());
                ProviderError::Rejected {
                    provider: NAME,
                    code: "provider_content_blocked",
                    reason: match categories {
                        Some(categories) => format!("blocked by provider (category: {categories})"),
                        None => "blocked by provider".to_owned(),
                    },
                }
            }
            401 | 403 => {
                tracing::error!(
                    provider = NAME,
                    http.status = status,
                    "OpenAI refused our credentials or organisation (HTTP {status}): {message}; check OPENAI_API_KEY and the organisation's access to the image model"
                );
                ProviderError::Misconfigured {
                    provider: NAME,
                    reason: format!("HTTP {status}: {message}"),
                }
            }
            429 if code == "insufficient_quota" || kind == "insufficient_quota" => {
                tracing::error!(provider = NAME, "OpenAI quota exhausted: {message}");
                ProviderError::Misconfigured {
                    provider: NAME,
                    reason: format!("quota exhausted: {message}"),
                }
            }
            429 => ProviderError::Unavailable {
                provider: NAME,
                reason: format!("rate limited: {message}"),
                retry_after: retry_after(headers),
            },
            500..=599 => ProviderError::Unavailable {
                provider: NAME,
                reason: format!("HTTP {status}: {message}"),
                retry_after: retry_after(headers),
            },
            _ => ProviderError::Rejected {
                provider: NAME,
                code: "provider_rejected",
                reason: format!("HTTP {status}: {message}"),
            },
        }
    }
}

#[async_trait::async_trait]
impl ImageEditor for OpenAiEditor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn uses_prompt(&self) -> bool {
        true
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let model = self.settings.model.as_str();
        let prompt = request.prompt.as_str();
        if request.prompt.char_count() > budget::prompt_char_limit(model) {
            return Err(ProviderError::Rejected {
                provider: NAME,
                code: "prompt_too_long",
                reason: format!("prompt is longer than {model} accepts"),
            });
        }
        let plan = plan_request(model, request.image.dimensions(), request.quality);
        let estimate = estimate_call(model, &plan, request.prompt.char_count(), &self.settings.prices);
        budget::check_limit(&estimate.tokens, self.settings.max_tokens_per_job).map_err(|error| {
            ProviderError::Rejected {
                provider: NAME,
                code: error.code(),
                reason: error.to_string(),
            }
        })?;
        if self.settings.moderation {
            self.moderate(prompt).await?;
        }
        let form = build_form(model, &plan, request.image, request.mask, prompt)?;
        let (headers, body) = self
            .send(self.client.post(self.endpoint("images/edits")).multipart(form))
            .await?;
        let request_id = headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        parse_success(model, &plan, &body, request_id, estimate, &self.settings.prices)
    }
}

/// What we send for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestPlan {
    /// The `size` field.
    size: (u32, u32),
    /// The `quality` field (`None`: not sent).
    quality: Option<budget::Quality>,
    /// The budget quality used for the estimate.
    estimate_quality: budget::Quality,
    /// dall-e-2 needs a square image of the output size; GPT models take the base as it is.
    resize_input_to: Option<(u32, u32)>,
}

fn is_dall_e_2(model: &str) -> bool {
    model == DALL_E_2
}

/// Picks a size the model accepts (reference §1) and the quality to send.
fn plan_request(model: &str, base: (u32, u32), quality: crate::job::Quality) -> RequestPlan {
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

fn estimate_call(model: &str, plan: &RequestPlan, prompt_chars: usize, prices: &PriceTable) -> CallEstimate {
    let tokens = budget::estimate(model, plan.estimate_quality, plan.size, prompt_chars, 1);
    let usage = if is_dall_e_2(model) {
        budget::Usage::Images {
            count: 1,
            size: plan.size,
        }
    } else {
        budget::Usage::Tokens(TokenUsage {
            input_tokens: tokens.text_input + tokens.image_input,
            output_tokens: tokens.image_output,
            total_tokens: tokens.total(),
            input_tokens_details: budget::InputTokensDetails {
                text_tokens: tokens.text_input,
                image_tokens: tokens.image_input,
            },
        })
    };
    CallEstimate {
        provider: NAME,
        model: model.to_owned(),
        tokens,
        total_tokens: tokens.total(),
        cost_micro_cents: budget::cost(&usage, model, prices).ok().map(|cost| cost.total.0),
    }
}

/// Fails unless every price a call of `model` can need is configured.
fn check_priced(model: &str, prices: &PriceTable) -> Result<(), OpenAiBuildError> {
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

/// Our mask is a coverage plane (255 = regenerate); OpenAI repaints pixels whose alpha is 0
/// (reference §1). Returns an RGBA mask of the image's dimensions: transparent where we
/// regenerate, opaque black elsewhere.
pub fn to_openai_mask(mask: &GrayImage, width: u32, height: u32) -> RgbaImage {
    let mask = if mask.dimensions() == (width, height) {
        mask.clone()
    } else {
        image::imageops::resize(mask, width, height, image::imageops::FilterType::Nearest)
    };
    RgbaImage::from_fn(width, height, |x, y| {
        let regenerate = mask.get_pixel(x, y).0[0] >= 128;
        image::Rgba([0, 0, 0, if regenerate { 0 } else { 255 }])
    })
}

fn build_form(
    model: &str,
    plan: &RequestPlan,
    image: &RgbaImage,
    mask: Option<&GrayImage>,
    prompt: &str,
) -> Result<reqwest::multipart::Form, ProviderError> {
    let image = match plan.resize_input_to {
        Some((width, height)) if image.dimensions() != (width, height) => {
            crate::imaging::resize::resize_rgba(image, width, height)
        }
        _ => image.clone(),
    };
    let (width, height) = image.dimensions();
    let mask = match (mask, is_dall_e_2(model)) {
        (Some(mask), _) => Some(to_openai_mask(mask, width, height)),
        // dall-e-2 without a mask edits the image's transparent area; ours are opaque, so the
        // whole image is marked editable explicitly.
        (None, true) => Some(RgbaImage::from_pixel(width, height, image::Rgba([0, 0, 0, 0]))),
        // GPT image models without a mask may change the whole image.
        (None, false) => None,
    };
    let png = |image: &RgbaImage, name: &'static str| -> Result<reqwest::multipart::Part, ProviderError> {
        let bytes = crate::imaging::codec::encode_rgba_png(image).map_err(|error| ProviderError::Rejected {
            provider: NAME,
            code: "image_encode_failed",
            reason: error.to_string(),
        })?;
        reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("image/png")
            .map_err(|error| ProviderError::Rejected {
                provider: NAME,
                code: "image_encode_failed",
                reason: error.to_string(),
            })
    };
    // dall-e-2 takes exactly one part named `image`; the GPT models' documented form is
    // `image[]` (reference §1).
    let image_field = if is_dall_e_2(model) { "image" } else { "image[]" };
    let mut form = reqwest::multipart::Form::new()
        .text("model", model.to_owned())
        .text("prompt", prompt.to_owned())
        .text("n", "1")
        .text("size", format!("{}x{}", plan.size.0, plan.size.1))
        .part(image_field, png(&image, "image.png")?);
    if let Some(mask) = mask {
        form = form.part("mask", png(&mask, "mask.png")?);
    }
    if let Some(quality) = plan.quality {
        form = form.text("quality", quality.as_api_str());
    }
    if is_dall_e_2(model) {
        form = form.text("response_format", "b64_json");
    }
    Ok(form)
}

fn parse_success(
    model: &str,
    plan: &RequestPlan,
    body: &str,
    request_id: Option<String>,
    estimate: CallEstimate,
    prices: &PriceTable,
) -> Result<EditResponse, ProviderError> {
    let garbage = |reason: String| ProviderError::Unavailable {
        provider: NAME,
        reason: format!("unusable response: {reason}"),
        retry_after: None,
    };
    let parsed: ImagesResponse = serde_json::from_str(body).map_err(|error| garbage(error.to_string()))?;
    let b64 = parsed
        .data
        .first()
        .and_then(|item| item.b64_json.as_deref())
        .ok_or_else(|| garbage("no data[0].b64_json".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|error| garbage(format!("b64_json does not decode: {error}")))?;
    let image = image::load_from_memory(&bytes)
        .map_err(|error| garbage(format!("b64_json is not an image: {error}")))?
        .to_rgba8();
    let (usage, billed) = match parsed.usage {
        Some(tokens) => (
            Usage {
                input_tokens: tokens.input_tokens,
                output_tokens: tokens.output_tokens,
            },
            budget::Usage::Tokens(tokens),
        ),
        None if is_dall_e_2(model) => (
            Usage::default(),
            budget::Usage::Images {
                count: 1,
                size: plan.size,
            },
        ),
        // A GPT model that reports no usage: bill the estimate rather than nothing.
        None => {
            let tokens = estimate.tokens;
            let reported = TokenUsage {
                input_tokens: tokens.text_input + tokens.image_input,
                output_tokens: tokens.image_output,
                total_tokens: tokens.total(),
                input_tokens_details: budget::InputTokensDetails {
                    text_tokens: tokens.text_input,
                    image_tokens: tokens.image_input,
                },
            };
            (
                Usage {
                    input_tokens: reported.input_tokens,
                    output_tokens: reported.output_tokens,
                },
                budget::Usage::Tokens(reported),
            )
        }
    };
    let cost = budget::cost(&billed, model, prices).unwrap_or_else(|error| {
        // New prices are checked at start-up, so this means the usage has a shape the table
        // cannot price; the call is still recorded, at zero, and the reason kept in the log.
        tracing::error!(provider = NAME, model, "cannot price an OpenAI call: {error}");
        budget::Cost::default()
    });
    let call_id = match request_id {
        Some(id) => format!("{NAME}:{id}"),
        None => {
            let digest = sha2::Sha256::digest(body.as_bytes());
            format!("{NAME}:sha256:{}", hex::encode(&digest[..16]))
        }
    };
    Ok(EditResponse {
        image,
        provider: NAME,
        usage,
        cost_micro_usd: cost.total.0.div_ceil(100),
        details: serde_json::json!({
            "model": model,
            "size": format!("{}x{}", plan.size.0, plan.size.1),
            "quality": plan.quality.map(budget::Quality::as_api_str),
            "created": parsed.created,
            "requestId": call_id,
        }),
        accounting: Accounting {
            paid_call: Some(PaidCall {
                call_id,
                provider: NAME,
                model: model.to_owned(),
                usage,
                cost,
            }),
            estimate: Some(estimate),
            dry_run: false,
        },
        attempts: Vec::new(),
    })
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

fn is_content_policy(code: &str, kind: &str) -> bool {
    matches!(code, "moderation_blocked" | "content_policy_violation") || kind == "image_generation_user_error"
}

/// `Retry-After` in whole seconds (reference §4); HTTP dates are not used by OpenAI.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Removes the API key and anything shaped like one (`sk-…`) from provider text: a 401 body
/// echoes part of the key it refused.
pub fn scrub(text: &str, key: &str) -> String {
    let text = if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "[redacted]")
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(index) = rest.find("sk-") {
        out.push_str(&rest[..index]);
        out.push_str("sk-[redacted]");
        let tail = &rest[index + 3..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.')))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    data: Vec<ImageData>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct ImageData {
    #[serde(default)]
    b64_json: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    moderation_details: Option<ModerationDetails>,
}

#[derive(Deserialize)]
struct ModerationDetails {
    #[serde(default)]
    categories: Vec<String>,
}

#[derive(Deserialize)]
struct ModerationResponse {
    results: Vec<ModerationResult>,
}

#[derive(Deserialize)]
struct ModerationResult {
    flagged: bool,
    #[serde(default)]
    categories: std::collections::BTreeMap<String, Option<bool>>,
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
    fn mask_becomes_transparent_where_we_regenerate() {
        let mut mask = GrayImage::new(4, 2);
        mask.put_pixel(1, 0, image::Luma([255]));
        let converted = to_openai_mask(&mask, 4, 2);
        assert_eq!(converted.dimensions(), (4, 2));
        assert_eq!(converted.get_pixel(1, 0).0[3], 0);
        assert_eq!(converted.get_pixel(0, 0).0[3], 255);
        assert_eq!(to_openai_mask(&mask, 8, 4).get_pixel(2, 0).0[3], 0);
    }

    #[test]
    fn keys_are_scrubbed_from_provider_text() {
        let key = "sk-test-SECRET1234567890";
        let text = "Incorrect API key provided: sk-test-SECR************7890. You can find your key";
        let scrubbed = scrub(text, key);
        assert!(!scrubbed.contains("SECR"), "{scrubbed}");
        assert!(scrubbed.contains("You can find your key"));
        assert_eq!(scrub(&format!("x {key} y"), key), "x [redacted] y");
    }

    #[test]
    fn settings_debug_hides_the_key() {
        let settings = OpenAiSettings {
            base_url: url::Url::parse("https://api.openai.com/v1").unwrap(),
            api_key: Secret::new("sk-live-verysecret"),
            model: "gpt-image-1".into(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            moderation: false,
            max_tokens_per_job: 10_000,
            prices: PriceTable::default(),
        };
        let editor = OpenAiEditor::new(settings).unwrap();
        let printed = format!("{editor:?}");
        assert!(!printed.contains("verysecret"), "{printed}");
        assert!(printed.contains("[redacted]"));
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
    fn endpoint_keeps_the_base_path() {
        let settings = OpenAiSettings {
            base_url: url::Url::parse("http://127.0.0.1:9/v1/").unwrap(),
            api_key: Secret::new("k"),
            model: "gpt-image-1".into(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            moderation: false,
            max_tokens_per_job: 1,
            prices: PriceTable::default(),
        };
        let editor = OpenAiEditor::new(settings).unwrap();
        assert_eq!(
            editor.endpoint("images/edits").as_str(),
            "http://127.0.0.1:9/v1/images/edits"
        );
    }
}
