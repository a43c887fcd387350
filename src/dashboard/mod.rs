//! The operations dashboard at `/dashboard` of the admin server: what the queues hold, the
//! latest renders as pictures, failed jobs with retry, tenants' slots and cost, and the live
//! workers with their breakers.
//!
//! [`Operations`] is the port to the queue side (counts, failed jobs, retries, tenant slots,
//! worker heartbeats), implemented over BullMQ's keys in `crate::queue::operations`; the
//! Design rows come through the [`DesignStore`]. [`auth`] decides who may look, [`views`]
//! writes the HTML (server-rendered, no script, nothing loaded from elsewhere) and [`images`]
//! makes the thumbnails.

pub mod auth;
pub mod images;
mod routes;
pub mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use routes::router;

use crate::store::DesignStore;
use crate::tenancy::TenantLimits;

/// How many of the newest failed jobs the per-code counts and "retry all of a code" look at.
pub const FAILED_SCAN: usize = 1000;

/// How often a worker writes its heartbeat; one missing for three intervals shows as gone.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// One queue's counts and its last hour.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSummary {
    pub name: String,
    /// Jobs per state, in BullMQ's state names.
    pub counts: Vec<(&'static str, u64)>,
    /// Jobs finished per minute over the last hour, oldest first (BullMQ's metrics; empty when
    /// no worker records them).
    pub completed_per_minute: Vec<u64>,
    pub failed_per_minute: Vec<u64>,
}

impl QueueSummary {
    pub fn count(&self, state: &str) -> u64 {
        self.counts
            .iter()
            .find(|(name, _)| *name == state)
            .map_or(0, |(_, count)| *count)
    }
}

/// A job in the render queue's failed set.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedJob {
    pub id: String,
    pub design_id: String,
    pub tenant_id: String,
    pub reason: String,
    /// The error code at the end of the reason (`… [code]`), `unknown` when there is none.
    pub code: String,
    pub attempts: u32,
    pub failed_at_ms: Option<u64>,
}

/// A page of failed jobs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedPage {
    pub jobs: Vec<FailedJob>,
    pub total: u64,
}

/// The inputs of a render job, for the base thumbnail.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInputs {
    pub base_texture_url: String,
}

/// One tenant's slots right now.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSlots {
    pub tenant_id: String,
    /// Leases held (not expired).
    pub active: u64,
    /// Times a job of this tenant was delayed because its slots were full.
    pub saturated: u64,
}

/// What a worker reports about itself every [`HEARTBEAT_INTERVAL`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// `host:pid`, as in traces.
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub concurrency: usize,
    pub in_flight: u64,
    /// Breaker state per provider: `closed`, `half_open` or `open`.
    pub breakers: BTreeMap<String, String>,
    pub last_seen_ms: u64,
}

/// The queue side of the dashboard. Errors are messages for the page.
#[async_trait::async_trait]
pub trait Operations: Send + Sync {
    /// The render queue, then the webhook queue when there is one.
    async fn queues(&self) -> Result<Vec<QueueSummary>, String>;
    /// Failed render jobs, newest first.
    async fn failed(&self, offset: usize, limit: usize) -> Result<FailedPage, String>;
    /// Failed jobs per error code among the newest `newest`, most frequent first.
    async fn failures_by_code(&self, newest: usize) -> Result<Vec<(String, u64)>, String>;
    /// Moves one failed job back to wait with its attempts reset; `false` when it is not failed.
    async fn retry(&self, job_id: &str) -> Result<bool, String>;
    /// Retries every failed job with `code` among the newest `newest`; returns how many.
    async fn retry_code(&self, code: &str, newest: usize) -> Result<usize, String>;
    /// The base texture URL of a render job still in Redis.
    async fn job_inputs(&self, job_id: &str) -> Result<Option<JobInputs>, String>;
    /// The slot counts of these tenants and of the most recently saturated ones.
    async fn tenant_slots(&self, tenants: &[String]) -> Result<Vec<TenantSlots>, String>;
    /// Every worker that wrote a heartbeat in the last hour.
    async fn workers(&self) -> Result<Vec<Heartbeat>, String>;
    /// Writes this worker's heartbeat.
    async fn beat(&self, heartbeat: &Heartbeat) -> Result<(), String>;
}

/// Everything the dashboard's routes read.
pub struct Dashboard {
    pub access: auth::Access,
    pub read_only: bool,
    pub page_size: usize,
    pub operations: Arc<dyn Operations>,
    pub designs: Arc<dyn DesignStore>,
    pub images: images::Thumbnails,
    pub tenant_limits: TenantLimits,
}

/// The code at the end of a failure reason (`message [code]`).
pub fn reason_code(reason: &str) -> &str {
    reason
        .trim_end()
        .strip_suffix(']')
        .and_then(|rest| rest.rsplit_once('['))
        .map(|(_, code)| code)
        .filter(|code| !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .unwrap_or("unknown")
}

/// The value at `quantile` (0..=1) of `values` sorted ascending, nearest rank.
pub fn quantile(sorted: &[f64], quantile: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Writes this worker's [`Heartbeat`] every [`HEARTBEAT_INTERVAL`] until stopped.
pub struct HeartbeatWriter {
    pub operations: Arc<dyn Operations>,
    pub editor: Arc<dyn crate::providers::ImageEditor>,
    pub in_flight: Arc<std::sync::atomic::AtomicU64>,
    /// `host:pid`.
    pub name: String,
    pub concurrency: usize,
}

impl HeartbeatWriter {
    /// What this worker looks like now.
    pub fn heartbeat(&self) -> Heartbeat {
        let (host, pid) = self.name.rsplit_once(':').unwrap_or((&self.name, ""));
        Heartbeat {
            name: self.name.clone(),
            host: host.to_owned(),
            pid: pid.parse().unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            concurrency: self.concurrency,
            in_flight: self.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            breakers: self
                .editor
                .breaker_states()
                .into_iter()
                .map(|(provider, state)| (provider.to_owned(), state.as_str().to_owned()))
                .collect(),
            last_seen_ms: u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0),
        }
    }

    /// Beats until `stop` resolves. A failed write is logged once per outage.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beats = async {
            let mut failing = false;
            loop {
                tick.tick().await;
                match self.operations.beat(&self.heartbeat()).await {
                    Ok(()) => failing = false,
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!("The worker heartbeat could not be written: {error}");
                    }
                    Err(_) => {}
                }
            }
        };
        tokio::select! {
            () = beats => {}
            () = stop => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_read_from_the_end_of_a_reason() {
        assert_eq!(
            reason_code("design `d-1` was not found [design_not_found]"),
            "design_not_found"
        );
        assert_eq!(reason_code("boom"), "unknown");
        assert_eq!(reason_code("odd [Not A Code]"), "unknown");
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile(&values, 0.5), Some(3.0));
        assert_eq!(quantile(&values, 0.95), Some(10.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
