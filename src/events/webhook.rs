//! Webhook adapter: POSTs the event JSON to `WEBHOOK_URL`, signed with HMAC-SHA256 over
//! `<timestamp>.<body>` using `WEBHOOK_SECRET`.
//!
//! Headers: `X-Design-Render-Event` (event name), `X-Design-Render-Timestamp` (unix seconds) and
//! `X-Design-Render-Signature: sha256=<hex>`. A receiver recomputes the MAC over the timestamp, a
//! dot and the raw body, compares in constant time and rejects stale timestamps (replay).

use std::time::Duration;

use hmac::{KeyInit, Mac};

use super::{EventSink, EventSinkError, RenderEvent};
use crate::config::Secret;
use crate::http::Traced;

const SIGNATURE_HEADER: &str = "x-design-render-signature";
const TIMESTAMP_HEADER: &str = "x-design-render-timestamp";
const EVENT_HEADER: &str = "x-design-render-event";

pub struct WebhookSink {
    client: reqwest::Client,
    url: url::Url,
    secret: Secret,
}

impl WebhookSink {
    pub fn new(url: url::Url, secret: Secret) -> Result<Self, EventSinkError> {
        let client = crate::http::client_builder(Duration::from_secs(5), Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| EventSinkError::Unavailable {
                sink: "webhook",
                message: error.to_string(),
            })?;
        Ok(Self { client, url, secret })
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait::async_trait]
impl EventSink for WebhookSink {
    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError> {
        let body = serde_json::to_vec(event)?;
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, event.event)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                signature(self.secret.expose().as_bytes(), timestamp, &body),
            )
            .body(body)
            .traced()
            .send()
            .await
            .map_err(|error| EventSinkError::Unavailable {
                sink: "webhook",
                message: error.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(EventSinkError::Rejected {
                sink: "webhook",
                status: response.status().as_u16(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventError, EventSubject};
    use wiremock::matchers::{header, header_exists, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn event() -> RenderEvent {
        RenderEvent::failed(
            EventSubject {
                job_id: "1".into(),
                design_id: "d".into(),
                tenant_id: "t".into(),
                user_id: None,
                attempts_made: 1,
            },
            EventError {
                code: crate::error_code::ErrorCode::InvalidPayload,
                message: "bad".into(),
                permanent: true,
            },
        )
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Expected value computed independently with Python's hmac module.
        let a = signature(b"key", 1, b"{}");
        assert_eq!(
            a,
            "sha256=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        assert_ne!(a, signature(b"key", 2, b"{}"));
        assert_ne!(a, signature(b"other", 1, b"{}"));
        assert_ne!(a, signature(b"key", 1, b"{ }"));
    }

    #[tokio::test]
    async fn posts_a_signed_event_that_the_receiver_can_verify() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/hooks/render"))
            .and(header(EVENT_HEADER, "design.render.failed"))
            .and(header_exists(SIGNATURE_HEADER))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let url = url::Url::parse(&format!("{}/hooks/render", server.uri())).unwrap();
        let sink = WebhookSink::new(url, Secret::new("s3cret")).unwrap();
        sink.publish(&event()).await.unwrap();
        let requests = server.received_requests().await.unwrap();
        let request = &requests[0];
        let timestamp: i64 = request.headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
        let sent = request.headers[SIGNATURE_HEADER].to_str().unwrap();
        assert_eq!(sent, signature(b"s3cret", timestamp, &request.body));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["designId"], "d");
    }

    #[tokio::test]
    async fn the_webhook_request_has_a_stable_wire_format() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let sink = WebhookSink::new(url::Url::parse(&server.uri()).unwrap(), Secret::new("k")).unwrap();
        sink.publish(&event()).await.unwrap();
        let requests = server.received_requests().await.unwrap();
        let request = &requests[0];
        // Headers that vary per request (timestamp, signature) or per client are shown by name.
        let mut headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| match name.as_str() {
                TIMESTAMP_HEADER | SIGNATURE_HEADER | "host" | "content-length" => format!("{name}: <varies>"),
                _ => format!("{name}: {}", value.to_str().unwrap_or("<binary>")),
            })
            .collect();
        headers.sort();
        let mut body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        body["timestamp"] = "<timestamp>".into();
        insta::assert_snapshot!(format!(
            "{} {}\n{}\n\n{}",
            request.method,
            request.url.path(),
            headers.join("\n"),
            serde_json::to_string_pretty(&body).unwrap()
        ));
    }

    #[tokio::test]
    async fn a_refusing_receiver_is_an_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        let sink = WebhookSink::new(url::Url::parse(&server.uri()).unwrap(), Secret::new("k")).unwrap();
        let error = sink.publish(&event()).await.unwrap_err();
        assert!(matches!(error, EventSinkError::Rejected { status: 500, .. }), "{error}");
    }
}
