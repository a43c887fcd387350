//! The dry-run adapter (`DRY_RUN_MODE=true`), chosen in `app.rs` instead of the paid chain.
//!
//! It never calls a paid provider: the image comes from the offline fill it wraps, and the
//! cost the paid provider *would* have had is reported as an estimate
//! ([`Accounting::estimate`], with [`Accounting::dry_run`] set), never as spent money. The
//! pipeline stays unaware of the mode; it records whatever accounting the editor returns.

use std::sync::Arc;

use super::{Accounting, CallEstimate, EditRequest, EditResponse, ImageEditor, ProviderError};

/// Predicts the paid call for a request (app.rs passes the OpenAI adapter's planner, so this
/// module does not depend on another adapter).
pub type Estimator = Box<dyn Fn(&EditRequest<'_>) -> CallEstimate + Send + Sync>;

pub struct DryRunEditor {
    fill: Arc<dyn ImageEditor>,
    estimator: Option<Estimator>,
    /// `MAX_TOKENS_PER_JOB`, checked against the estimate as the paid provider would.
    max_tokens_per_job: u64,
}

impl DryRunEditor {
    /// `estimator` is `None` when no paid provider is configured (nothing to estimate).
    pub fn new(fill: Arc<dyn ImageEditor>, estimator: Option<Estimator>, max_tokens_per_job: u64) -> Self {
        Self {
            fill,
            estimator,
            max_tokens_per_job,
        }
    }
}

#[async_trait::async_trait]
impl ImageEditor for DryRunEditor {
    fn name(&self) -> &'static str {
        self.fill.name()
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let estimate = self.estimator.as_ref().map(|estimate| estimate(&request));
        // A dry run says what the real run would do, so a job the cap would stop fails here too.
        if let Some(estimate) = &estimate {
            crate::budget::check_limit(&estimate.tokens, request.tokens_spent, self.max_tokens_per_job).map_err(
                |error| ProviderError::Rejected {
                    provider: estimate.provider,
                    code: error.code(),
                    reason: error.to_string(),
                },
            )?;
        }
        let mut response = self.fill.edit(request).await?;
        response.usage = super::Usage::default();
        response.cost_micro_usd = 0;
        response.accounting = Accounting {
            paid_call: None,
            estimate,
            dry_run: true,
        };
        Ok(response)
    }
}
