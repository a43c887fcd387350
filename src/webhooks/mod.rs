//! Webhooks that are never lost: each final render event becomes one delivery job per endpoint
//! on a BullMQ queue of its own, processed by the webhook workers inside `design-render worker`.
//!
//! - [`WebhookOutbox`] is the [`EventSink`]: it enqueues the deliveries (through the
//!   [`DeliveryQueue`] port) before the render job is marked finished, under job ids derived
//!   from the event id and the endpoint, so a crash in between enqueues nothing twice. The
//!   render job never waits for a receiver.
//! - [`deliver::WebhookDeliverer`] is the [`JobHandler`](crate::worker::JobHandler) of the
//!   delivery queue: one signed POST per attempt, on the configured schedule.
//! - [`endpoints`] says where a tenant's events go and refuses private addresses.
//!
//! Signing follows Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64>`), next to the `X-Design-Render-*` headers of earlier
//! versions.

pub mod deliver;
pub mod endpoints;

use std::sync::Arc;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::events::{EventSink, EventSinkError, RenderEvent};
pub use endpoints::{Endpoint, Endpoints};

/// The job name of a delivery on the webhook queue.
pub const DELIVERY_JOB_NAME: &str = "deliver";

/// What one delivery job carries: the event exactly as it will be sent, and where to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJob {
    /// The event's stable id: the `webhook-id` of every attempt.
    pub event_id: String,
    /// `design.render.completed` or `design.render.failed`.
    pub event: String,
    pub tenant_id: String,
    /// The render job the event is about; the first attempt waits until BullMQ shows it
    /// finished.
    pub render_job_id: String,
    pub endpoint: url::Url,
    /// The event JSON, signed and sent byte for byte.
    pub body: String,
    /// The W3C context of the span that published the event, sent as the `traceparent` header
    /// (the delivery runs later, outside the render's trace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl DeliveryJob {
    /// The delivery's job id: the event id and the endpoint's id, so the same event enqueued
    /// twice for one endpoint is one job (BullMQ ignores an add with an existing id).
    pub fn job_id(&self) -> String {
        format!("{}-{}", self.event_id, Endpoint::id_of(&self.endpoint))
    }
}

/// Where deliveries are enqueued: the webhook queue.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Adds the deliveries (ids from [`DeliveryJob::job_id`]); existing ids are left alone.
    async fn enqueue(&self, deliveries: &[DeliveryJob]) -> Result<(), String>;
}

/// The event sink of durable webhooks: one delivery job per endpoint of the event's tenant.
pub struct WebhookOutbox {
    endpoints: Arc<Endpoints>,
    queue: Arc<dyn DeliveryQueue>,
}

impl WebhookOutbox {
    pub fn new(endpoints: Arc<Endpoints>, queue: Arc<dyn DeliveryQueue>) -> Self {
        Self { endpoints, queue }
    }
}

/// How often the outbox tries to enqueue before it gives up on an event (Redis blips).
const ENQUEUE_TRIES: u32 = 3;

#[async_trait::async_trait]
impl EventSink for WebhookOutbox {
    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError> {
        let Some(endpoint) = self.endpoints.for_tenant(&event.tenant_id) else {
            return Ok(());
        };
        let body = serde_json::to_string(event)?;
        let deliveries = [DeliveryJob {
            event_id: event.id.clone(),
            event: event.event.to_owned(),
            tenant_id: event.tenant_id.clone(),
            render_job_id: event.job_id.clone(),
            endpoint: endpoint.url.clone(),
            body,
            traceparent: event.traceparent.clone(),
        }];
        let mut tries = 0;
        loop {
            tries += 1;
            match self.queue.enqueue(&deliveries).await {
                Ok(()) => return Ok(()),
                Err(message) if tries >= ENQUEUE_TRIES => {
                    return Err(EventSinkError::Unavailable {
                        sink: "webhook queue",
                        message,
                    });
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await,
            }
        }
    }
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` for each key,
/// separated by spaces.
pub fn standard_signature(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            let mut mac = hmac_sha256(key);
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `X-Design-Render-Signature` of earlier versions: `sha256=<hex HMAC-SHA256(secret,
/// "<timestamp>.<body>")>`, keyed with the secret's text as configured.
pub fn legacy_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac_sha256(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn hmac_sha256(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    match <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs_as_published() {
        let key =
            crate::config::signing_key(&crate::config::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let signature = standard_signature(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_key_signs_during_a_rotation() {
        let signature = standard_signature(&[b"old".to_vec(), b"new".to_vec()], "evt_1", 1, b"{}");
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|part| part.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn the_delivery_id_is_the_event_and_endpoint_and_has_no_colon() {
        let job = DeliveryJob {
            event_id: "evt_0123".into(),
            event: "design.render.completed".into(),
            tenant_id: "t".into(),
            render_job_id: "7".into(),
            endpoint: url::Url::parse("https://hooks.example/a").unwrap(),
            body: "{}".into(),
            traceparent: None,
        };
        let other = DeliveryJob {
            endpoint: url::Url::parse("https://hooks.example/b").unwrap(),
            ..job.clone()
        };
        assert!(job.job_id().starts_with("evt_0123-"));
        assert_ne!(job.job_id(), other.job_id());
        assert_eq!(job.job_id(), job.clone().job_id());
        assert!(!job.job_id().contains(':'), "BullMQ refuses custom ids with a colon");
    }
}
