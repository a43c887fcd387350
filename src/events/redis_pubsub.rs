//! Redis PUBLISH adapter: the event name is the channel, the JSON payload the message.

use super::{BatchEvent, EventSink, EventSinkError, RenderEvent};

/// Publishes over any Redis connection: in the worker, the queue crate's connection, which is a
/// single server or a cluster (PUBLISH then reaches subscribers on every node).
pub struct RedisPublisher<C> {
    connection: C,
}

impl<C> RedisPublisher<C> {
    pub fn new(connection: C) -> Self {
        Self { connection }
    }
}

impl<C> RedisPublisher<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn send(&self, channel: &str, payload: String) -> Result<(), EventSinkError> {
        let mut connection = self.connection.clone();
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut connection)
            .await
            .map_err(|error| EventSinkError::Unavailable {
                sink: "redis",
                message: error.to_string(),
            })?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<C> EventSink for RedisPublisher<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError> {
        self.send(event.event, serde_json::to_string(event)?).await
    }

    async fn publish_batch(&self, event: &BatchEvent) -> Result<(), EventSinkError> {
        self.send(event.event, serde_json::to_string(event)?).await
    }
}
