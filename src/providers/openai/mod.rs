//! The OpenAI Image Edit adapter: `POST {base}/images/edits` (multipart), plus the optional
//! `POST {base}/moderations` pre-check, as described in `reference/openai-images.md`.
//!
//! This file owns the adapter itself: its settings, the order of one edit (prompt limit, plan,
//! token cap *before* any paid call, moderation, edit) and the accounting of a finished call.
//! The rest is one concept per file:
//! - `plan.rs`: sizes and quality per model, the token estimate and the billed usage;
//! - `wire.rs`: the request and response shapes;
//! - `errors.rs`: HTTP statuses onto [`ProviderError`], and scrubbing the key from messages.
//!
//! It must not retry, count failures or fall back: the breaker and fallback decorators do
//! that. The API key never appears in `Debug` output, logs or error messages (provider
//! messages are scrubbed of anything that looks like a key).

mod errors;
mod plan;
mod wire;

use std::fmt;
use std::time::Duration;

use sha2::Digest as _;

pub use errors::scrub;
pub use plan::estimate_for;
pub use wire::to_openai_mask;

use super::{Accounting, EditRequest, EditResponse, ImageEditor, PaidCall, ProviderError, http};
use crate::budget::{self, PriceTable};
use crate::config::Secret;
use crate::error_code::ErrorCode;

pub const NAME: &str = "openai";

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
    /// `MAX_TOKENS_PER_JOB`: an estimate that, with what earlier attempts of the job used,
    /// would go above it fails the job before any request.
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
        plan::check_priced(&settings.model, &settings.prices)?;
        let client = http::client(settings.connect_timeout, settings.timeout)?;
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
        http::endpoint(&self.settings.base_url, path)
    }

    /// Reference §6: a flagged prompt is refused before the paid call, naming the categories.
    async fn moderate(&self, prompt: &str) -> Result<(), ProviderError> {
        let body = self
            .send(
                self.client
                    .post(self.endpoint("moderations"))
                    .json(&wire::moderation_body(prompt)),
            )
            .await?
            .body;
        let parsed: wire::ModerationResponse =
            serde_json::from_str(&body).map_err(|error| ProviderError::Unavailable {
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
                code: ErrorCode::PromptBlocked,
                reason: format!("prompt blocked by moderation (category: {categories})"),
            });
        }
        Ok(())
    }

    /// Sends an authenticated request and returns a successful answer; transport failures and
    /// error statuses are mapped once, here, with the key scrubbed from every message.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<http::Reply, ProviderError> {
        let key = self.settings.api_key.expose();
        let reply = http::send(NAME, request.bearer_auth(key))
            .await
            .map_err(|error| errors::scrubbed(error, key))?;
        if !reply.is_success() {
            return Err(errors::status_error(reply.status, &reply.headers, &reply.body, key));
        }
        Ok(reply)
    }
}

#[async_trait::async_trait]
impl ImageEditor for OpenAiEditor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn identity(&self) -> Option<super::EditorIdentity> {
        Some(super::EditorIdentity {
            provider: NAME,
            model: self.settings.model.clone(),
            // Size and quality come from the job's options, which the key holds already.
            settings: format!("endpoint={}", self.settings.base_url),
            deterministic: false,
        })
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let model = self.settings.model.as_str();
        let prompt = request.prompt.as_str();
        if request.prompt.char_count() > budget::prompt_char_limit(model) {
            return Err(ProviderError::Rejected {
                provider: NAME,
                code: ErrorCode::PromptTooLong,
                reason: format!("prompt is longer than {model} accepts"),
            });
        }
        let requested = (request.size.width(), request.size.height());
        let plan = plan::plan_request(model, request.image.dimensions(), requested, request.quality);
        let estimate = plan::estimate_call(model, &plan, request.prompt.char_count(), &self.settings.prices);
        budget::check_limit(&estimate.tokens, request.tokens_spent, self.settings.max_tokens_per_job).map_err(
            |error| ProviderError::Rejected {
                provider: NAME,
                code: error.code(),
                reason: error.to_string(),
            },
        )?;
        if self.settings.moderation {
            self.moderate(prompt).await?;
        }
        let form = wire::build_form(model, &plan, request.image, request.mask, prompt)?;
        let reply = self
            .send(self.client.post(self.endpoint("images/edits")).multipart(form))
            .await?;
        let request_id = reply
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let edited = wire::parse_edit(&reply.body)?;
        let (usage, billed) = plan::billed_usage(model, &plan, edited.usage, &estimate);
        let cost = budget::cost(&billed, model, &self.settings.prices).unwrap_or_else(|error| {
            // New prices are checked at start-up, so this means the usage has a shape the table
            // cannot price; the call is still recorded, at zero, and the reason kept in the log.
            tracing::error!(provider = NAME, model, "cannot price an OpenAI call: {error}");
            budget::Cost::default()
        });
        let call_id = call_id(request_id, &reply.body);
        Ok(EditResponse {
            image: edited.image,
            provider: NAME,
            prompt_used: true,
            usage,
            cost_micro_usd: cost.total.0.div_ceil(100),
            details: serde_json::json!({
                "model": model,
                "size": format!("{}x{}", plan.size.0, plan.size.1),
                "quality": plan.quality.map(budget::Quality::as_api_str),
                "created": edited.created,
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
}

/// The idempotency key of a paid call: OpenAI's request id when it sends one, else a digest
/// of the answer, so recording the same call twice counts it once.
fn call_id(request_id: Option<String>, body: &str) -> String {
    match request_id {
        Some(id) => format!("{NAME}:{id}"),
        None => {
            let digest = sha2::Sha256::digest(body.as_bytes());
            format!("{NAME}:sha256:{}", hex::encode(&digest[..16]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base_url: &str, api_key: &str) -> OpenAiSettings {
        OpenAiSettings {
            base_url: url::Url::parse(base_url).unwrap(),
            api_key: Secret::new(api_key),
            model: "gpt-image-1".into(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            moderation: false,
            max_tokens_per_job: 10_000,
            prices: PriceTable::default(),
        }
    }

    #[test]
    fn settings_debug_hides_the_key() {
        let editor = OpenAiEditor::new(settings("https://api.openai.com/v1", "sk-live-verysecret")).unwrap();
        let printed = format!("{editor:?}");
        assert!(!printed.contains("verysecret"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn endpoint_keeps_the_base_path() {
        let editor = OpenAiEditor::new(settings("http://127.0.0.1:9/v1/", "k")).unwrap();
        assert_eq!(
            editor.endpoint("images/edits").as_str(),
            "http://127.0.0.1:9/v1/images/edits"
        );
    }

    #[test]
    fn call_ids_prefer_the_request_id_and_fall_back_to_a_digest_of_the_answer() {
        assert_eq!(call_id(Some("req_1".into()), "{}"), "openai:req_1");
        let digest = call_id(None, "{}");
        assert!(digest.starts_with("openai:sha256:"), "{digest}");
        assert_eq!(digest, call_id(None, "{}"));
        assert_ne!(digest, call_id(None, "{ }"));
    }
}
