//! The fallback chain: an ordered list of editors that is itself an [`ImageEditor`], so the
//! pipeline calls one editor and never counts providers.
//!
//! Rule: try each provider in order. A success ends the chain. An open breaker, a transient
//! failure or a provider misconfiguration moves on to the next provider (none of them is the
//! job's fault). A rejection of the request itself (content policy, token cap, bad image) ends
//! the chain: the next provider would be asked the same thing. When no provider is left the
//! chain fails with [`ProviderError::Exhausted`], which is transient, so the job retries with
//! backoff — except when every provider was misconfigured, which no retry can fix.
//! Every try is recorded as an [`Attempt`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{Attempt, EditRequest, EditResponse, ImageEditor, ProviderError};

pub struct FallbackChain {
    editors: Vec<Arc<dyn ImageEditor>>,
}

impl FallbackChain {
    /// At least one editor is expected; an empty chain fails every call with `Exhausted`.
    pub fn new(editors: Vec<Arc<dyn ImageEditor>>) -> Self {
        Self { editors }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.editors.iter().map(|editor| editor.name()).collect()
    }
}

#[async_trait::async_trait]
impl ImageEditor for FallbackChain {
    fn breaker_states(&self) -> Vec<(&'static str, super::breaker::BreakerState)> {
        self.editors.iter().flat_map(|editor| editor.breaker_states()).collect()
    }

    fn name(&self) -> &'static str {
        "fallback"
    }

    /// The first provider's: it answers whenever it can, and an image from a later one is
    /// never stored under its identity (the pipeline checks who answered).
    fn identity(&self) -> Option<super::EditorIdentity> {
        self.editors.first().and_then(|editor| editor.identity())
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let mut attempts = Vec::with_capacity(self.editors.len());
        let mut failures: Vec<ProviderError> = Vec::new();
        for editor in &self.editors {
            let started = Instant::now();
            let span = tracing::info_span!(
                "provider attempt",
                provider = editor.name(),
                outcome = tracing::field::Empty,
                model = tracing::field::Empty,
                tokens = tracing::field::Empty,
                cost.microcents = tracing::field::Empty,
            );
            let outcome = editor.edit(request).instrument(span.clone()).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let provider = editor.name();
            metrics::histogram!("design_render_provider_latency_seconds", "provider" => provider)
                .record(started.elapsed().as_secs_f64());
            let label = match &outcome {
                Ok(_) => "ok",
                Err(error) => error.code().as_str(),
            };
            metrics::counter!("design_render_provider_requests_total", "provider" => provider, "outcome" => label)
                .increment(1);
            span.record("outcome", label);
            if let Ok(EditResponse {
                accounting: super::Accounting {
                    paid_call: Some(call), ..
                },
                ..
            }) = &outcome
            {
                span.record("model", call.model.as_str());
                span.record("tokens", call.usage.total());
                span.record("cost.microcents", call.cost.total.0);
            }
            match outcome {
                Ok(mut response) => {
                    attempts.push(Attempt {
                        provider: editor.name(),
                        outcome: "ok",
                        latency_ms,
                    });
                    response.attempts = attempts;
                    return Ok(response);
                }
                Err(error) => {
                    attempts.push(Attempt {
                        provider: editor.name(),
                        outcome: error.code().as_str(),
                        latency_ms,
                    });
                    let moves_on = error.is_retryable() || matches!(error, ProviderError::Misconfigured { .. });
                    if !moves_on {
                        return Err(error);
                    }
                    tracing::info!(
                        provider = editor.name(),
                        error.code = %error.code(),
                        "provider {} failed ({error}); trying the next one",
                        editor.name()
                    );
                    failures.push(error);
                }
            }
        }
        let summary = failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        if !failures.is_empty()
            && failures
                .iter()
                .all(|e| matches!(e, ProviderError::Misconfigured { .. }))
        {
            return Err(ProviderError::Misconfigured {
                provider: attempts.first().map_or("fallback", |attempt| attempt.provider),
                reason: summary,
            });
        }
        let retry_after = failures
            .iter()
            .filter_map(ProviderError::retry_after)
            .min()
            .map(|after| after.max(Duration::from_secs(1)));
        Err(ProviderError::Exhausted {
            summary: if summary.is_empty() {
                "no provider is configured".into()
            } else {
                summary
            },
            retry_after,
            attempts,
        })
    }
}
