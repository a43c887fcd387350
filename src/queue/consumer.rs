//! Drives a [`JobHandler`] from a BullMQ queue: each job becomes a [`Delivery`], and the
//! handler's [`JobOutcome`] becomes the crate's return value, its retry or unrecoverable error,
//! or a move back to `delayed` that does not count an attempt.
//!
//! The crate decodes a job's hash with `String::from_utf8_lossy` (invalid UTF-8 becomes U+FFFD)
//! and its `data` with `serde_json::from_str(..).ok()`, falling back to `null`; it gives no
//! access to the stored bytes. So when the decoded data is `null` or contains U+FFFD, the
//! consumer reads the `data` field again as bytes (`HGET`) and hands those over, so the
//! validation can refuse invalid UTF-8 and say why text is not JSON.

use std::sync::Arc;
use std::time::Duration;

use bullmq::worker::CancellationToken;
use bullmq::{Job, MetricsOptions, Worker, WorkerOptions};

use bullmq::redis_connection::AnyConnection;

use super::QueueError;
use super::connection::{connection_options, redis_connection};
use crate::config::{QueueConfig, RedisConfig};
use crate::failure::JobError;
use crate::job::JobData;
use crate::worker::{Delivery, JobHandler, JobOutcome};

/// Consumes the queue with `handler` until `shutdown` resolves, then stops fetching and gives
/// in-flight jobs `SHUTDOWN_GRACE_SECONDS` to finish; those still running then stop at their
/// next step and are left to stalled recovery.
pub async fn serve(
    handler: Arc<dyn JobHandler>,
    queue: &QueueConfig,
    redis: &RedisConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), QueueError> {
    let stored = StoredData {
        connection: redis_connection(redis).await?,
        key_prefix: format!("{}:{}:", queue.prefix, queue.name),
    };
    let cancel = Arc::clone(&handler);
    let processor = move |job: Job, _cancel: CancellationToken| {
        let handler = Arc::clone(&handler);
        let stored = stored.clone();
        async move {
            let delivery = delivery_of(&job, &stored).await?;
            let outcome = handler.handle(delivery).await;
            carry_out(&job, outcome, &stored).await
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
    // Jobs get the grace to finish. Then every job still running is asked to stop at its next
    // step boundary (it releases its slot and is left to stalled recovery), and gets
    // `CANCEL_MARGIN` more to get there before the crate drops what is left.
    let limit = queue.shutdown_grace + CANCEL_MARGIN;
    let closing = worker.close(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
    let cancel_after_grace = async {
        tokio::time::sleep(queue.shutdown_grace).await;
        tracing::info!(
            "The shutdown grace of {}s is over: jobs still running stop at their next step and are left for another worker",
            queue.shutdown_grace.as_secs()
        );
        cancel.cancel_in_flight();
        std::future::pending::<()>().await;
    };
    let closed = tokio::select! {
        closed = closing => closed,
        () = cancel_after_grace => unreachable!("pending never resolves"),
    };
    events.abort();
    closed?;
    tracing::info!("Worker stopped");
    Ok(())
}

/// How long jobs cancelled at the end of the shutdown grace have to reach a step boundary.
/// A job still inside one step after that (a long provider call) is dropped as it is: the
/// stalled check recovers it and its tenant lease expires on its own.
const CANCEL_MARGIN: Duration = Duration::from_secs(10);

/// BullMQ worker options from our configuration.
fn worker_options(queue: &QueueConfig, redis: &RedisConfig) -> WorkerOptions {
    WorkerOptions::new()
        .connection(connection_options(redis, queue.worker_concurrency + 2))
        .prefix(queue.prefix.clone())
        .concurrency(queue.worker_concurrency)
        .lock_duration(queue.lock_duration)
        .stalled_interval(queue.stalled_interval)
        .drain_delay(queue.drain_delay)
        .metrics(MetricsOptions {
            max_data_points: METRICS_DATA_POINTS,
        })
}

/// Per-minute completed/failed counts the worker keeps in Redis, as Node workers do with their
/// `metrics` option (dashboards built for BullMQ read them): one day.
const METRICS_DATA_POINTS: usize = 24 * 60;

/// The job as the handler sees it. The crate retries while `attemptsMade + 1 < attempts`, so
/// this run is attempt `attemptsMade + 1` of `attempts` (at least 1). Failing to read the stored
/// data fails the attempt (transient: Redis trouble), never the job.
async fn delivery_of(job: &Job, stored: &StoredData) -> Result<Delivery, bullmq::Error> {
    let payload = if decoding_is_suspect(job.data()) {
        match stored.read(job.id()).await {
            Ok(Some(bytes)) => JobData::Raw(bytes),
            Ok(None) => JobData::Json(job.data().clone()),
            Err(error) => {
                return Err(bullmq::Error::ProcessingError(format!(
                    "could not read the data of job {} from Redis: {error} [queue_unavailable]",
                    job.id()
                )));
            }
        }
    } else {
        JobData::Json(job.data().clone())
    };
    Ok(Delivery {
        job_id: job.id().to_owned(),
        attempt: job.attempts_made() + 1,
        attempts_allowed: job.opts().attempts.unwrap_or(1).max(1),
        payload,
        job_name: job.name().to_owned(),
        enqueued_at_ms: job.timestamp(),
        trace_carrier: if crate::telemetry::exporting() {
            stored.trace_carrier(job.id()).await
        } else {
            None
        },
        children: if job.name() == crate::batch::BATCH_JOB_NAME {
            Some(stored.children(job.id()).await.map_err(|error| {
                bullmq::Error::ProcessingError(format!(
                    "could not read the renders of batch {} from Redis: {error} [queue_unavailable]",
                    job.id()
                ))
            })?)
        } else {
            None
        },
    })
}

/// Whether the crate's decoding may have hidden a problem: `null` is what it makes of data that
/// is not JSON, and U+FFFD what it makes of bytes that are not UTF-8 (a genuine U+FFFD costs
/// one extra read).
fn decoding_is_suspect(data: &serde_json::Value) -> bool {
    fn has_replacement(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\u{FFFD}'),
            serde_json::Value::Array(items) => items.iter().any(has_replacement),
            serde_json::Value::Object(members) => members
                .iter()
                .any(|(key, value)| key.contains('\u{FFFD}') || has_replacement(value)),
            _ => false,
        }
    }
    data.is_null() || has_replacement(data)
}

/// Reads a job's `data` field as stored: `<prefix>:<queue>:<job id>`, field `data`.
#[derive(Clone)]
struct StoredData {
    connection: AnyConnection,
    key_prefix: String,
}

/// Counts the attempt of a job this worker still holds the lock of (`atm` + 1, the reason in
/// `failedReason`, as BullMQ's own retry does); answers 0 without touching it otherwise.
const COUNT_ATTEMPT: &str = r#"
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call("HINCRBY", KEYS[1], "atm", 1)
redis.call("HSET", KEYS[1], "failedReason", ARGV[2])
return 1
"#;

/// Deletes a job's lock if this worker still holds it.
const RELEASE_LOCK: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"#;

impl StoredData {
    async fn release_lock(&self, job: &Job) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::Script::new(RELEASE_LOCK)
            .key(format!("{}{}:lock", self.key_prefix, job.id()))
            .arg(job.token().unwrap_or_default())
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn count_attempt(&self, job: &Job, reason: &str) -> redis::RedisResult<bool> {
        let mut connection = self.connection.clone();
        let job_key = format!("{}{}", self.key_prefix, job.id());
        let counted: i64 = redis::Script::new(COUNT_ATTEMPT)
            .key(&job_key)
            .key(format!("{job_key}:lock"))
            .arg(job.token().unwrap_or_default())
            .arg(reason)
            .invoke_async(&mut connection)
            .await?;
        Ok(counted == 1)
    }

    /// The producer's trace context: `tm` inside the job's stored `opts` (the crate drops it
    /// when it parses them). Trouble reading it costs the trace its parent, never the job.
    async fn trace_carrier(&self, job_id: &str) -> Option<String> {
        let mut connection = self.connection.clone();
        let opts: Option<String> = redis::cmd("HGET")
            .arg(format!("{}{job_id}", self.key_prefix))
            .arg("opts")
            .query_async(&mut connection)
            .await
            .inspect_err(|error| tracing::debug!("Could not read the options of job {job_id}: {error}"))
            .ok()
            .flatten();
        trace_carrier_of(&opts?)
    }

    /// How a flow parent's children ended: BullMQ keeps each completed child's return value in
    /// the parent's `:processed` hash and, for children added with `ignoreDependencyOnFailure`,
    /// each final failure's reason in its `:failed` hash (both keyed by the child's job key).
    async fn children(&self, job_id: &str) -> redis::RedisResult<crate::batch::BatchChildren> {
        let mut connection = self.connection.clone();
        let parent = format!("{}{job_id}", self.key_prefix);
        let processed: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{parent}:processed"))
            .query_async(&mut connection)
            .await?;
        let failed: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{parent}:failed"))
            .query_async(&mut connection)
            .await?;
        let mut children = crate::batch::BatchChildren {
            completed: processed
                .into_values()
                .map(|value| serde_json::from_str(&value).unwrap_or(serde_json::Value::Null))
                .collect(),
            failed: Vec::with_capacity(failed.len()),
        };
        for (child_key, reason) in failed {
            let data: Option<String> = redis::cmd("HGET")
                .arg(&child_key)
                .arg("data")
                .query_async(&mut connection)
                .await?;
            let design_id = data
                .and_then(|data| serde_json::from_str::<serde_json::Value>(&data).ok())
                .and_then(|data| data.get("designId")?.as_str().map(str::to_owned));
            children.failed.push(crate::events::BatchFailure {
                job_id: child_key.rsplit(':').next().unwrap_or(&child_key).to_owned(),
                design_id,
                reason,
            });
        }
        children.failed.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        Ok(children)
    }

    async fn read(&self, job_id: &str) -> redis::RedisResult<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        redis::cmd("HGET")
            .arg(format!("{}{job_id}", self.key_prefix))
            .arg("data")
            .query_async(&mut connection)
            .await
    }
}

/// `opts.tm` of a job's stored options: bullmq-otel keeps the W3C carrier there as a JSON
/// string (`omc` set means the producer chose to omit it, and then it is absent).
fn trace_carrier_of(opts: &str) -> Option<String> {
    let opts: serde_json::Value = serde_json::from_str(opts).ok()?;
    opts.get("tm")?.as_str().map(str::to_owned)
}

/// Carries the outcome out in BullMQ's terms: the value becomes `returnvalue`; a delay moves
/// the job back to `delayed` with skip-attempt (the crate's `moveToDelayed`), after which the
/// processor must return `Error::Delayed`; a provider's retry-after counts the attempt first
/// (the crate's own retries do the same inside its script); failures map by
/// [`to_bullmq_error`].
async fn carry_out(job: &Job, outcome: JobOutcome, stored: &StoredData) -> Result<serde_json::Value, bullmq::Error> {
    match outcome {
        JobOutcome::Completed(value) => Ok(value),
        JobOutcome::Delay(delay) => delay_job(job, delay).await,
        JobOutcome::RetryAfter(error, delay) => match stored.count_attempt(job, &error.reason()).await {
            Ok(true) => delay_job(job, delay).await,
            // The lock is gone: another worker owns the job now; fail this run as usual.
            Ok(false) => Err(to_bullmq_error(&error)),
            Err(redis_error) => {
                tracing::warn!(
                    "Could not count the attempt of job {} before its provider-requested delay; \
                     using the queue's backoff: {redis_error}",
                    job.id()
                );
                Err(to_bullmq_error(&error))
            }
        },
        JobOutcome::Retry(error) | JobOutcome::Abort(error) => Err(to_bullmq_error(&error)),
        JobOutcome::Abandon => {
            // Give the lock up so the stalled check hands the job on without waiting for the
            // lock to expire; `Delayed` tells the crate the job is taken care of.
            if let Err(error) = stored.release_lock(job).await {
                tracing::warn!(
                    "Could not release the lock of job {}; it expires on its own: {error}",
                    job.id()
                );
            }
            Err(bullmq::Error::Delayed)
        }
    }
}

async fn delay_job(job: &Job, delay: Duration) -> Result<serde_json::Value, bullmq::Error> {
    job.move_to_delayed(epoch_ms_after(delay)).await?;
    Err(bullmq::Error::Delayed)
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
    fn null_and_replacement_characters_make_the_decoded_data_suspect() {
        assert!(decoding_is_suspect(&serde_json::Value::Null));
        assert!(decoding_is_suspect(&serde_json::json!({"designId": "d\u{FFFD}"})));
        assert!(decoding_is_suspect(
            &serde_json::json!({"renderOptions": {"size": ["\u{FFFD}"]}})
        ));
        assert!(decoding_is_suspect(&serde_json::json!({"k\u{FFFD}": 1})));
        assert!(!decoding_is_suspect(
            &serde_json::json!({"designId": "d1", "maskUrl": null})
        ));
    }

    #[test]
    fn the_trace_carrier_is_the_tm_string_of_the_stored_options() {
        let opts =
            r#"{"attempts":3,"tm":"{\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}"}"#;
        assert_eq!(
            trace_carrier_of(opts).as_deref(),
            Some(r#"{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#)
        );
        assert_eq!(trace_carrier_of(r#"{"attempts":3}"#), None);
        assert_eq!(trace_carrier_of(r#"{"tm":{"traceparent":"x"}}"#), None);
        assert_eq!(trace_carrier_of("not json"), None);
    }

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
