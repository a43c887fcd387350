//! The thin adapter over the `bullmq-official` crate (lib `bullmq`): connection and worker
//! options from our configuration, the wire DTO → [`RenderRequest`] step, the mapping of a
//! render failure to BullMQ's retry or unrecoverable paths, the delay of a job whose tenant is
//! saturated, and the producer used by `design-render enqueue`.
//!
//! It never re-implements the BullMQ protocol: every state change goes through the crate's Lua
//! scripts, so Node.js producers and workers interoperate with ours.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use bullmq::options::RedisConnectionOptions;
use bullmq::redis_connection::{AnyConnection, RedisConnection};
use bullmq::types::BackoffStrategy;
use bullmq::{Job, JobOptions, Queue, QueueOptions, WorkerOptions};

use crate::config::{QueueConfig, RedisConfig};
use crate::job::{JobPayload, PayloadError, RenderRequest};
use crate::pipeline::{Disposition, RenderError};

/// The job name our producer uses (the spec's `Queue.add('render', …)`); workers accept any name.
pub const JOB_NAME: &str = "render";

/// Shortest and longest delay before a job of a saturated tenant is tried again.
pub const SATURATED_DELAY_MIN: Duration = Duration::from_millis(100);
pub const SATURATED_DELAY_MAX: Duration = Duration::from_millis(400);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(#[from] bullmq::Error),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl QueueError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "queue_unavailable",
            Self::Payload(_) => "invalid_payload",
        }
    }

    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Unavailable(_) => Disposition::Retry,
            Self::Payload(_) => Disposition::Abort,
        }
    }
}

/// Connection options: `REDIS_CLUSTER_NODES` selects a Redis Cluster; otherwise `REDIS_URL`
/// (may be `rediss://`) wins over host/port/password.
pub fn connection_options(redis: &RedisConfig, max_connections: usize) -> RedisConnectionOptions {
    let options = match (&redis.url, redis.cluster_nodes.is_empty()) {
        // A `REDIS_URL` carries its own credentials.
        (Some(url), true) => RedisConnectionOptions::new().url(url.expose()),
        (None, true) => with_password(
            RedisConnectionOptions::new().host(redis.host.clone()).port(redis.port),
            redis,
        ),
        (_, false) => with_password(
            RedisConnectionOptions::new()
                .cluster_nodes(redis.cluster_nodes.iter().cloned())
                .tls(redis.cluster_nodes.iter().any(|node| node.starts_with("rediss://"))),
            redis,
        ),
    };
    options.max_connections(max_connections.max(1))
}

fn with_password(options: RedisConnectionOptions, redis: &RedisConfig) -> RedisConnectionOptions {
    match &redis.password {
        Some(password) => options.password(password.expose()),
        None => options,
    }
}

/// A connection to the same Redis (or Redis Cluster) as the queue, for tenant leases and event
/// publishing. It reconnects on its own; on a cluster, commands go to the node owning their key.
pub async fn redis_connection(redis: &RedisConfig) -> Result<AnyConnection, bullmq::Error> {
    Ok(RedisConnection::new_managed_only(&connection_options(redis, 1))
        .await?
        .connection())
}

/// BullMQ worker options from our configuration.
pub fn worker_options(queue: &QueueConfig, redis: &RedisConfig) -> WorkerOptions {
    WorkerOptions::new()
        .connection(connection_options(redis, queue.worker_concurrency + 2))
        .prefix(queue.prefix.clone())
        .concurrency(queue.worker_concurrency)
        .lock_duration(queue.lock_duration)
        .stalled_interval(queue.stalled_interval)
}

/// The job's payload as a validated request. A payload that does not decode is permanent.
pub fn parse_request(job: &Job) -> Result<RenderRequest, PayloadError> {
    let payload: JobPayload = serde_json::from_value(job.data().clone()).map_err(|error| PayloadError {
        field: "payload",
        rule: format!("is not a valid job object: {error}"),
    })?;
    RenderRequest::parse(payload)
}

/// Total attempts allowed for this job (`opts.attempts`, at least 1).
pub fn attempts_allowed(job: &Job) -> u32 {
    job.opts().attempts.unwrap_or(1).max(1)
}

/// Whether this run is the last one BullMQ will make (the crate retries while
/// `attemptsMade + 1 < attempts`).
pub fn is_last_attempt(job: &Job) -> bool {
    job.attempts_made() + 1 >= attempts_allowed(job)
}

/// The error handed back to BullMQ: permanent errors become unrecoverable (no further attempts),
/// transient ones a normal failure so `attempts`/`backoff` apply. The message becomes the job's
/// `failedReason`, prefixed with the stable code.
pub fn to_bullmq_error(error: &RenderError) -> bullmq::Error {
    let message = format!("{} [{}]", error, error.code());
    match error.disposition() {
        Disposition::Abort => bullmq::Error::Unrecoverable(message),
        Disposition::Retry => bullmq::Error::ProcessingError(message),
    }
}

/// Puts a job whose tenant is saturated back into `delayed` after a short jittered delay,
/// without counting an attempt (the crate's `moveToDelayed` with skip-attempt). The processor
/// must then return the returned `Error::Delayed`, which tells the crate the job already moved.
pub async fn delay_saturated(job: &Job) -> bullmq::Error {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    let until = now_ms + u64::try_from(jitter().as_millis()).unwrap_or_default();
    match job.move_to_delayed(until).await {
        Ok(()) => bullmq::Error::Delayed,
        Err(error) => error,
    }
}

/// A uniformly spread delay in [`SATURATED_DELAY_MIN`, `SATURATED_DELAY_MAX`), so saturated
/// jobs from many workers do not come back in lockstep.
fn jitter() -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let spread = u64::try_from((SATURATED_DELAY_MAX - SATURATED_DELAY_MIN).as_millis())
        .unwrap_or(1)
        .max(1);
    SATURATED_DELAY_MIN + Duration::from_millis(hasher.finish() % spread)
}

/// What `design-render enqueue` submits.
#[derive(Debug, Clone)]
pub struct Submission {
    pub payload: JobPayload,
    pub attempts: u32,
    /// Exponential backoff base in milliseconds (0 = retry at once).
    pub backoff_ms: u64,
    pub job_id: Option<String>,
}

/// Adds one job, exactly as Node's `Queue.add('render', payload, {attempts, backoff, jobId})`
/// would, and returns its id. The payload is validated first so nothing invalid is queued.
pub async fn enqueue(queue: &QueueConfig, redis: &RedisConfig, submission: Submission) -> Result<String, QueueError> {
    RenderRequest::parse(submission.payload.clone())?;
    let producer = Queue::with_options(
        &queue.name,
        QueueOptions::new()
            .connection(connection_options(redis, 1))
            .prefix(queue.prefix.clone()),
    )
    .await?;
    let mut options = JobOptions::new().attempts(submission.attempts.max(1));
    if submission.backoff_ms > 0 {
        options = options.backoff(BackoffStrategy::Exponential(submission.backoff_ms));
    }
    let mut add = producer.add(JOB_NAME, &submission.payload).options(options);
    if let Some(id) = submission.job_id {
        add = add.job_id(id);
    }
    let result = add.await;
    producer.close().await;
    Ok(result?.id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let delay = jitter();
            assert!((SATURATED_DELAY_MIN..SATURATED_DELAY_MAX).contains(&delay), "{delay:?}");
        }
    }

    #[test]
    fn permanent_errors_are_unrecoverable_and_transient_ones_retry() {
        let permanent = RenderError::Payload(PayloadError {
            field: "prompt",
            rule: "must not be empty".into(),
        });
        match to_bullmq_error(&permanent) {
            bullmq::Error::Unrecoverable(message) => {
                assert!(
                    message.contains("prompt") && message.contains("[invalid_payload]"),
                    "{message}"
                )
            }
            other => panic!("expected Unrecoverable, got {other:?}"),
        }
        let transient = RenderError::Internal("out of memory".into());
        assert!(matches!(to_bullmq_error(&transient), bullmq::Error::ProcessingError(_)));
    }

    #[test]
    fn redis_url_wins_over_host_and_port() {
        let redis = RedisConfig {
            url: Some(crate::config::Secret::new("rediss://:pw@cache.example:6380/2")),
            ..RedisConfig::default()
        };
        assert_eq!(
            connection_options(&redis, 1).effective_url(),
            "rediss://:pw@cache.example:6380/2"
        );
        let redis = RedisConfig {
            host: "10.0.0.5".into(),
            port: 6390,
            ..RedisConfig::default()
        };
        assert!(connection_options(&redis, 1).effective_url().contains("10.0.0.5:6390"));
    }

    #[test]
    fn cluster_nodes_win_and_take_the_password() {
        let redis = RedisConfig {
            url: Some(crate::config::Secret::new("redis://127.0.0.1:6379")),
            password: Some(crate::config::Secret::new("pw")),
            cluster_nodes: vec!["redis://10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into()],
            ..RedisConfig::default()
        };
        let options = connection_options(&redis, 1);
        assert!(options.is_cluster());
        assert_eq!(
            options.cluster_nodes,
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(options.password.as_deref(), Some("pw"));
    }
}
