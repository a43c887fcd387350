//! Redis PUBLISH adapter: the event name is the channel, the JSON payload the message.

use super::{EventSink, EventSinkError, RenderEvent};

pub struct RedisPublisher {
    connection: redis::aio::ConnectionManager,
}

impl RedisPublisher {
    pub fn new(connection: redis::aio::ConnectionManager) -> Self {
        Self { connection }
    }
}

#[async_trait::async_trait]
impl EventSink for RedisPublisher {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, event: &RenderEvent) -> Result<(), EventSinkError> {
        let payload = serde_json::to_string(event)?;
        let mut connection = self.connection.clone();
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(event.event)
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
