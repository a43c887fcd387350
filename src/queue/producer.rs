//! The producer behind `design-render enqueue`: adds one job exactly as Node's
//! `Queue.add('render', payload, opts)` would.

use bullmq::types::BackoffStrategy;
use bullmq::{JobOptions, Queue, QueueOptions};

use super::QueueError;
use super::connection::connection_options;
use crate::config::{QueueConfig, RedisConfig};
use crate::job::{JobPayload, RenderRequest};

/// The job name our producer uses (the spec's `Queue.add('render', …)`); workers accept any name.
pub const JOB_NAME: &str = "render";

/// What `design-render enqueue` submits.
#[derive(Debug, Clone)]
pub struct Submission {
    pub payload: JobPayload,
    pub attempts: u32,
    /// Exponential backoff base in milliseconds (0 = retry at once).
    pub backoff_ms: u64,
    pub job_id: Option<String>,
}

/// The producer's handle on the render queue (one connection).
async fn open(queue: &QueueConfig, redis: &RedisConfig) -> Result<Queue, bullmq::Error> {
    Queue::with_options(
        &queue.name,
        QueueOptions::new()
            .connection(connection_options(redis, 1))
            .prefix(queue.prefix.clone()),
    )
    .await
}

/// `attempts` (at least 1) and, unless `backoff_ms` is 0, exponential backoff from it.
fn job_options(attempts: u32, backoff_ms: u64) -> JobOptions {
    let options = JobOptions::new().attempts(attempts.max(1));
    if backoff_ms > 0 {
        options.backoff(BackoffStrategy::Exponential(backoff_ms))
    } else {
        options
    }
}

/// How many jobs one `addBulk` call carries (one MULTI each on the Redis side).
const BULK_CHUNK: usize = 500;

/// Adds many jobs with BullMQ's bulk add, in chunks, and returns their ids in order. Payloads
/// must have been validated; every job gets `attempts` and `backoff_ms` as in [`enqueue`].
pub async fn enqueue_bulk(
    queue: &QueueConfig,
    redis: &RedisConfig,
    payloads: &[JobPayload],
    attempts: u32,
    backoff_ms: u64,
) -> Result<Vec<String>, QueueError> {
    let producer = open(queue, redis).await?;
    let result = async {
        let mut ids = Vec::with_capacity(payloads.len());
        for chunk in payloads.chunks(BULK_CHUNK) {
            let jobs = chunk
                .iter()
                .map(|payload| bullmq::BulkJob::with_options(JOB_NAME, payload, job_options(attempts, backoff_ms)))
                .collect();
            ids.extend(producer.add_bulk(jobs).await?.iter().map(|job| job.id().to_owned()));
        }
        Ok::<_, QueueError>(ids)
    }
    .await;
    producer.close().await;
    result
}

/// The ids of a batch added as a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowIds {
    /// The parent job ([`crate::batch::BATCH_JOB_NAME`]), which runs once every render finished.
    pub parent: String,
    /// The render jobs, in the order of the payloads.
    pub children: Vec<String>,
}

/// Adds a batch as one BullMQ flow, atomically: a parent job named
/// [`crate::batch::BATCH_JOB_NAME`] with data `{"total": n}` and one render child per payload
/// (`attempts` and `backoff_ms` as in [`enqueue`]). The children are added with
/// `ignoreDependencyOnFailure`, so a render that fails for good is recorded on the parent and
/// does not hold the batch back.
pub async fn enqueue_flow(
    queue: &QueueConfig,
    redis: &RedisConfig,
    payloads: &[JobPayload],
    attempts: u32,
    backoff_ms: u64,
) -> Result<FlowIds, QueueError> {
    let producer = bullmq::FlowProducer::with_options(
        bullmq::FlowProducerOptions::new()
            .connection(connection_options(redis, 1))
            .prefix(queue.prefix.clone()),
    )
    .await?;
    let result = async {
        let children = payloads
            .iter()
            .map(|payload| {
                Ok(bullmq::FlowJob::new(JOB_NAME, &queue.name, payload)?
                    .options(job_options(attempts, backoff_ms).ignore_dependency_on_failure()))
            })
            .collect::<Result<Vec<_>, bullmq::Error>>()?;
        let flow = bullmq::FlowJob::new(
            crate::batch::BATCH_JOB_NAME,
            &queue.name,
            serde_json::json!({ "total": payloads.len() }),
        )?
        .options(JobOptions::new().job_id(format!("batch-{}", crate::jitter::unique_hex())))
        .children(children);
        let node = producer.add(flow).await?;
        Ok::<_, QueueError>(FlowIds {
            parent: node.job.id().to_owned(),
            children: node
                .children
                .unwrap_or_default()
                .iter()
                .map(|child| child.job.id().to_owned())
                .collect(),
        })
    }
    .await;
    producer.close().await;
    result
}

/// Adds one job, exactly as Node's `Queue.add('render', payload, {attempts, backoff, jobId})`
/// would, and returns its id. The payload is validated first so nothing invalid is queued.
pub async fn enqueue(queue: &QueueConfig, redis: &RedisConfig, submission: Submission) -> Result<String, QueueError> {
    RenderRequest::parse(submission.payload.clone())?;
    let producer = open(queue, redis).await?;
    let options = job_options(submission.attempts, submission.backoff_ms);
    let mut add = producer.add(JOB_NAME, &submission.payload).options(options);
    if let Some(id) = submission.job_id {
        add = add.job_id(id);
    }
    let result = add.await;
    producer.close().await;
    Ok(result?.id().to_owned())
}
