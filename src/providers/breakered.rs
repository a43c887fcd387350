//! The circuit-breaker decorator: an [`ImageEditor`] that guards another one with a
//! [`CircuitBreaker`] state machine (see `breaker.rs`).
//!
//! It decides which outcomes count: transient failures ([`ProviderError::Unavailable`]: 5xx,
//! timeouts, connection errors, 429) count; the job's own bad request (content policy,
//! invalid image, token cap) and misconfiguration do not. It logs every transition. When the
//! breaker is open it answers [`ProviderError::CircuitOpen`] without calling the provider.

use std::sync::Arc;

use super::breaker::{CircuitBreaker, Transition};
use super::{EditRequest, EditResponse, ImageEditor, ProviderError};

/// An editor behind its own circuit breaker.
pub struct Breakered {
    inner: Arc<dyn ImageEditor>,
    breaker: CircuitBreaker,
}

impl Breakered {
    /// Publishes the breaker as closed at once, so `/metrics` lists every provider's breaker
    /// from the start rather than after its first transition.
    pub fn new(inner: Arc<dyn ImageEditor>, breaker: CircuitBreaker) -> Self {
        metrics::gauge!("design_render_circuit_breaker_state", "provider" => inner.name()).set(0.0);
        Self { inner, breaker }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn log(&self, transition: Option<Transition>) {
        if let Some(Transition { from, to }) = transition {
            // 0 closed, 1 half-open, 2 open.
            let level = match to {
                super::breaker::BreakerState::Closed => 0.0,
                super::breaker::BreakerState::HalfOpen => 1.0,
                super::breaker::BreakerState::Open => 2.0,
            };
            metrics::gauge!("design_render_circuit_breaker_state", "provider" => self.inner.name()).set(level);
            tracing::warn!(
                provider = self.inner.name(),
                breaker.from = from.as_str(),
                breaker.to = to.as_str(),
                "circuit breaker of provider {} went from {from} to {to}",
                self.inner.name()
            );
        }
    }
}

#[async_trait::async_trait]
impl ImageEditor for Breakered {
    fn identity(&self) -> Option<super::EditorIdentity> {
        self.inner.identity()
    }

    fn breaker_states(&self) -> Vec<(&'static str, super::breaker::BreakerState)> {
        vec![(self.inner.name(), self.breaker.state())]
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let permit = self.breaker.try_acquire().map_err(|open| ProviderError::CircuitOpen {
            provider: self.inner.name(),
            retry_after: open.retry_after,
        })?;
        self.log(permit.transition());
        let outcome = self.inner.edit(request).await;
        match &outcome {
            Ok(_) => self.log(permit.success()),
            Err(ProviderError::Unavailable { .. }) => self.log(permit.failure()),
            Err(_) => permit.ignore(),
        }
        outcome
    }
}
