//! Render events: the versioned payload announced when a design completes or fails for good, and
//! the [`EventSink`] port that delivers it.
//!
//! Adapters: [`redis_pubsub::RedisPublisher`] (Redis PUBLISH on `design.render.completed` /
//! `design.render.failed`), the outbox of the `webhooks` module (which enqueues durable,
//! signed deliveries) and [`Fanout`] (several sinks at once). A failed publish is logged and
//! never fails the job: the Design row is the source of truth.

pub mod redis_pubsub;

use std::sync::Arc;

use crate::error_code::ErrorCode;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

/// Channel of the completed event.
pub const COMPLETED: &str = "design.render.completed";
/// Channel of the failed event.
pub const FAILED: &str = "design.render.failed";
/// Channel of the event a batch enqueued as a flow announces once all its renders finished.
pub const BATCH_COMPLETED: &str = "design.render.batch.completed";

/// The event payload (camelCase JSON, `version` 1). URLs are present on completion, `error` on
/// failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderEvent {
    /// A stable id: the same for the same job's same event however often it is announced (a
    /// recovered job, a replay), different for every other event. Webhook receivers
    /// de-duplicate on it (`webhook-id`).
    pub id: String,
    pub event: &'static str,
    pub version: u32,
    pub job_id: String,
    pub design_id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    /// Attempts made including this one.
    pub attempts_made: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composite_texture_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_res_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal_map_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roughness_map_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    pub cost_tokens: i32,
    pub cost_cents: i32,
    /// RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    /// The W3C `traceparent` of the span that published the event, when traces are exported,
    /// so a subscriber can link its own work to the render's trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `design.render.batch.completed`: every render of a batch (`enqueue --batch --as-flow`) has
/// finished, completed or failed for good (version 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEvent {
    /// Stable as [`RenderEvent::id`]: from the batch job's id, when it was added and the name.
    pub id: String,
    pub event: &'static str,
    pub version: u32,
    /// The batch's parent job.
    pub job_id: String,
    /// Renders in the batch.
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
    /// The sum over the batch's designs of their rows' `costTokens` and `costCents`.
    pub cost_tokens: i64,
    pub cost_cents: i64,
    /// Each render that failed for good.
    pub failures: Vec<BatchFailure>,
    pub timestamp: String,
}

/// One failed render of a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchFailure {
    pub job_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub design_id: Option<String>,
    /// BullMQ's `failedReason` of the render job (`"<message> [<code>]"`).
    pub reason: String,
}

impl BatchEvent {
    /// The event of the batch job `job_id` (added at `enqueued_at_ms`), with its counts filled
    /// in by the caller.
    pub fn completed(job_id: &str, enqueued_at_ms: u64) -> Self {
        let subject = EventSubject {
            job_id: job_id.to_owned(),
            design_id: String::new(),
            tenant_id: String::new(),
            user_id: None,
            attempts_made: 0,
            enqueued_at_ms,
        };
        Self {
            id: event_id(&subject, BATCH_COMPLETED),
            event: BATCH_COMPLETED,
            version: 1,
            job_id: job_id.to_owned(),
            total: 0,
            completed: 0,
            failed: 0,
            cost_tokens: 0,
            cost_cents: 0,
            failures: Vec::new(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

/// The failure part of a `design.render.failed` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventError {
    /// A stable code (`invalid_payload`, `asset_refused`, `provider_unavailable`, …).
    pub code: ErrorCode,
    pub message: String,
    /// Whether the error was permanent (no attempt could succeed).
    pub permanent: bool,
}

/// Who the event is about; shared by both constructors.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSubject {
    pub job_id: String,
    pub design_id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub attempts_made: u32,
    /// When the job was added (epoch milliseconds), for the event id.
    pub enqueued_at_ms: u64,
}

impl RenderEvent {
    pub fn completed(subject: EventSubject, output: &crate::pipeline::RenderOutput) -> Self {
        Self {
            composite_texture_url: Some(output.composite_texture_url.clone()),
            preview_url: Some(output.preview_url.clone()),
            high_res_url: Some(output.high_res_url.clone()),
            normal_map_url: output.metadata.normal_map_url.clone(),
            roughness_map_url: output.metadata.roughness_map_url.clone(),
            error: None,
            cost_tokens: output.cost_tokens,
            cost_cents: output.cost_cents,
            ..Self::base(COMPLETED, subject)
        }
    }

    pub fn failed(subject: EventSubject, error: EventError) -> Self {
        Self {
            error: Some(error),
            ..Self::base(FAILED, subject)
        }
    }

    fn base(event: &'static str, subject: EventSubject) -> Self {
        Self {
            id: event_id(&subject, event),
            event,
            version: 1,
            job_id: subject.job_id,
            design_id: subject.design_id,
            tenant_id: subject.tenant_id,
            user_id: subject.user_id,
            attempts_made: subject.attempts_made,
            composite_texture_url: None,
            preview_url: None,
            high_res_url: None,
            normal_map_url: None,
            roughness_map_url: None,
            error: None,
            cost_tokens: 0,
            cost_cents: 0,
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            traceparent: None,
        }
    }
}

/// `evt_` and 32 hex digits of SHA-256 over the job id, when it was added and the event name.
fn event_id(subject: &EventSubject, event: &str) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(subject.job_id.as_bytes());
    hash.update([0]);
    hash.update(subject.enqueued_at_ms.to_be_bytes());
    hash.update(event.as_bytes());
    format!("evt_{}", hex::encode(&hash.finalize()[..16]))
}

#[derive(Debug, thiserror::Error)]
pub enum EventSinkError {
    #[error("event payload could not be serialised: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("{sink} unavailable: {message}")]
    Unavailable { sink: &'static str, message: String },
}

impl EventSinkError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Serialize(_) => ErrorCode::EventSerialize,
            Self::Unavailable { .. } => ErrorCode::EventSinkUnavailable,
        }
    }
}

/// Delivers render events.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError>;

    /// Delivers a batch's event. Sinks that carry only render events (the webhook outbox)
    /// ignore it.
    async fn publish_batch(&self, event: &BatchEvent) -> Result<(), EventSinkError> {
        let _ = event;
        Ok(())
    }
}

/// Sends each event to every sink; the first error is returned after all were tried.
pub struct Fanout {
    pub sinks: Vec<Arc<dyn EventSink>>,
}

#[async_trait::async_trait]
impl EventSink for Fanout {
    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError> {
        let results = futures_util::future::join_all(self.sinks.iter().map(|sink| sink.publish(event))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>().map(|_| ())
    }

    async fn publish_batch(&self, event: &BatchEvent) -> Result<(), EventSinkError> {
        let results = futures_util::future::join_all(self.sinks.iter().map(|sink| sink.publish_batch(event))).await;
        results.into_iter().collect::<Result<Vec<()>, _>>().map(|_| ())
    }
}

/// Keeps events in memory, in publishing order: the in-memory twin of the real sinks, for tests
/// and embedding.
#[derive(Default)]
pub struct MemorySink {
    pub events: std::sync::Mutex<Vec<RenderEvent>>,
    pub batches: std::sync::Mutex<Vec<BatchEvent>>,
}

impl MemorySink {
    /// Removes and returns every event published so far.
    pub fn take(&self) -> Vec<RenderEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// How many events were published and not yet taken.
    pub fn pending(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[async_trait::async_trait]
impl EventSink for MemorySink {
    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }

    async fn publish_batch(&self, event: &BatchEvent) -> Result<(), EventSinkError> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> EventSubject {
        EventSubject {
            job_id: "7".into(),
            design_id: "d1".into(),
            tenant_id: "t1".into(),
            user_id: Some("u1".into()),
            attempts_made: 3,
            enqueued_at_ms: 1_765_000_000_000,
        }
    }

    #[test]
    fn the_event_id_is_stable_for_one_jobs_event_and_differs_otherwise() {
        let completed = |subject: EventSubject| RenderEvent::base(COMPLETED, subject).id;
        let id = completed(subject());
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
        assert_eq!(id, completed(subject()), "a re-announced event keeps its id");
        assert_ne!(id, RenderEvent::base(FAILED, subject()).id);
        assert_ne!(
            id,
            completed(EventSubject {
                job_id: "8".into(),
                ..subject()
            })
        );
        assert_ne!(
            id,
            completed(EventSubject {
                enqueued_at_ms: 1_765_000_000_001,
                ..subject()
            }),
            "a job that reuses an id is another event"
        );
    }

    #[test]
    fn failed_event_payload_has_the_documented_fields() {
        let event = RenderEvent::failed(
            subject(),
            EventError {
                code: ErrorCode::AssetRefused,
                message: "`baseTextureUrl` refused".into(),
                permanent: true,
            },
        );
        let json = serde_json::to_value(&event).unwrap();
        for key in [
            "id",
            "event",
            "version",
            "jobId",
            "designId",
            "tenantId",
            "userId",
            "attemptsMade",
            "error",
            "costTokens",
            "costCents",
            "timestamp",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["event"], FAILED);
        assert_eq!(json["error"]["code"], "asset_refused");
        assert!(json.get("compositeTextureUrl").is_none());
    }

    #[tokio::test]
    async fn fanout_reaches_every_sink() {
        let first = Arc::new(MemorySink::default());
        let second = Arc::new(MemorySink::default());
        let fanout = Fanout {
            sinks: vec![first.clone(), second.clone()],
        };
        let event = RenderEvent::failed(
            subject(),
            EventError {
                code: ErrorCode::Internal,
                message: "y".into(),
                permanent: false,
            },
        );
        fanout.publish(&event).await.unwrap();
        assert_eq!(first.events.lock().unwrap().len(), 1);
        assert_eq!(second.events.lock().unwrap().len(), 1);
    }
}
