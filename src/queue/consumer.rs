//! Drives a [`JobHandler`] from a BullMQ queue: each job becomes a [`Delivery`], and the
//! handler's [`JobOutcome`] becomes the crate's return value, its retry or unrecoverable error,
//! or a move back to `delayed` that does not count an attempt.

use std::sync::Arc;
use std::time::Duration;

use bullmq::worker::CancellationToken;
use bullmq::{Job, Worker, WorkerOptions};

use super::QueueError;
use super::connection::connection_options;
use crate::config::{QueueConfig, RedisConfig};
use crate::failure::JobError;
use crate::worker::{Delivery, JobHandler, JobOutcome};

/// Consumes the queue with `handler` until `shutdown` resolves, then stops fetching and gives
/// in-flight jobs `SHUTDOWN_GRACE_SECONDS` to finish.
pub async fn serve(
    handler: Arc<dyn JobHandler>,
    queue: &QueueConfig,
    redis: &RedisConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let processor = move |job: Job, _cancel: CancellationToken| {
        let handler = Arc::clone(&handler);
        async move {
            let outcome = handler.handle(delivery_of(&job)).await;
            carry_out(&job, outcome).await
        }
    };
    let worker = Arc::new(Worker::with_options(&queue.name, processor, worker_options(queue, redis)).await?);
    tracing::info!(
        queue = %queue.name,
        prefix = %queue.prefix,
        concurrency = queue.worker_concurrency,
        "Worker started on queue {}",
        queue.name
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
    shutdown.await;
    let grace_ms = u64::try_from(queue.shutdown_grace.as_millis()).unwrap_or(u64::MAX);
    let closed = worker.close(grace_ms).await;
    events.abort();
    closed?;
    tracing::info!("Worker stopped");
    Ok(())
}

/// BullMQ worker options from our configuration.
fn worker_options(queue: &QueueConfig, redis: &RedisConfig) -> WorkerOptions {
    WorkerOptions::new()
        .connection(connection_options(redis, queue.worker_concurrency + 2))
        .prefix(queue.prefix.clone())
        .concurrency(queue.worker_concurrency)
        .lock_duration(queue.lock_duration)
        .stalled_interval(queue.stalled_interval)
}

/// The job as the handler sees it. The crate retries while `attemptsMade + 1 < attempts`, so
/// this run is attempt `attemptsMade + 1` of `attempts` (at least 1).
fn delivery_of(job: &Job) -> Delivery {
    Delivery {
        job_id: job.id().to_owned(),
        attempt: job.attempts_made() + 1,
        attempts_allowed: job.opts().attempts.unwrap_or(1).max(1),
        payload: job.data().clone(),
    }
}

/// Carries the outcome out in BullMQ's terms: the value becomes `returnvalue`; a delay moves
/// the job back to `delayed` with skip-attempt (the crate's `moveToDelayed`), after which the
/// processor must return `Error::Delayed`; failures map by [`to_bullmq_error`].
async fn carry_out(job: &Job, outcome: JobOutcome) -> Result<serde_json::Value, bullmq::Error> {
    match outcome {
        JobOutcome::Completed(value) => Ok(value),
        JobOutcome::Delay(delay) => match job.move_to_delayed(epoch_ms_after(delay)).await {
            Ok(()) => Err(bullmq::Error::Delayed),
            Err(error) => Err(error),
        },
        JobOutcome::Retry(error) | JobOutcome::Abort(error) => Err(to_bullmq_error(&error)),
    }
}

/// Permanent errors become unrecoverable (no further attempts), transient ones a normal
/// failure so `attempts`/`backoff` apply. The message, `"<message> [<code>]"`, becomes the job's
/// `failedReason`.
fn to_bullmq_error(error: &JobError) -> bullmq::Error {
    match error.disposition() {
        crate::pipeline::Disposition::Abort => bullmq::Error::Unrecoverable(error.reason()),
        crate::pipeline::Disposition::Retry => bullmq::Error::ProcessingError(error.reason()),
    }
}

fn epoch_ms_after(delay: Duration) -> u64 {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::PayloadError;
    use crate::pipeline::RenderError;

    #[test]
    fn permanent_errors_are_unrecoverable_and_transient_ones_retry() {
        let permanent = JobError::Render(RenderError::Payload(PayloadError {
            field: "prompt".into(),
            rule: "must not be empty".into(),
        }));
        match to_bullmq_error(&permanent) {
            bullmq::Error::Unrecoverable(message) => {
                assert!(
                    message.contains("prompt") && message.ends_with("[invalid_payload]"),
                    "{message}"
                )
            }
            other => panic!("expected Unrecoverable, got {other:?}"),
        }
        match to_bullmq_error(&JobError::Panicked) {
            bullmq::Error::ProcessingError(message) => assert!(message.ends_with("[internal]"), "{message}"),
            other => panic!("expected ProcessingError, got {other:?}"),
        }
    }
}
