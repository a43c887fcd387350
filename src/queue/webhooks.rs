//! The webhook queue in BullMQ's terms: deliveries are added under their deterministic job ids
//! (an existing id is left alone, which is what makes a re-announced event one delivery), the
//! render queue is asked whether a job has finished, and the dead-letter list (`failed`) is read
//! and replayed for `design-render webhooks`.

use std::time::Duration;

use bullmq::types::{KeepJobs, RemoveOnFinish};
use bullmq::{JobOptions, Queue, QueueOptions};

use super::connection::connection_options;
use crate::config::{QueueConfig, RedisConfig, WebhookConfig};
use crate::webhooks::deliver::RenderJobs;
use crate::webhooks::{DELIVERY_JOB_NAME, DeliveryJob, DeliveryQueue};

/// How long a delivered job is kept: long enough that an event announced again (a render job
/// recovered after a crash) finds its delivery and is not sent twice.
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);

/// The webhook queue's options: same Redis and prefix as the render queue, its own name.
pub fn webhook_queue_config(queue: &QueueConfig, webhooks: &WebhookConfig) -> QueueConfig {
    QueueConfig {
        name: webhooks.queue_name.clone(),
        worker_concurrency: webhooks.concurrency,
        ..queue.clone()
    }
}

pub(super) async fn open(queue: &QueueConfig, redis: &RedisConfig) -> Result<Queue, bullmq::Error> {
    Queue::with_options(
        &queue.name,
        QueueOptions::new()
            .connection(connection_options(redis, 2))
            .prefix(queue.prefix.clone()),
    )
    .await
}

/// Adds deliveries to the webhook queue.
pub struct BullmqDeliveries {
    queue: Queue,
    attempts: u32,
    first_delay: Duration,
}

impl BullmqDeliveries {
    pub async fn open(
        queue: &QueueConfig,
        redis: &RedisConfig,
        webhooks: &WebhookConfig,
    ) -> Result<Self, bullmq::Error> {
        Ok(Self {
            queue: open(&webhook_queue_config(queue, webhooks), redis).await?,
            attempts: u32::try_from(webhooks.schedule.len()).unwrap_or(u32::MAX).max(1),
            first_delay: webhooks.schedule.first().copied().unwrap_or_default(),
        })
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for BullmqDeliveries {
    async fn enqueue(&self, deliveries: &[DeliveryJob]) -> Result<(), String> {
        for delivery in deliveries {
            let mut options = JobOptions::new()
                .attempts(self.attempts)
                .remove_on_complete(RemoveOnFinish::Options(KeepJobs {
                    age: Some(KEEP_DELIVERED.as_secs()),
                    count: None,
                    limit: None,
                }))
                .remove_on_fail(RemoveOnFinish::Bool(false));
            if !self.first_delay.is_zero() {
                options = options.delay(self.first_delay);
            }
            self.queue
                .add(DELIVERY_JOB_NAME, delivery)
                .options(options)
                .job_id(delivery.job_id())
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

/// Reads whether a render job is finished: its hash has `finishedOn`, or is gone (removed on
/// completion).
pub struct RenderJobStates {
    connection: bullmq::redis_connection::AnyConnection,
    key_prefix: String,
}

impl RenderJobStates {
    pub async fn open(queue: &QueueConfig, redis: &RedisConfig) -> Result<Self, bullmq::Error> {
        Ok(Self {
            connection: super::connection::redis_connection(redis).await?,
            key_prefix: format!("{}:{}:", queue.prefix, queue.name),
        })
    }
}

const IS_FINISHED: &str = r#"
if redis.call("EXISTS", KEYS[1]) == 0 then return 1 end
return redis.call("HEXISTS", KEYS[1], "finishedOn")
"#;

#[async_trait::async_trait]
impl RenderJobs for RenderJobStates {
    async fn is_finished(&self, job_id: &str) -> Result<bool, String> {
        let mut connection = self.connection.clone();
        let finished: i64 = redis::Script::new(IS_FINISHED)
            .key(format!("{}{job_id}", self.key_prefix))
            .invoke_async(&mut connection)
            .await
            .map_err(|error| error.to_string())?;
        Ok(finished == 1)
    }
}

/// One exhausted (or stopped) delivery in the dead-letter list.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedDelivery {
    pub job_id: String,
    pub event_id: String,
    pub event: String,
    pub tenant_id: String,
    /// The endpoint's host (the full URL may carry a token).
    pub endpoint_host: String,
    pub attempts: u32,
    pub reason: String,
    pub failed_at_ms: Option<u64>,
}

/// The webhook queue's `failed` set, newest first, at most `limit` entries.
pub async fn list_failed(
    queue: &QueueConfig,
    redis: &RedisConfig,
    webhooks: &WebhookConfig,
    limit: usize,
) -> Result<Vec<FailedDelivery>, bullmq::Error> {
    let handle = open(&webhook_queue_config(queue, webhooks), redis).await?;
    let end = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
    let jobs = handle.get_failed(0, end).await;
    handle.close().await;
    Ok(jobs?
        .iter()
        .map(|job| {
            let delivery: Option<DeliveryJob> = serde_json::from_value(job.data().clone()).ok();
            FailedDelivery {
                job_id: job.id().to_owned(),
                event_id: delivery.as_ref().map(|d| d.event_id.clone()).unwrap_or_default(),
                event: delivery.as_ref().map(|d| d.event.clone()).unwrap_or_default(),
                tenant_id: delivery.as_ref().map(|d| d.tenant_id.clone()).unwrap_or_default(),
                endpoint_host: delivery
                    .as_ref()
                    .and_then(|d| d.endpoint.host_str().map(str::to_owned))
                    .unwrap_or_default(),
                attempts: job.attempts_made(),
                reason: job.failed_reason().to_owned(),
                failed_at_ms: job.finished_on(),
            }
        })
        .collect())
}

/// Moves failed deliveries back to `wait` with their attempts reset: those of `event_id`, or all
/// of them. Returns the job ids replayed.
pub async fn replay(
    queue: &QueueConfig,
    redis: &RedisConfig,
    webhooks: &WebhookConfig,
    event_id: Option<&str>,
) -> Result<Vec<String>, bullmq::Error> {
    let handle = open(&webhook_queue_config(queue, webhooks), redis).await?;
    let result = async {
        let mut replayed = Vec::new();
        let mut start = 0;
        const PAGE: i64 = 500;
        loop {
            let page = handle.get_failed(start, start + PAGE - 1).await?;
            if page.is_empty() {
                break;
            }
            let mut moved = 0;
            for mut job in page {
                let matches = event_id.is_none_or(|wanted| {
                    serde_json::from_value::<DeliveryJob>(job.data().clone())
                        .is_ok_and(|delivery| delivery.event_id == wanted)
                });
                if matches {
                    job.retry(
                        "failed",
                        Some(bullmq::RetryOptions {
                            reset_attempts_made: true,
                            reset_attempts_started: true,
                        }),
                    )
                    .await?;
                    replayed.push(job.id().to_owned());
                    moved += 1;
                }
            }
            // Replayed jobs left the set, so the next page starts that much earlier.
            start += PAGE - moved;
        }
        Ok(replayed)
    }
    .await;
    handle.close().await;
    result
}
