//! How OpenAI failures become [`ProviderError`]s (reference §4), and keeping the API key out
//! of every message.
//!
//! Owns the status mapping: content policy is the job's fault (permanent), credentials and an
//! exhausted quota are an operator's (misconfigured), rate limits and 5xx are transient with
//! the server's `Retry-After`, any other 4xx is a rejected request. Every message taken from
//! the provider is scrubbed of the key and of anything shaped like one first. It must not
//! retry, count failures or send requests.

use super::NAME;
use super::wire::ErrorEnvelope;
use crate::error_code::ErrorCode;
use crate::providers::{ProviderError, http};

/// Maps a non-2xx answer.
pub(super) fn status_error(status: u16, headers: &reqwest::header::HeaderMap, body: &str, key: &str) -> ProviderError {
    let error = serde_json::from_str::<ErrorEnvelope>(body).ok().map(|e| e.error);
    let message = error
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = scrub(&message, key);
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
                code: ErrorCode::ProviderContentBlocked,
                reason: match categories {
                    Some(categories) => format!("blocked by provider (category: {categories})"),
                    None => "blocked by provider".to_owned(),
                },
            }
        }
        400 | 404 if is_unknown_model(&code, &message) => {
            // Every job would hit this until an operator changes OPENAI_IMAGE_MODEL, so it is
            // an ERROR once per process, not once per job; the chain moves on meanwhile.
            static REPORTED: std::sync::Once = std::sync::Once::new();
            REPORTED.call_once(|| {
                tracing::error!(
                    provider = NAME,
                    http.status = status,
                    "OpenAI does not offer the configured image model (HTTP {status}): {message}; set OPENAI_IMAGE_MODEL to a current model such as gpt-image-1.5"
                );
            });
            ProviderError::Misconfigured {
                provider: NAME,
                reason: format!("model not available (HTTP {status}): {message}"),
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
        429 => http::unavailable(NAME, format!("rate limited: {message}"), headers),
        status if http::is_transient_status(status) => {
            http::unavailable(NAME, format!("HTTP {status}: {message}"), headers)
        }
        _ => ProviderError::Rejected {
            provider: NAME,
            code: ErrorCode::ProviderRejected,
            reason: format!("HTTP {status}: {message}"),
        },
    }
}

/// Scrubs the reason of an error built outside this module (a transport failure). reqwest
/// errors carry the URL, never headers, so the key should not be there; scrubbing anyway costs
/// nothing and survives a future change of that rule.
pub(super) fn scrubbed(error: ProviderError, key: &str) -> ProviderError {
    match error {
        ProviderError::Unavailable {
            provider,
            reason,
            retry_after,
        } => ProviderError::Unavailable {
            provider,
            reason: scrub(&reason, key),
            retry_after,
        },
        ProviderError::Misconfigured { provider, reason } => ProviderError::Misconfigured {
            provider,
            reason: scrub(&reason, key),
        },
        ProviderError::Rejected { provider, code, reason } => ProviderError::Rejected {
            provider,
            code,
            reason: scrub(&reason, key),
        },
        other @ (ProviderError::CircuitOpen { .. } | ProviderError::Exhausted { .. }) => other,
    }
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

/// A 400/404 saying the model does not exist, was retired or is not available to this account:
/// the `model_not_found` code, or a message naming the model as missing (the body of a retired
/// model's refusal is not documented exactly, so both are recognised).
fn is_unknown_model(code: &str, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    code == "model_not_found"
        || (message.contains("model")
            && [
                "does not exist",
                "not available",
                "not found",
                "do not have access",
                "has been shut down",
            ]
            .iter()
            .any(|phrase| message.contains(phrase)))
}

fn is_content_policy(code: &str, kind: &str) -> bool {
    matches!(code, "moderation_blocked" | "content_policy_violation") || kind == "image_generation_user_error"
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    const KEY: &str = "sk-test-SECRET1234567890";

    fn envelope(message: &str, kind: &str, code: Option<&str>) -> String {
        serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string()
    }

    #[test]
    fn keys_are_scrubbed_from_provider_text() {
        let text = "Incorrect API key provided: sk-test-SECR************7890. You can find your key";
        let scrubbed = scrub(text, KEY);
        assert!(!scrubbed.contains("SECR"), "{scrubbed}");
        assert!(scrubbed.contains("You can find your key"));
        assert_eq!(scrub(&format!("x {KEY} y"), KEY), "x [redacted] y");
    }

    #[test]
    fn statuses_map_onto_the_documented_errors() {
        let none = HeaderMap::new();
        let mut seven = HeaderMap::new();
        seven.insert(RETRY_AFTER, HeaderValue::from_static("7"));

        let blocked = status_error(400, &none, &envelope("no", "image_generation_user_error", None), KEY);
        assert_eq!(blocked.code(), "provider_content_blocked");
        let refused = status_error(401, &none, &envelope(&format!("bad key {KEY}"), "x", None), KEY);
        assert_eq!(refused.code(), "provider_misconfigured");
        assert!(!refused.to_string().contains("SECRET"), "{refused}");
        let quota = status_error(429, &seven, &envelope("quota", "insufficient_quota", None), KEY);
        assert_eq!(quota.code(), "provider_misconfigured");
        let limited = status_error(429, &seven, &envelope("slow down", "requests", None), KEY);
        assert_eq!(limited.code(), "provider_unavailable");
        assert_eq!(limited.retry_after(), Some(std::time::Duration::from_secs(7)));
        assert!(limited.to_string().contains("rate limited"), "{limited}");
        let server = status_error(503, &none, "not json", KEY);
        assert_eq!(
            (server.code(), server.retry_after()),
            (ErrorCode::ProviderUnavailable, None)
        );
        assert!(server.to_string().contains("HTTP 503"), "{server}");
        let other = status_error(404, &none, &envelope("no such route", "x", None), KEY);
        assert_eq!(other.code(), "provider_rejected");
    }

    #[test]
    fn a_missing_model_is_a_misconfiguration_not_a_rejected_job() {
        let none = HeaderMap::new();
        let coded = status_error(
            404,
            &none,
            &envelope(
                "The model `gpt-image-1` does not exist or you do not have access to it.",
                "invalid_request_error",
                Some("model_not_found"),
            ),
            KEY,
        );
        assert_eq!(coded.code(), "provider_misconfigured");
        assert!(coded.to_string().contains("model not available"), "{coded}");
        let worded = status_error(
            400,
            &none,
            &envelope("Model gpt-image-1 is not available.", "invalid_request_error", None),
            KEY,
        );
        assert_eq!(worded.code(), "provider_misconfigured");
        // A plain bad request about something else stays the job's problem.
        let bad = status_error(
            400,
            &none,
            &envelope("Invalid image file", "invalid_request_error", None),
            KEY,
        );
        assert_eq!(bad.code(), "provider_rejected");
    }

    #[test]
    fn transport_reasons_are_scrubbed_too() {
        let error = ProviderError::Unavailable {
            provider: NAME,
            reason: format!("request failed: {KEY}"),
            retry_after: None,
        };
        let text = scrubbed(error, KEY).to_string();
        assert!(!text.contains("SECRET"), "{text}");
    }
}
