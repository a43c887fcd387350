//! The dashboard's view of the queues ([`Operations`]): BullMQ's counts, metrics and failed
//! set read through the crate, retries through its scripts, tenant slots from the lease sets,
//! and the workers' heartbeats in one hash (`<prefix>:<queue>:workers-heartbeat`, worker name →
//! JSON), which each worker rewrites every few seconds and prunes of workers silent for an hour.
//! Every read is bounded: a page of jobs, the newest 1000 failed, the 100 most saturated tenants.

use std::collections::BTreeMap;

use bullmq::Queue;
use redis::AsyncCommands;

use super::webhooks::{open, webhook_queue_config};
use crate::config::{QueueConfig, RedisConfig};
use crate::dashboard::{
    FailedJob, FailedPage, Heartbeat, JobInputs, Operations, QueueSummary, TenantSlots, reason_code,
};

/// Heartbeats older than this are dropped from the hash.
const FORGET_AFTER_MS: u64 = 3600 * 1000;

/// BullMQ's job states, in the order the dashboard shows them.
const STATES: [&str; 7] = [
    "waiting",
    "active",
    "delayed",
    "prioritized",
    "completed",
    "failed",
    "paused",
];

pub struct QueueOperations {
    render: Queue,
    webhooks: Option<Queue>,
    connection: bullmq::redis_connection::AnyConnection,
    lease_prefix: String,
    saturation_key: String,
    heartbeat_key: String,
}

impl QueueOperations {
    /// Opens the render queue and, when webhooks are enabled, the delivery queue.
    pub async fn open(queue: &QueueConfig, redis: &RedisConfig) -> Result<Self, bullmq::Error> {
        let webhooks = match &queue.webhook {
            Some(webhooks) => Some(open(&webhook_queue_config(queue, webhooks), redis).await?),
            None => None,
        };
        Ok(Self {
            render: open(queue, redis).await?,
            webhooks,
            connection: super::redis_connection(redis).await?,
            lease_prefix: crate::tenancy::lease_key_prefix(&queue.prefix, &queue.name),
            saturation_key: crate::tenancy::saturation_key(&queue.prefix, &queue.name),
            heartbeat_key: format!("{}:{}:workers-heartbeat", queue.prefix, queue.name),
        })
    }
}

fn message(error: impl std::fmt::Display) -> String {
    error.to_string()
}

async fn summary(queue: &Queue) -> Result<QueueSummary, String> {
    let counts = queue.get_job_counts().await.map_err(message)?;
    let now_minute = now_ms() / 60_000;
    let per_minute = |metric: &'static str| async move {
        let metrics = queue.get_metrics(metric, 0, 59).await.map_err(message)?;
        Ok::<_, String>(last_hour(&metrics, now_minute))
    };
    let (completed, failed) = tokio::join!(per_minute("completed"), per_minute("failed"));
    let count = |state: &str| match state {
        "waiting" => counts.waiting,
        "active" => counts.active,
        "delayed" => counts.delayed,
        "prioritized" => counts.prioritized,
        "completed" => counts.completed,
        "failed" => counts.failed,
        _ => counts.paused,
    };
    Ok(QueueSummary {
        name: queue.name().to_owned(),
        counts: STATES.iter().map(|state| (*state, count(state))).collect(),
        completed_per_minute: completed?,
        failed_per_minute: failed?,
    })
}

/// Jobs per minute for the 60 minutes ending with `now_minute`, oldest first, from BullMQ's
/// metrics: `data` holds one point per finished minute before the minute of `prevTS`, newest
/// first, and the jobs counted since `prevTS` (`count - prevCount`) belong to that minute.
fn last_hour(metrics: &bullmq::types::Metrics, now_minute: u64) -> Vec<u64> {
    let meta = &metrics.meta;
    if meta.prev_ts == 0 {
        return vec![0; 60];
    }
    let pending_minute = meta.prev_ts / 60_000;
    let pending = meta.count.saturating_sub(meta.prev_count);
    (0..60u64)
        .rev()
        .map(|ago| now_minute.saturating_sub(ago))
        .map(|minute| match minute.cmp(&pending_minute) {
            std::cmp::Ordering::Equal => pending,
            std::cmp::Ordering::Greater => 0,
            std::cmp::Ordering::Less => usize::try_from(pending_minute - minute - 1)
                .ok()
                .and_then(|index| metrics.data.get(index))
                .copied()
                .unwrap_or(0),
        })
        .collect()
}

fn failed_job(job: &bullmq::Job) -> FailedJob {
    let field = |name: &str| {
        job.data()
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("–")
            .to_owned()
    };
    FailedJob {
        id: job.id().to_owned(),
        design_id: field("designId"),
        tenant_id: field("tenantId"),
        reason: job.failed_reason().to_owned(),
        code: reason_code(job.failed_reason()).to_owned(),
        attempts: job.attempts_made(),
        failed_at_ms: job.finished_on(),
    }
}

fn reset() -> Option<bullmq::RetryOptions> {
    Some(bullmq::RetryOptions {
        reset_attempts_made: true,
        reset_attempts_started: true,
    })
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[async_trait::async_trait]
impl Operations for QueueOperations {
    async fn queues(&self) -> Result<Vec<QueueSummary>, String> {
        let mut queues = vec![summary(&self.render).await?];
        if let Some(webhooks) = &self.webhooks {
            queues.push(summary(webhooks).await?);
        }
        Ok(queues)
    }

    async fn failed(&self, offset: usize, limit: usize) -> Result<FailedPage, String> {
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let end = start
            .saturating_add(i64::try_from(limit).unwrap_or(i64::MAX))
            .saturating_sub(1);
        let (jobs, total) = tokio::join!(self.render.get_failed(start, end), self.render.get_failed_count());
        Ok(FailedPage {
            jobs: jobs.map_err(message)?.iter().map(failed_job).collect(),
            total: total.map_err(message)?,
        })
    }

    async fn failures_by_code(&self, newest: usize) -> Result<Vec<(String, u64)>, String> {
        let end = i64::try_from(newest).unwrap_or(i64::MAX).saturating_sub(1);
        let jobs = self.render.get_failed(0, end).await.map_err(message)?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for job in &jobs {
            *counts.entry(reason_code(job.failed_reason()).to_owned()).or_default() += 1;
        }
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }

    async fn retry(&self, job_id: &str) -> Result<bool, String> {
        let Some(mut job) = self.render.get_job(job_id).await.map_err(message)? else {
            return Ok(false);
        };
        if job.failed_reason().is_empty() || job.finished_on().is_none() {
            return Ok(false);
        }
        job.retry("failed", reset()).await.map_err(message)?;
        Ok(true)
    }

    async fn retry_code(&self, code: &str, newest: usize) -> Result<usize, String> {
        let end = i64::try_from(newest).unwrap_or(i64::MAX).saturating_sub(1);
        let jobs = self.render.get_failed(0, end).await.map_err(message)?;
        let mut retried = 0;
        for mut job in jobs.into_iter().filter(|job| reason_code(job.failed_reason()) == code) {
            job.retry("failed", reset()).await.map_err(message)?;
            retried += 1;
        }
        Ok(retried)
    }

    async fn job_inputs(&self, job_id: &str) -> Result<Option<JobInputs>, String> {
        let job = self.render.get_job(job_id).await.map_err(message)?;
        Ok(job.and_then(|job| {
            let base = job.data().get("baseTextureUrl")?.as_str()?.to_owned();
            Some(JobInputs { base_texture_url: base })
        }))
    }

    async fn tenant_slots(&self, tenants: &[String]) -> Result<Vec<TenantSlots>, String> {
        let mut connection = self.connection.clone();
        // The 100 most often saturated tenants join the ones asked for.
        let top: Vec<(String, f64)> = connection
            .zrevrange_withscores(&self.saturation_key, 0, 99)
            .await
            .map_err(message)?;
        let mut names: Vec<&str> = tenants.iter().map(String::as_str).collect();
        for (name, _) in &top {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("ZCOUNT")
                .arg(format!("{}{name}", self.lease_prefix))
                .arg(now)
                .arg("+inf");
            pipe.cmd("ZSCORE").arg(&self.saturation_key).arg(*name);
        }
        let answers: Vec<(u64, Option<f64>)> = pipe.query_async(&mut connection).await.map_err(message)?;
        Ok(names
            .iter()
            .zip(answers)
            .map(|(name, (active, saturated))| TenantSlots {
                tenant_id: (*name).to_owned(),
                active,
                saturated: saturated.map_or(0, |count| count as u64),
            })
            .collect())
    }

    async fn workers(&self) -> Result<Vec<Heartbeat>, String> {
        let mut connection = self.connection.clone();
        let entries: BTreeMap<String, String> = connection.hgetall(&self.heartbeat_key).await.map_err(message)?;
        let mut workers: Vec<Heartbeat> = entries
            .values()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        workers.sort_by(|a, b| b.last_seen_ms.cmp(&a.last_seen_ms).then_with(|| a.name.cmp(&b.name)));
        Ok(workers)
    }

    async fn beat(&self, heartbeat: &Heartbeat) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let json = serde_json::to_string(heartbeat).map_err(message)?;
        let entries: BTreeMap<String, String> = connection.hgetall(&self.heartbeat_key).await.map_err(message)?;
        let forgotten: Vec<&String> = entries
            .iter()
            .filter(|(_, json)| {
                serde_json::from_str::<Heartbeat>(json).map_or(true, |beat| {
                    heartbeat.last_seen_ms.saturating_sub(beat.last_seen_ms) > FORGET_AFTER_MS
                })
            })
            .map(|(name, _)| name)
            .collect();
        let mut pipe = redis::pipe();
        pipe.hset(&self.heartbeat_key, &heartbeat.name, json).ignore();
        if !forgotten.is_empty() {
            pipe.hdel(&self.heartbeat_key, forgotten).ignore();
        }
        pipe.query_async::<()>(&mut connection).await.map_err(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(count: u64, prev_ts: u64, prev_count: u64, data: Vec<u64>) -> bullmq::types::Metrics {
        bullmq::types::Metrics {
            meta: bullmq::types::MetricsMeta {
                count,
                prev_ts,
                prev_count,
            },
            count: data.len() as u64,
            data,
        }
    }

    #[test]
    fn the_last_hour_places_flushed_and_pending_minutes() {
        let now = 1_000_000;
        // Jobs since the minute two minutes ago: 4; the minutes before it: 7 then 5.
        let hour = last_hour(&metrics(20, (now - 2) * 60_000 + 5, 16, vec![7, 5]), now);
        assert_eq!(hour.len(), 60);
        assert_eq!(&hour[54..], &[0, 5, 7, 4, 0, 0]);
        assert_eq!(hour.iter().sum::<u64>(), 16);
        assert_eq!(last_hour(&metrics(0, 0, 0, vec![]), now), vec![0; 60]);
        // Metrics older than the hour show nothing.
        assert!(
            last_hour(&metrics(3, (now - 90) * 60_000, 0, vec![]), now)
                .iter()
                .all(|n| *n == 0)
        );
    }
}
