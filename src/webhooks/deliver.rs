//! One delivery attempt: a signed POST of the event to its endpoint, and what the answer means
//! for the next attempt.
//!
//! - 2xx: delivered.
//! - 410 Gone: the receiver asks for no more deliveries; the job fails at once.
//! - 429 or 503 with `Retry-After`: the next attempt waits that long (capped at an hour).
//! - Anything else (another status, a redirect, which is never followed, a timeout, a refused
//!   connection): the next attempt follows the schedule, with up to a tenth of jitter.
//!
//! An exhausted delivery stays in the queue's `failed` set: the dead-letter list that
//! `design-render webhooks list-failed` shows and `replay` sends again. The first attempt waits
//! until BullMQ shows the render job finished, so a receiver never hears of a render before the
//! queue does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{DeliveryJob, legacy_signature, standard_signature};
use crate::assets::guard::PrivateHostPolicy;
use crate::error_code::ErrorCode;
use crate::failure::JobError;
use crate::job::JobData;
use crate::pipeline::Disposition;
use crate::worker::{Delivery, JobHandler, JobOutcome};

/// How long connecting to a receiver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The innermost cause of an error, which says what actually went wrong.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The longest wait a receiver's `Retry-After` can impose.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// How long the first attempt waits for the render job to show as finished before it delivers
/// anyway (a render job stuck that long is being recovered; its event is true already).
const RENDER_FINISH_WAIT: Duration = Duration::from_secs(600);

/// Whether a render job is finished (or gone) in its queue.
#[async_trait::async_trait]
pub trait RenderJobs: Send + Sync {
    async fn is_finished(&self, job_id: &str) -> Result<bool, String>;
}

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the delivery job is not valid: {0}")]
    Invalid(String),
    #[error("the endpoint {host} could not be reached: {message}")]
    Unreachable { host: String, message: String },
    #[error("the endpoint {host} answered {status}")]
    Rejected { host: String, status: u16 },
    #[error("the endpoint {host} answered 410 Gone: no more deliveries to it")]
    Gone { host: String },
}

impl WebhookError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidPayload,
            Self::Unreachable { .. } => ErrorCode::WebhookUnreachable,
            Self::Rejected { .. } => ErrorCode::WebhookRejected,
            Self::Gone { .. } => ErrorCode::WebhookGone,
        }
    }

    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Invalid(_) | Self::Gone { .. } => Disposition::Abort,
            Self::Unreachable { .. } | Self::Rejected { .. } => Disposition::Retry,
        }
    }
}

/// The handler of the webhook queue.
pub struct WebhookDeliverer {
    /// Private addresses are refused (after DNS too) unless this allows them.
    policy: PrivateHostPolicy,
    /// One client per destination port (the policy may allow a host on one port only).
    clients: Mutex<HashMap<u16, reqwest::Client>>,
    /// Standard Webhooks keys, one signature each.
    keys: Vec<Vec<u8>>,
    /// The first secret as configured, for the `X-Design-Render-Signature` of earlier versions.
    legacy_key: Vec<u8>,
    /// Waits before each attempt; `schedule[n]` comes after attempt `n` failed.
    schedule: Vec<Duration>,
    timeout: Duration,
    render_jobs: Arc<dyn RenderJobs>,
}

impl WebhookDeliverer {
    pub fn new(
        policy: PrivateHostPolicy,
        keys: Vec<Vec<u8>>,
        legacy_key: Vec<u8>,
        schedule: Vec<Duration>,
        timeout: Duration,
        render_jobs: Arc<dyn RenderJobs>,
    ) -> Self {
        Self {
            policy,
            clients: Mutex::default(),
            keys,
            legacy_key,
            schedule,
            timeout,
            render_jobs,
        }
    }

    /// Posts the event once; `Ok` with the status when the receiver accepted it.
    async fn post(&self, job: &DeliveryJob) -> Result<u16, (WebhookError, Option<Duration>)> {
        let host = job.endpoint.host_str().unwrap_or_default().to_owned();
        let timestamp = chrono::Utc::now().timestamp();
        let body = job.body.as_bytes();
        let client = self.client_for(&job.endpoint).map_err(|message| {
            (
                WebhookError::Unreachable {
                    host: host.clone(),
                    message,
                },
                None,
            )
        })?;
        let mut request = client.post(job.endpoint.clone()).timeout(self.timeout);
        if let Some(traceparent) = &job.traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &job.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                standard_signature(&self.keys, &job.event_id, timestamp, body),
            )
            .header("x-design-render-event", &job.event)
            .header("x-design-render-timestamp", timestamp.to_string())
            .header(
                "x-design-render-signature",
                legacy_signature(&self.legacy_key, timestamp, body),
            )
            .body(job.body.clone())
            .send()
            .await
            .map_err(|error| {
                let message = if error.is_timeout() {
                    format!("no answer within {} ms", self.timeout.as_millis())
                } else if error.is_connect() {
                    // The guard's refusal of a private address arrives as a connect error.
                    format!("the connection failed ({})", innermost(&error))
                } else {
                    "the request failed".to_owned()
                };
                (
                    WebhookError::Unreachable {
                        host: host.clone(),
                        message,
                    },
                    None,
                )
            })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(status),
            410 => Err((WebhookError::Gone { host }, None)),
            429 | 503 => {
                let after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(retry_after);
                Err((WebhookError::Rejected { host, status }, after))
            }
            _ => Err((WebhookError::Rejected { host, status }, None)),
        }
    }
}

#[async_trait::async_trait]
impl JobHandler for WebhookDeliverer {
    async fn handle(&self, delivery: Delivery) -> JobOutcome {
        let parsed = match &delivery.payload {
            JobData::Json(value) => serde_json::from_value::<DeliveryJob>(value.clone()).map_err(|e| e.to_string()),
            JobData::Raw(bytes) => serde_json::from_slice::<DeliveryJob>(bytes).map_err(|e| e.to_string()),
        };
        let job = match parsed {
            Ok(job) => job,
            Err(problem) => return failed(WebhookError::Invalid(problem), "failed"),
        };
        if delivery.attempt == 1 && !self.render_job_finished(&job, &delivery).await {
            return JobOutcome::Delay(Duration::from_millis(200) + crate::jitter::jitter(Duration::from_millis(100)));
        }
        match self.post(&job).await {
            Ok(status) => {
                count("delivered");
                tracing::info!(
                    "Delivered {} {} to {} (attempt {}, status {status})",
                    job.event,
                    job.event_id,
                    job.endpoint.host_str().unwrap_or_default(),
                    delivery.attempt
                );
                JobOutcome::Completed(serde_json::json!({ "status": status, "attempt": delivery.attempt }))
            }
            Err((error, _)) if error.disposition() == Disposition::Abort => {
                tracing::warn!("Delivery of {} stopped: {error}", job.event_id);
                failed(error, "gone")
            }
            Err((error, retry_after)) => {
                let attempt = delivery.attempt as usize;
                if attempt >= delivery.attempts_allowed as usize {
                    tracing::warn!(
                        "Delivery of {} failed for good after {attempt} attempts: {error}; `design-render webhooks replay {}` sends it again",
                        job.event_id,
                        job.event_id
                    );
                    return failed(error, "failed");
                }
                let wait = match retry_after {
                    Some(after) => after.min(RETRY_AFTER_MAX),
                    None => {
                        let scheduled = self.schedule.get(attempt).copied().unwrap_or_default();
                        scheduled + crate::jitter::jitter(scheduled / 10)
                    }
                };
                count("retried");
                tracing::info!(
                    "Delivery attempt {attempt} of {} failed ({error}); next in {} ms",
                    job.event_id,
                    wait.as_millis()
                );
                JobOutcome::RetryAfter(JobError::Webhook(error), wait.max(Duration::from_millis(1)))
            }
        }
    }
}

impl WebhookDeliverer {
    fn client_for(&self, url: &url::Url) -> Result<reqwest::Client, String> {
        let port = url.port_or_known_default().unwrap_or(443);
        // A poisoned lock only means another delivery panicked while inserting.
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&port) {
            return Ok(client.clone());
        }
        let client = crate::assets::http::guarded_client(&self.policy, Some(port), CONNECT_TIMEOUT, self.timeout)
            .map_err(|error| format!("no HTTP client: {error}"))?;
        clients.insert(port, client.clone());
        Ok(client)
    }

    /// Whether the first attempt may go: the render job is finished (or gone), or has been
    /// waited for long enough. Trouble reading its state waits too.
    async fn render_job_finished(&self, job: &DeliveryJob, delivery: &Delivery) -> bool {
        let age = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(i64::try_from(delivery.enqueued_at_ms).unwrap_or(i64::MAX));
        if u128::try_from(age).unwrap_or_default() > RENDER_FINISH_WAIT.as_millis() {
            return true;
        }
        match self.render_jobs.is_finished(&job.render_job_id).await {
            Ok(finished) => finished,
            Err(error) => {
                tracing::debug!("Could not read the state of render job {}: {error}", job.render_job_id);
                false
            }
        }
    }
}

fn failed(error: WebhookError, outcome: &'static str) -> JobOutcome {
    count(outcome);
    match error.disposition() {
        Disposition::Abort => JobOutcome::Abort(JobError::Webhook(error)),
        Disposition::Retry => JobOutcome::Retry(JobError::Webhook(error)),
    }
}

/// `design_render_webhook_deliveries_total{outcome}`: delivered, retried, failed (exhausted or
/// invalid) or gone (410).
fn count(outcome: &'static str) {
    metrics::counter!("design_render_webhook_deliveries_total", "outcome" => outcome).increment(1);
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let wait = retry_after(&later).unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn gone_and_invalid_stop_and_the_rest_retry() {
        let host = "hooks.example".to_owned();
        assert_eq!(
            WebhookError::Gone { host: host.clone() }.disposition(),
            Disposition::Abort
        );
        assert_eq!(WebhookError::Invalid("x".into()).disposition(), Disposition::Abort);
        let rejected = WebhookError::Rejected {
            host: host.clone(),
            status: 503,
        };
        assert_eq!(rejected.disposition(), Disposition::Retry);
        assert_eq!(rejected.code().as_str(), "webhook_rejected");
        assert_eq!(
            WebhookError::Unreachable {
                host,
                message: "m".into()
            }
            .code()
            .as_str(),
            "webhook_unreachable"
        );
    }
}
