//! The queue driver: for each BullMQ job, parse the payload, take a tenant slot (or step aside
//! when the tenant is saturated), run the [`Pipeline`], then complete, retry or abort, and
//! announce the outcome. Also the lease renewal while a job runs and graceful shutdown.
//!
//! Invariants kept here:
//! - A saturated tenant never holds a worker slot or consumes an attempt: the job goes back to
//!   `delayed` with a jittered delay (see [`crate::queue::delay_saturated`]).
//! - The Design row stays PROCESSING while attempts remain; FAILED and the failed event happen
//!   once, on the last attempt or a permanent error. COMPLETED is written by the pipeline, once
//!   per successful run (rewriting the same values if a recovered job runs again).
//! - An error is logged once, here, where it is handled.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bullmq::worker::CancellationToken;
use bullmq::{Job, Worker};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::config::Config;
use crate::events::{EventError, EventSink, EventSubject, RenderEvent};
use crate::job::{RenderRequest, TenantId};
use crate::pipeline::{Disposition, Pipeline, RenderError, Silent};
use crate::queue;
use crate::store::StoreError;
use crate::tenancy::TenantLimiter;

/// Everything one job needs, shared by all concurrent jobs of the process.
pub struct RenderWorker {
    pub pipeline: Pipeline,
    pub limiter: Arc<dyn TenantLimiter>,
    pub events: Arc<dyn EventSink>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("queue worker failed: {0}")]
    Queue(#[from] bullmq::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[from] std::io::Error),
}

impl RenderWorker {
    /// Processes one job. `Ok` becomes the job's `returnvalue` (the `render --json` object).
    pub async fn process(&self, job: Job) -> Result<serde_json::Value, bullmq::Error> {
        let span = tracing::info_span!(
            "job",
            job.id = %job.id(),
            design.id = tracing::field::Empty,
            tenant.id = tracing::field::Empty,
        );
        AssertUnwindSafe(self.process_in_span(&job).instrument(span))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(job.id = %job.id(), "Job {} panicked; BullMQ will retry it", job.id());
                Err(bullmq::Error::ProcessingError(
                    "internal error: the render panicked [internal]".into(),
                ))
            })
    }

    async fn process_in_span(&self, job: &Job) -> Result<serde_json::Value, bullmq::Error> {
        let request = match queue::parse_request(job) {
            Ok(request) => request,
            Err(error) => {
                let error = RenderError::Payload(error);
                tracing::warn!(error.code = error.code(), "Rejected job {}: {error}", job.id());
                self.announce_failure(job, raw_subject(job), &error).await;
                return Err(queue::to_bullmq_error(&error));
            }
        };
        let span = tracing::Span::current();
        span.record("design.id", request.design_id.as_str());
        span.record("tenant.id", request.tenant_id.as_str());

        match self.limiter.try_acquire(&request.tenant_id, job.id()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("Tenant {} is saturated; delaying job {}", request.tenant_id, job.id());
                return Err(queue::delay_saturated(job).await);
            }
            Err(error) => {
                tracing::warn!(
                    error.code = error.code(),
                    "Job {} could not take a tenant slot: {error}",
                    job.id()
                );
                return Err(bullmq::Error::ProcessingError(format!("{error} [{}]", error.code())));
            }
        }
        let renewal = LeaseRenewal::start(
            Arc::clone(&self.limiter),
            request.tenant_id.clone(),
            job.id().to_owned(),
        );
        let result = AssertUnwindSafe(self.pipeline.run(&request, &Silent))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(RenderError::Internal("the render panicked".into())));
        drop(renewal);
        let release = async {
            if let Err(error) = self.limiter.release(&request.tenant_id, job.id()).await {
                // The lease expires on its own; nothing else to do.
                tracing::warn!("Could not release the tenant slot of job {}: {error}", job.id());
            }
        };

        match result {
            Ok(output) => {
                tracing::info!("Completed design {} (job {})", request.design_id, job.id());
                let event = RenderEvent::completed(subject(job, &request), &output);
                // Independent, so they share one round trip on the multiplexed connection.
                tokio::join!(release, self.publish(&event));
                serde_json::to_value(&output).map_err(bullmq::Error::Serialization)
            }
            Err(error) => {
                release.await;
                let last = error.disposition() == Disposition::Abort || queue::is_last_attempt(job);
                if last {
                    tracing::warn!(
                        error.code = error.code(),
                        "Design {} failed for good (job {}, attempt {}): {error}",
                        request.design_id,
                        job.id(),
                        job.attempts_made() + 1
                    );
                    // A design of another tenant (or none) must stay untouched.
                    if !matches!(error, RenderError::Store(StoreError::NotFound { .. }))
                        && let Err(store_error) = self.pipeline.record_failure(&request, &error).await
                    {
                        tracing::warn!("Could not mark design {} FAILED: {store_error}", request.design_id);
                    }
                    self.announce_failure(job, subject(job, &request), &error).await;
                } else {
                    tracing::info!(
                        error.code = error.code(),
                        "Attempt {} of job {} failed, will retry: {error}",
                        job.attempts_made() + 1,
                        job.id()
                    );
                }
                Err(queue::to_bullmq_error(&error))
            }
        }
    }

    async fn announce_failure(&self, _job: &Job, subject: EventSubject, error: &RenderError) {
        let event = RenderEvent::failed(
            subject,
            EventError {
                code: error.code().to_owned(),
                message: error.to_string(),
                permanent: error.disposition() == Disposition::Abort,
            },
        );
        self.publish(&event).await;
    }

    async fn publish(&self, event: &RenderEvent) {
        if let Err(error) = self.events.publish(event).await {
            tracing::warn!(error.code = error.code(), "Could not publish {}: {error}", event.event);
        }
    }
}

fn subject(job: &Job, request: &RenderRequest) -> EventSubject {
    EventSubject {
        job_id: job.id().to_owned(),
        design_id: request.design_id.to_string(),
        tenant_id: request.tenant_id.to_string(),
        user_id: request.user_id.as_ref().map(ToString::to_string),
        attempts_made: job.attempts_made() + 1,
    }
}

/// Best-effort subject of a payload that did not validate.
fn raw_subject(job: &Job) -> EventSubject {
    let field = |name: &str| {
        job.data()
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(|text| text.chars().take(crate::job::MAX_ID_LEN).collect::<String>())
    };
    EventSubject {
        job_id: job.id().to_owned(),
        design_id: field("designId").unwrap_or_default(),
        tenant_id: field("tenantId").unwrap_or_default(),
        user_id: field("userId"),
        attempts_made: job.attempts_made() + 1,
    }
}

/// Renews a tenant lease every third of its lifetime until dropped.
struct LeaseRenewal {
    task: tokio::task::JoinHandle<()>,
}

impl LeaseRenewal {
    fn start(limiter: Arc<dyn TenantLimiter>, tenant: TenantId, token: String) -> Self {
        let period = (limiter.lease() / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                match limiter.renew(&tenant, &token).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("The tenant lease of job {token} expired before renewal"),
                    Err(error) => tracing::warn!("Could not renew the tenant lease of job {token}: {error}"),
                }
            }
        });
        Self { task }
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the BullMQ worker until SIGTERM or SIGINT, then stops fetching and gives in-flight jobs
/// `SHUTDOWN_GRACE_SECONDS` to finish (their slots are released as they end). A second signal
/// exits at once; jobs cut short are recovered by another worker's stalled check and their
/// tenant leases expire on their own.
pub async fn run(render: Arc<RenderWorker>, config: &Config) -> Result<(), WorkerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let processor = move |job: Job, _cancel: CancellationToken| {
        let render = Arc::clone(&render);
        async move { render.process(job).await }
    };
    let options = queue::worker_options(&config.queue, &config.redis);
    let worker = Arc::new(Worker::with_options(&config.queue.name, processor, options).await?);
    tracing::info!(
        queue = %config.queue.name,
        prefix = %config.queue.prefix,
        concurrency = config.queue.worker_concurrency,
        "Worker started on queue {}",
        config.queue.name
    );
    // The crate's local event channel is unbounded; drain it so it does not grow.
    let events = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            while let Some(event) = worker.next_event().await {
                tracing::trace!(?event, "worker event");
            }
        })
    };

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tracing::info!("Shutting down: no new jobs, waiting for in-flight ones");
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("Second signal: exiting now");
        std::process::exit(130);
    });
    let grace_ms = u64::try_from(config.queue.shutdown_grace.as_millis()).unwrap_or(u64::MAX);
    let closed = worker.close(grace_ms).await;
    events.abort();
    closed?;
    tracing::info!("Worker stopped");
    Ok(())
}
