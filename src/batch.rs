//! Batches enqueued as a BullMQ flow (`enqueue --batch --as-flow`): every render is a child of
//! one parent job, named [`BATCH_JOB_NAME`], that the queue runs once all of them finished.
//! The worker turns the children's outcomes, which the queue adapter reads for the parent, into
//! one `design.render.batch.completed` event with the counts and the batch's total cost.

use crate::events::{BatchEvent, BatchFailure};
use crate::job::DesignId;
use crate::store::DesignStore;

/// The parent job's name.
pub const BATCH_JOB_NAME: &str = "render-batch";

/// How the renders of a batch ended, as the queue recorded them for the parent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchChildren {
    /// The return value (`RenderOutput` JSON) of each render that completed.
    pub completed: Vec<serde_json::Value>,
    /// Each render that failed for good.
    pub failed: Vec<BatchFailure>,
}

/// The batch's event: counts from `children`, the total from the `total` member of the
/// parent's data (the children's count when absent), and the cost summed over the Design rows
/// (a completed render carries its row's cost; a failed one's is read from its row, since a
/// failed render may have paid for calls too).
pub async fn summarise(
    job_id: &str,
    enqueued_at_ms: u64,
    data: Option<&serde_json::Value>,
    children: BatchChildren,
    designs: &dyn DesignStore,
) -> BatchEvent {
    let mut event = BatchEvent::completed(job_id, enqueued_at_ms);
    event.completed = count(children.completed.len());
    event.failed = count(children.failed.len());
    event.total = data
        .and_then(|data| data.get("total"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|total| u32::try_from(total).ok())
        .unwrap_or(event.completed + event.failed);
    for output in &children.completed {
        let cost = |name: &str| output.get(name).and_then(serde_json::Value::as_i64).unwrap_or(0);
        event.cost_tokens += cost("costTokens");
        event.cost_cents += cost("costCents");
    }
    for failure in &children.failed {
        let Some(design) = failure.design_id.as_deref().and_then(|id| DesignId::parse(id).ok()) else {
            continue;
        };
        match designs.get(&design).await {
            Ok(Some(row)) => {
                event.cost_tokens += i64::from(row.cost_tokens);
                event.cost_cents += i64::from(row.cost_cents);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!("Could not read the cost of design {design} for batch {job_id}: {error}"),
        }
    }
    event.failures = children.failed;
    event
}

fn count(length: usize) -> u32 {
    u32::try_from(length).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryDesignStore;
    use crate::store::{DesignStore, MissingDesign, PaidCallEntry};

    #[tokio::test]
    async fn the_event_counts_both_outcomes_and_sums_the_cost_of_every_design() {
        let designs = MemoryDesignStore::new(MissingDesign::Reject);
        let failed_design = DesignId::parse("failed-1").unwrap();
        let tenant = crate::job::TenantId::parse("tenant-1").unwrap();
        designs.insert_pending(&failed_design, &tenant);
        designs
            .record_paid_call(
                &failed_design,
                &tenant,
                &PaidCallEntry {
                    call_id: "call-1".into(),
                    tokens: 100,
                    micro_cents: 2_500_000,
                    details: serde_json::json!({}),
                },
            )
            .await
            .unwrap();
        let children = BatchChildren {
            completed: vec![
                serde_json::json!({"designId": "a", "costTokens": 4270, "costCents": 17}),
                serde_json::json!({"designId": "b", "costTokens": 0, "costCents": 0}),
            ],
            failed: vec![BatchFailure {
                job_id: "7".into(),
                design_id: Some("failed-1".into()),
                reason: "provider unavailable [provider_unavailable]".into(),
            }],
        };
        let data = serde_json::json!({"total": 3});
        let event = summarise("batch-1", 1_700_000_000_000, Some(&data), children, &designs).await;
        assert_eq!((event.total, event.completed, event.failed), (3, 2, 1));
        assert_eq!((event.cost_tokens, event.cost_cents), (4370, 17 + 3));
        assert_eq!(event.event, "design.render.batch.completed");
        assert_eq!(event.failures[0].design_id.as_deref(), Some("failed-1"));
        let again = summarise(
            "batch-1",
            1_700_000_000_000,
            Some(&data),
            BatchChildren::default(),
            &designs,
        )
        .await;
        assert_eq!(again.id, event.id, "the event id is stable for the same batch job");
        assert_eq!(again.total, 3);
    }
}
