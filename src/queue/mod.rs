//! The adapter over the `bullmq-official` crate (lib `bullmq`), and the only code that names
//! it: [`connection`] builds connection options from our configuration, [`consumer`] turns
//! each BullMQ job into a [`Delivery`](crate::worker::Delivery) for a
//! [`JobHandler`](crate::worker::JobHandler) and carries its
//! [`JobOutcome`](crate::worker::JobOutcome) back into BullMQ's calls, [`producer`] adds
//! jobs for `design-render enqueue`, and [`webhooks`] is the webhook delivery queue (adding
//! deliveries, asking whether a render job finished, the dead-letter list and its replay).
//!
//! It never re-implements the BullMQ protocol: every state change goes through the crate's Lua
//! scripts, so Node.js producers and workers interoperate with ours.

pub mod connection;
pub mod consumer;
pub mod operations;
pub mod producer;
pub mod webhooks;

pub use connection::{connection_options, queue_metrics, redis_connection, redis_probe};
pub use consumer::serve;
pub use producer::{FlowIds, JOB_NAME, Submission, enqueue, enqueue_bulk, enqueue_flow};

use crate::error_code::ErrorCode;
use crate::job::PayloadError;
use crate::pipeline::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(#[from] bullmq::Error),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl QueueError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) => ErrorCode::QueueUnavailable,
            Self::Payload(_) => ErrorCode::InvalidPayload,
        }
    }

    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Unavailable(_) => Disposition::Retry,
            Self::Payload(_) => Disposition::Abort,
        }
    }
}
