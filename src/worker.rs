//! The queue driver's policy, free of any queue library: for each [`Delivery`], parse the
//! payload, take a tenant slot (or step aside when the tenant is saturated), run the
//! [`Pipeline`], then say how the job ends as a [`JobOutcome`] and announce it. The adapter in
//! `queue/` turns a BullMQ job into a `Delivery` and the outcome back into BullMQ's calls.
//!
//! Invariants kept here:
//! - A saturated tenant never holds a worker slot or consumes an attempt:
//!   [`JobOutcome::Delay`] puts the job back with a jittered delay.
//! - The Design row stays PROCESSING while attempts remain; FAILED and the failed event happen
//!   once, as [`settle`] decides. COMPLETED is written by the pipeline, once per successful run
//!   (rewriting the same values if a recovered job runs again).
//! - The tenant lease is renewed while the job runs and released however it ends (a panic
//!   included).
//! - An error is logged once, here, where it is handled.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tracing::Instrument;

use crate::error_code::ErrorCode;
use crate::events::{EventError, EventSink, EventSubject, RenderEvent};
use crate::failure::{JobError, settle};
use crate::jitter::jitter;
use crate::job::{JobData, PayloadError, RenderRequest, TenantId};
use crate::pipeline::{Cancellation, Disposition, Pipeline, Progress, RenderError, Stop};
use crate::tenancy::TenantLimiter;

/// Shortest and longest delay before a job of a saturated tenant is tried again.
pub const SATURATED_DELAY_MIN: Duration = Duration::from_millis(100);
pub const SATURATED_DELAY_MAX: Duration = Duration::from_millis(400);

/// The longest wait a provider's `retry-after` can impose before a job's next attempt; a longer
/// request is cut to this.
const PROVIDER_RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

/// One job as the queue hands it over, stripped of the queue library's types.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub job_id: String,
    /// The number of this attempt, from 1.
    pub attempt: u32,
    /// Attempts the producer allowed (BullMQ's `opts.attempts`, at least 1).
    pub attempts_allowed: u32,
    /// The job's data, not yet validated.
    pub payload: JobData,
    /// The job's name (BullMQ's `name`; the spec's producers use `render`).
    pub job_name: String,
    /// When the job was added (BullMQ's `timestamp`, epoch milliseconds): with the id, what
    /// tells this job from an earlier one that reused its id.
    pub enqueued_at_ms: u64,
    /// The W3C trace context a traced producer stored with the job (BullMQ's `opts.tm`,
    /// a JSON object as text), when spans are exported.
    pub trace_carrier: Option<String>,
    /// For a batch's parent job ([`crate::batch::BATCH_JOB_NAME`]): how its renders ended.
    pub children: Option<crate::batch::BatchChildren>,
}

/// How one delivery ends, for the queue adapter to carry out.
#[derive(Debug)]
pub enum JobOutcome {
    /// Done; the value becomes the job's `returnvalue` (the `render --json` object).
    Completed(serde_json::Value),
    /// Not started: try again after this delay without counting an attempt.
    Delay(Duration),
    /// This attempt failed; the queue's attempts and backoff decide what happens next.
    Retry(JobError),
    /// This attempt failed and the provider said when to come back: try again after this delay
    /// (the provider's wait, capped and jittered) instead of the queue's backoff. The attempt
    /// counts. Only given while attempts remain.
    RetryAfter(JobError, Duration),
    /// No attempt can succeed; fail the job now.
    Abort(JobError),
    /// The run was cancelled between two steps because the worker is shutting down: its slot
    /// is released and nothing is settled. The queue must leave the job as it is (active, its
    /// lock given up) for stalled recovery to hand to another worker; no attempt is counted.
    Abandon,
}

/// Something that processes deliveries; the queue adapter drives it.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync {
    async fn handle(&self, delivery: Delivery) -> JobOutcome;

    /// Asks every delivery still being handled to stop at its next step boundary and end as
    /// [`JobOutcome::Abandon`] (the shutdown grace is over).
    fn cancel_in_flight(&self) {}
}

/// Everything one render job needs, shared by all concurrent jobs of the process.
pub struct RenderWorker {
    pub pipeline: Pipeline,
    pub limiter: Arc<dyn TenantLimiter>,
    pub events: Arc<dyn EventSink>,
    /// Set when the shutdown grace is over; every running render stops at its next step.
    pub cancellation: Cancellation,
    /// Names the job spans carry: the queue, and this worker (`host:pid`).
    pub names: SpanNames,
    /// Jobs being handled right now (the dashboard's worker heartbeat reads it).
    pub in_flight: Arc<std::sync::atomic::AtomicU64>,
}

/// The names a job span carries, as Node BullMQ's telemetry names its consumer span.
#[derive(Debug, Clone, Default)]
pub struct SpanNames {
    /// The span's name: `process <queue>`.
    pub span: String,
    pub queue: String,
    pub worker: String,
}

impl SpanNames {
    pub fn new(queue: &str, worker: &str) -> Self {
        Self {
            span: format!("process {queue}"),
            queue: queue.to_owned(),
            worker: worker.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl JobHandler for RenderWorker {
    async fn handle(&self, delivery: Delivery) -> JobOutcome {
        let span = job_span(&self.names, &delivery);
        crate::telemetry::continue_trace(&span, delivery.trace_carrier.as_deref());
        let job_id = delivery.job_id.clone();
        let started = std::time::Instant::now();
        let in_flight = metrics::gauge!("design_render_jobs_in_flight");
        in_flight.increment(1.0);
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = AssertUnwindSafe(self.handle_in_span(delivery).instrument(span))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                // Only the bookkeeping around the pipeline can get here (the pipeline's own
                // panics are caught below); BullMQ retries the job.
                tracing::error!(job.id = %job_id, "Job {job_id} panicked outside the render; it will be retried");
                count_job("retried", ErrorCode::Internal.as_str());
                JobOutcome::Retry(JobError::Panicked)
            });
        in_flight.decrement(1.0);
        self.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if !matches!(outcome, JobOutcome::Delay(_)) {
            metrics::histogram!("design_render_job_duration_seconds").record(started.elapsed().as_secs_f64());
        }
        outcome
    }

    fn cancel_in_flight(&self) {
        self.cancellation.cancel();
    }
}

impl RenderWorker {
    async fn handle_in_span(&self, delivery: Delivery) -> JobOutcome {
        if delivery.job_name == crate::batch::BATCH_JOB_NAME {
            return self.announce_batch(delivery).await;
        }
        let request = match parse_request(&delivery.payload) {
            Ok(request) => request,
            Err(error) => {
                let subject = raw_subject(&delivery);
                return self
                    .fail(&delivery, subject, None, RenderError::Payload(error).into())
                    .await;
            }
        };
        let span = tracing::Span::current();
        span.record("design.id", request.design_id.as_str());
        span.record("tenant.id", request.tenant_id.as_str());
        let subject = subject(&delivery, &request);

        match self.limiter.try_acquire(&request.tenant_id, &delivery.job_id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    "Tenant {} is saturated; delaying job {}",
                    request.tenant_id,
                    delivery.job_id
                );
                metrics::counter!("design_render_tenant_saturated_total").increment(1);
                return JobOutcome::Delay(saturated_delay());
            }
            Err(error) => return self.fail(&delivery, subject, Some(&request), error.into()).await,
        }
        let renewal = LeaseRenewal::start(
            Arc::clone(&self.limiter),
            request.tenant_id.clone(),
            delivery.job_id.clone(),
            self.cancellation.clone(),
        );
        let result = AssertUnwindSafe(self.pipeline.run_attempt(&request, &delivery.job_id, &renewal))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(RenderError::Internal("the render panicked".into())));
        drop(renewal);
        let release = async {
            if let Err(error) = self.limiter.release(&request.tenant_id, &delivery.job_id).await {
                // The lease expires on its own; nothing else to do.
                tracing::warn!("Could not release the tenant slot of job {}: {error}", delivery.job_id);
            }
        };

        match result {
            Ok(output) => {
                tracing::info!("Completed design {} (job {})", request.design_id, delivery.job_id);
                count_job("completed", "ok");
                crate::telemetry::set_attributes(
                    &span,
                    [
                        ("outcome", "completed".into()),
                        ("provider", output.metadata.provider.into()),
                        ("tokens", i64::from(output.cost_tokens).into()),
                        ("cost.cents", i64::from(output.cost_cents).into()),
                    ],
                );
                record_step_durations(&output.metadata.timings);
                let event = RenderEvent::completed(subject, &output);
                // Independent, so they share one round trip on the multiplexed connection.
                tokio::join!(release, self.publish(event));
                match serde_json::to_value(&output) {
                    Ok(value) => JobOutcome::Completed(value),
                    Err(error) => {
                        JobOutcome::Retry(RenderError::Internal(format!("result not serialisable: {error}")).into())
                    }
                }
            }
            Err(RenderError::Stopped {
                stop: Stop::Cancelled,
                before,
            }) => {
                release.await;
                tracing::info!(
                    "Job {} (design {}) cancelled before {} as the worker shuts down; left for another worker",
                    delivery.job_id,
                    request.design_id,
                    before.describe()
                );
                count_job("abandoned", ErrorCode::Cancelled.as_str());
                crate::telemetry::set_attributes(&span, [("outcome", "abandoned".into())]);
                JobOutcome::Abandon
            }
            Err(error) => {
                release.await;
                self.fail(&delivery, subject, Some(&request), error.into()).await
            }
        }
    }

    /// Settles a failed attempt: logs it once, records FAILED and announces it when [`settle`]
    /// says so, and tells the queue whether to retry.
    async fn fail(
        &self,
        delivery: &Delivery,
        subject: EventSubject,
        request: Option<&RenderRequest>,
        error: JobError,
    ) -> JobOutcome {
        let settlement = settle(&error, delivery.attempt, delivery.attempts_allowed);
        let outcome = if settlement.is_final { "failed" } else { "retried" };
        count_job(outcome, error.code().as_str());
        let span = tracing::Span::current();
        let disposition = match error.disposition() {
            Disposition::Abort => "abort",
            Disposition::Retry => "retry",
        };
        crate::telemetry::set_attributes(
            &span,
            [
                ("outcome", outcome.into()),
                ("error.code", error.code().as_str().into()),
                ("error.disposition", disposition.into()),
            ],
        );
        crate::telemetry::set_error(&span, error.reason());
        if settlement.is_final {
            tracing::warn!(
                error.code = %error.code(),
                "Job {} failed for good (design {}, attempt {} of {}): {error}",
                delivery.job_id,
                subject.design_id.escape_debug(),
                delivery.attempt,
                delivery.attempts_allowed
            );
        } else {
            tracing::info!(
                error.code = %error.code(),
                "Attempt {} of {} of job {} failed, will retry{}: {error}",
                delivery.attempt,
                delivery.attempts_allowed,
                delivery.job_id,
                match error.retry_after() {
                    Some(after) => format!(" in {}s as the provider asked", after.min(PROVIDER_RETRY_AFTER_MAX).as_secs()),
                    None => String::new(),
                }
            );
        }
        if settlement.record_failed
            && let Some(request) = request
            && let Err(store_error) = self.pipeline.record_failure(request, &error.failed_render()).await
        {
            tracing::warn!("Could not mark design {} FAILED: {store_error}", request.design_id);
        }
        if settlement.announce {
            let mut event = RenderEvent::failed(
                subject,
                EventError {
                    code: error.code(),
                    message: error.to_string(),
                    permanent: error.disposition() == Disposition::Abort,
                },
            );
            // The money really spent: paid calls of any attempt are on the row already. Only
            // a row this job may touch is read (a missing or foreign one cost this job nothing).
            if settlement.record_failed
                && let Some(request) = request
            {
                match self.pipeline.designs.get(&request.design_id).await {
                    Ok(Some(row)) => (event.cost_tokens, event.cost_cents) = (row.cost_tokens, row.cost_cents),
                    Ok(None) => {}
                    Err(store_error) => {
                        tracing::warn!("Could not read the cost of design {}: {store_error}", request.design_id);
                    }
                }
            }
            self.publish(event).await;
        }
        match (error.disposition(), error.retry_after()) {
            (Disposition::Abort, _) => JobOutcome::Abort(error),
            (Disposition::Retry, Some(after)) if !settlement.is_final => {
                JobOutcome::RetryAfter(error, provider_retry_delay(after))
            }
            (Disposition::Retry, _) => JobOutcome::Retry(error),
        }
    }

    /// A batch's parent job runs once every render of the batch finished: it announces the
    /// batch and completes with the event as its return value. Nothing is rendered, and no
    /// tenant slot is taken.
    async fn announce_batch(&self, delivery: Delivery) -> JobOutcome {
        let data = match &delivery.payload {
            JobData::Json(value) => Some(value.clone()),
            JobData::Raw(bytes) => serde_json::from_slice(bytes).ok(),
        };
        let event = crate::batch::summarise(
            &delivery.job_id,
            delivery.enqueued_at_ms,
            data.as_ref(),
            delivery.children.unwrap_or_default(),
            self.pipeline.designs.as_ref(),
        )
        .await;
        tracing::info!(
            "Batch {} finished: {} of {} renders completed, {} failed, {} cents",
            event.job_id,
            event.completed,
            event.total,
            event.failed,
            event.cost_cents
        );
        let span = tracing::info_span!("publish", event = event.event);
        if let Err(error) = self.events.publish_batch(&event).instrument(span).await {
            tracing::warn!(error.code = %error.code(), "Could not publish {}: {error}", event.event);
        }
        match serde_json::to_value(&event) {
            Ok(value) => JobOutcome::Completed(value),
            Err(error) => JobOutcome::Retry(JobError::Render(RenderError::Internal(format!(
                "batch event not serialisable: {error}"
            )))),
        }
    }

    /// Announces the event on every sink, in a `publish` span whose `traceparent` the event
    /// carries.
    async fn publish(&self, mut event: RenderEvent) {
        let span = tracing::info_span!("publish", event = event.event);
        async {
            event.traceparent = crate::telemetry::traceparent();
            if let Err(error) = self.events.publish(&event).await {
                tracing::warn!(error.code = %error.code(), "Could not publish {}: {error}", event.event);
            }
        }
        .instrument(span)
        .await;
    }
}

/// The span of one job: `job` with the ids in log lines; exported, it is named and attributed
/// like the consumer span of Node BullMQ's telemetry (`process <queue>`, kind consumer,
/// `bullmq.*`), so a Node producer's trace continues here. The OpenTelemetry-only names stay
/// out of the log lines.
fn job_span(names: &SpanNames, delivery: &Delivery) -> tracing::Span {
    use tracing::field::Empty;
    if !crate::telemetry::exporting() {
        return tracing::info_span!("job", job.id = %delivery.job_id, design.id = Empty, tenant.id = Empty);
    }
    let span = tracing::info_span!(
        "job",
        otel.name = %names.span,
        otel.kind = "consumer",
        job.id = %delivery.job_id,
        design.id = Empty,
        tenant.id = Empty,
    );
    crate::telemetry::set_attributes(
        &span,
        [
            ("bullmq.queue.name", names.queue.clone().into()),
            ("bullmq.queue.operation", "process".into()),
            ("bullmq.job.id", delivery.job_id.clone().into()),
            ("bullmq.job.name", delivery.job_name.clone().into()),
            (
                "bullmq.job.attempts.made",
                i64::from(delivery.attempt.saturating_sub(1)).into(),
            ),
            ("bullmq.worker.name", names.worker.clone().into()),
        ],
    );
    span
}

/// The delivery's payload as a validated request; the error names the field by its JSON path.
/// A payload that does not validate is permanent.
pub fn parse_request(payload: &JobData) -> Result<RenderRequest, PayloadError> {
    RenderRequest::from_data(payload)
}

fn subject(delivery: &Delivery, request: &RenderRequest) -> EventSubject {
    EventSubject {
        job_id: delivery.job_id.clone(),
        design_id: request.design_id.to_string(),
        tenant_id: request.tenant_id.to_string(),
        user_id: request.user_id.as_ref().map(|user| user.as_str().to_owned()),
        attempts_made: delivery.attempt,
        enqueued_at_ms: delivery.enqueued_at_ms,
    }
}

/// Best-effort subject of a payload that did not validate.
fn raw_subject(delivery: &Delivery) -> EventSubject {
    let field = |name: &str, limit: usize| {
        delivery
            .payload
            .text_member(name)
            .map(|text| text.chars().take(limit).collect::<String>())
    };
    EventSubject {
        job_id: delivery.job_id.clone(),
        design_id: field("designId", crate::job::MAX_ID_LEN).unwrap_or_default(),
        tenant_id: field("tenantId", crate::job::MAX_ID_LEN).unwrap_or_default(),
        user_id: field("userId", crate::job::MAX_USER_ID_CHARS),
        attempts_made: delivery.attempt,
        enqueued_at_ms: delivery.enqueued_at_ms,
    }
}

/// `design_render_jobs_total{outcome, code}`: `completed` (code `ok`), `retried`, `failed`
/// (final) or `abandoned` (cancelled at shutdown), with the stable error code. Never an id.
fn count_job(outcome: &'static str, code: &'static str) {
    metrics::counter!("design_render_jobs_total", "outcome" => outcome, "code" => code).increment(1);
}

/// `design_render_step_duration_seconds{step}` of a completed render.
fn record_step_durations(timings: &crate::pipeline::metadata::Timings) {
    for (step, ms) in [
        ("mark_processing", timings.mark_processing_ms),
        ("sanitize_prompt", timings.sanitize_prompt_ms),
        ("download", timings.download_ms),
        ("decode", timings.decode_ms),
        ("inpaint", timings.inpaint_ms),
        ("postprocess", timings.postprocess_ms),
        ("upload", timings.upload_ms),
    ] {
        metrics::histogram!("design_render_step_duration_seconds", "step" => step).record(ms / 1000.0);
    }
}

/// A uniformly spread delay in [`SATURATED_DELAY_MIN`, `SATURATED_DELAY_MAX`), so saturated
/// jobs from many workers do not come back in lockstep.
fn saturated_delay() -> Duration {
    SATURATED_DELAY_MIN + jitter(SATURATED_DELAY_MAX - SATURATED_DELAY_MIN)
}

/// The wait before the next attempt when the provider asked for `after`: never sooner than
/// asked (up to [`PROVIDER_RETRY_AFTER_MAX`]), plus up to a tenth more, so the jobs one rate
/// limit turned away do not all come back in the same instant.
fn provider_retry_delay(after: Duration) -> Duration {
    let capped = after.min(PROVIDER_RETRY_AFTER_MAX);
    capped + jitter(capped / 10)
}

/// Renews a tenant lease every third of its lifetime until dropped, and says when the lease is
/// lost: the store answered that it had expired, or no renewal succeeded for a whole lease
/// lifetime (Redis down). The render then stops at its next step boundary, as it does when the
/// worker cancels its in-flight jobs.
struct LeaseRenewal {
    task: tokio::task::JoinHandle<()>,
    lost: Arc<std::sync::atomic::AtomicBool>,
    cancellation: Cancellation,
}

impl LeaseRenewal {
    fn start(limiter: Arc<dyn TenantLimiter>, tenant: TenantId, token: String, cancellation: Cancellation) -> Self {
        let lease = limiter.lease();
        let period = (lease / 3).max(Duration::from_millis(100));
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            let mut renewed_at = tokio::time::Instant::now();
            loop {
                ticker.tick().await;
                match limiter.renew(&tenant, &token).await {
                    Ok(true) => renewed_at = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::warn!("The tenant lease of job {token} expired before renewal; stopping the job");
                        flag.store(true, std::sync::atomic::Ordering::Release);
                        return;
                    }
                    Err(error) if renewed_at.elapsed() >= lease => {
                        tracing::warn!(
                            "Could not renew the tenant lease of job {token} for a whole lease lifetime; stopping the job: {error}"
                        );
                        flag.store(true, std::sync::atomic::Ordering::Release);
                        return;
                    }
                    Err(error) => tracing::warn!("Could not renew the tenant lease of job {token}: {error}"),
                }
            }
        });
        Self {
            task,
            lost,
            cancellation,
        }
    }
}

/// What the pipeline checks between steps: whether the worker cancels its jobs, or the job's
/// lease is gone.
impl Progress for LeaseRenewal {
    fn started(&self, _step: crate::pipeline::Step) {}

    fn stop(&self) -> Option<Stop> {
        if self.cancellation.is_cancelled() {
            Some(Stop::Cancelled)
        } else {
            self.lost
                .load(std::sync::atomic::Ordering::Acquire)
                .then_some(Stop::LeaseLost)
        }
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SIGTERM and SIGINT handlers, installed before the worker starts so a failure to install
/// them stops start-up instead of leaving a worker that cannot be stopped gracefully.
pub struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first signal. A second signal after that exits the process at once with
    /// status 130: jobs cut short are recovered by another worker's stalled check and their
    /// tenant leases expire on their own.
    pub async fn first(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        tracing::info!("Shutting down: no new jobs, waiting for in-flight ones");
        tokio::spawn(async move {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
            tracing::warn!("Second signal: exiting now");
            std::process::exit(130);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturated_delays_stay_in_range() {
        for _ in 0..100 {
            let delay = saturated_delay();
            assert!((SATURATED_DELAY_MIN..SATURATED_DELAY_MAX).contains(&delay), "{delay:?}");
        }
    }

    #[test]
    fn a_provider_retry_is_never_sooner_than_asked_and_is_capped() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let delay = provider_retry_delay(Duration::from_secs(2));
            assert!(
                (Duration::from_secs(2)..Duration::from_millis(2200)).contains(&delay),
                "{delay:?}"
            );
            seen.insert(delay);
        }
        assert!(seen.len() > 1, "the delay is jittered");
        let capped = provider_retry_delay(Duration::from_secs(86_400));
        assert!(
            (PROVIDER_RETRY_AFTER_MAX..PROVIDER_RETRY_AFTER_MAX + PROVIDER_RETRY_AFTER_MAX / 10).contains(&capped),
            "{capped:?}"
        );
        assert_eq!(provider_retry_delay(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_payload_that_is_not_a_job_object_names_the_payload() {
        let error = parse_request(&serde_json::json!(["not", "an", "object"]).into()).unwrap_err();
        assert_eq!(error.field, "payload");
        let error = parse_request(
            &serde_json::json!({
                "designId": "d1", "prompt": "", "baseTextureUrl": "https://a.example/b.png", "tenantId": "t1"
            })
            .into(),
        )
        .unwrap_err();
        assert_eq!(error.field, "prompt");
    }
}
