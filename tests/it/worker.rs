//! The worker's policies, in-process: `RenderWorker::handle` on the in-memory twins with a
//! scripted editor, barriers to hold a job mid-step and paused tokio time for leases. What the
//! BullMQ adapter does with each outcome is covered by the process tests in `queue.rs`.

use std::sync::Arc;
use std::time::Duration;

use design_render::error_code::ErrorCode;
use design_render::events::RenderEvent;
use design_render::providers::scripted::{Answer, ScriptedImage, paid_call};
use design_render::providers::{ProviderError, Usage};
use design_render::storage::StorageKey;
use design_render::storage::flaky::{Fault, FaultPlan};
use design_render::store::DesignStatus;
use design_render::tenancy::TenantLimiter;
use design_render::worker::{JobHandler, JobOutcome, SATURATED_DELAY_MAX, SATURATED_DELAY_MIN};
use serde_json::{Value, json};
use tokio::sync::Barrier;

use super::helpers::json;
use super::helpers::worker::{TestWorker, payload, redact, tenant_id};

fn unavailable() -> ProviderError {
    ProviderError::Unavailable {
        provider: "scripted",
        reason: "503 from upstream".into(),
        retry_after: None,
    }
}

fn completed(outcome: JobOutcome) -> Value {
    match outcome {
        JobOutcome::Completed(value) => value,
        other => panic!("expected Completed, got {other:?}"),
    }
}

fn retried(outcome: JobOutcome) -> ErrorCode {
    match outcome {
        JobOutcome::Retry(error) => error.code(),
        other => panic!("expected Retry, got {other:?}"),
    }
}

fn aborted(outcome: JobOutcome) -> ErrorCode {
    match outcome {
        JobOutcome::Abort(error) => error.code(),
        other => panic!("expected Abort, got {other:?}"),
    }
}

/// Waits until the spawned job reaches `gate`, failing at once if it ends before getting there
/// (instead of waiting forever at a barrier nobody else will reach).
async fn reach(gate: &Barrier, job: &mut tokio::task::JoinHandle<JobOutcome>) {
    tokio::select! {
        _ = gate.wait() => {}
        outcome = job => panic!("the job ended before reaching the gate: {outcome:?}"),
    }
}

fn only(events: Vec<RenderEvent>) -> RenderEvent {
    assert_eq!(events.len(), 1, "{events:?}");
    events.into_iter().next().expect("one event")
}

#[tokio::test]
async fn a_completed_job_returns_its_output_completes_the_row_and_announces_once() {
    let test = TestWorker::new([Answer::base()]);
    test.design("d-ok", "tenant-a");
    let value = completed(test.deliver("job-1", payload("d-ok", "tenant-a"), 1, 3).await);

    let row = test.row("d-ok");
    assert_eq!(row.status, DesignStatus::Completed);
    assert_eq!(
        row.composite_texture_url.as_deref(),
        value["compositeTextureUrl"].as_str()
    );
    let stored = row.metadata.expect("metadata on the row");
    assert_eq!(stored["provider"], "scripted");
    // The row keeps what the result reports, except the record step's own timing.
    assert!(stored["timings"].get("recordMs").is_none());
    assert!(value["metadata"]["timings"]["recordMs"].is_number());
    let event = only(test.take_events());
    assert_eq!((event.event, event.attempts_made), ("design.render.completed", 1));
    assert_eq!(event.user_id.as_deref(), Some("user-1"));
    assert_eq!(event.normal_map_url.as_deref(), stored["normalMapUrl"].as_str());

    insta::assert_json_snapshot!("job_returnvalue", redact(value));
    insta::assert_json_snapshot!("completed_event", redact(json(&event)));
}

#[tokio::test]
async fn a_transient_failure_with_attempts_left_retries_silently_then_completes() {
    let test = TestWorker::new([Answer::fail(unavailable()), Answer::base()]);
    test.design("d-retry", "tenant-a");
    let first = test.deliver("job-2", payload("d-retry", "tenant-a"), 1, 3).await;
    assert_eq!(retried(first), ErrorCode::ProviderUnavailable);
    // Between attempts: still PROCESSING, nothing announced, the slot given back.
    assert_eq!(test.row("d-retry").status, DesignStatus::Processing);
    assert_eq!(test.events.pending(), 0);
    assert!(test.limiter.held_leases().is_empty());

    completed(test.deliver("job-2", payload("d-retry", "tenant-a"), 2, 3).await);
    assert_eq!(test.row("d-retry").status, DesignStatus::Completed);
    let event = only(test.take_events());
    assert_eq!((event.event, event.attempts_made), ("design.render.completed", 2));
}

#[tokio::test]
async fn the_last_attempt_of_a_transient_failure_records_failed_and_announces_it_once() {
    let test = TestWorker::new([Answer::fail(unavailable()), Answer::fail(unavailable())]);
    test.design("d-last", "tenant-a");
    retried(test.deliver("job-3", payload("d-last", "tenant-a"), 1, 2).await);
    assert_eq!(test.events.pending(), 0);
    assert_eq!(test.row("d-last").status, DesignStatus::Processing);

    let last = test.deliver("job-3", payload("d-last", "tenant-a"), 2, 2).await;
    // Still a retry for BullMQ (it fails the job because no attempt is left).
    assert_eq!(retried(last), ErrorCode::ProviderUnavailable);
    let row = test.row("d-last");
    assert_eq!(row.status, DesignStatus::Failed);
    assert_eq!(row.metadata.expect("metadata")["error"]["code"], "provider_unavailable");
    let event = only(test.take_events());
    let error = event.error.as_ref().expect("error part");
    assert_eq!((error.code, error.permanent), (ErrorCode::ProviderUnavailable, false));
    insta::assert_json_snapshot!("failed_event", redact(json(&event)));
}

#[tokio::test]
async fn a_permanent_failure_aborts_on_the_first_attempt() {
    let refusal = ProviderError::Rejected {
        provider: "scripted",
        code: ErrorCode::ProviderContentBlocked,
        reason: "the safety system refused".into(),
    };
    let test = TestWorker::new([Answer::fail(refusal)]);
    test.design("d-refused", "tenant-a");
    let outcome = test.deliver("job-4", payload("d-refused", "tenant-a"), 1, 5).await;
    assert_eq!(aborted(outcome), ErrorCode::ProviderContentBlocked);
    assert_eq!(test.row("d-refused").status, DesignStatus::Failed);
    let event = only(test.take_events());
    assert_eq!(event.error.map(|error| error.permanent), Some(true));
}

#[tokio::test]
async fn a_saturated_tenant_is_delayed_without_using_an_attempt_or_touching_anything() {
    let test = TestWorker::with_limits([Answer::base()], 1, Duration::from_secs(30));
    test.design("d-wait", "tenant-a");
    let tenant = tenant_id("tenant-a");
    use design_render::tenancy::TenantLimiter as _;
    assert!(test.limiter.try_acquire(&tenant, "someone-else").await.unwrap());

    match test.deliver("job-5", payload("d-wait", "tenant-a"), 1, 1).await {
        JobOutcome::Delay(delay) => assert!((SATURATED_DELAY_MIN..SATURATED_DELAY_MAX).contains(&delay), "{delay:?}"),
        other => panic!("expected Delay, got {other:?}"),
    }
    assert_eq!(test.row("d-wait").status, DesignStatus::Pending);
    assert!(test.assets.requests().is_empty(), "nothing was downloaded");
    assert!(test.editor.requests().is_empty(), "no provider was asked");
    assert_eq!(test.events.pending(), 0);

    // Once the slot frees, the same (first and only) attempt runs.
    test.limiter.release(&tenant, "someone-else").await.unwrap();
    completed(test.deliver("job-5", payload("d-wait", "tenant-a"), 1, 1).await);
    only(test.take_events());
}

#[tokio::test]
async fn a_tenant_at_its_limit_delays_its_next_job_until_a_slot_frees() {
    let gate = Arc::new(Barrier::new(2));
    let test = Arc::new(TestWorker::with_limits(
        [Answer::base().held_at(gate.clone()), Answer::base()],
        1,
        Duration::from_secs(30),
    ));
    test.design("d-first", "tenant-a");
    test.design("d-second", "tenant-a");
    test.design("d-other", "tenant-b");
    let mut first = {
        let test = Arc::clone(&test);
        tokio::spawn(async move { test.deliver("job-a", payload("d-first", "tenant-a"), 1, 1).await })
    };
    reach(&gate, &mut first).await; // mid-inpaint, holding tenant-a's only slot
    assert!(matches!(
        test.deliver("job-b", payload("d-second", "tenant-a"), 1, 1).await,
        JobOutcome::Delay(_)
    ));
    assert_eq!(test.row("d-second").status, DesignStatus::Pending);
    gate.wait().await;
    completed(first.await.expect("first job"));
    test.editor.push(Answer::base());
    completed(test.deliver("job-b", payload("d-second", "tenant-a"), 1, 1).await);
    // Another tenant never waited behind tenant-a.
    completed(test.deliver("job-c", payload("d-other", "tenant-b"), 1, 1).await);
    assert_eq!(test.take_events().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_renewed_while_a_long_render_runs() {
    let gate = Arc::new(Barrier::new(2));
    let lease = Duration::from_secs(3);
    let test = Arc::new(TestWorker::with_limits(
        [Answer::base().held_at(gate.clone())],
        1,
        lease,
    ));
    test.design("d-long", "tenant-a");
    let mut job = {
        let test = Arc::clone(&test);
        tokio::spawn(async move { test.deliver("job-long", payload("d-long", "tenant-a"), 1, 1).await })
    };
    reach(&gate, &mut job).await;
    // Four lease lifetimes pass while the job is held; without renewal the lease would lapse.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let held = test.limiter.held_leases();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].token, "job-long");
    gate.wait().await;
    completed(job.await.expect("job"));
    only(test.take_events());
}

#[tokio::test]
async fn another_tenants_design_is_refused_announced_and_left_untouched() {
    let test = TestWorker::new([]);
    test.design("d-theirs", "tenant-b");
    let outcome = test.deliver("job-6", payload("d-theirs", "tenant-a"), 1, 3).await;
    assert_eq!(aborted(outcome), ErrorCode::DesignNotFound);
    let row = test.row("d-theirs");
    assert_eq!((row.status, row.metadata), (DesignStatus::Pending, None));
    let event = only(test.take_events());
    assert_eq!(
        (event.tenant_id.as_str(), event.design_id.as_str()),
        ("tenant-a", "d-theirs")
    );
}

#[tokio::test]
async fn an_invalid_payload_is_announced_with_what_could_be_read() {
    let test = TestWorker::new([]);
    let mut bad = payload("d-bad", "tenant-a");
    bad["renderOptions"]["size"] = "10x10".into();
    let outcome = test.deliver("job-7", bad, 1, 3).await;
    assert_eq!(aborted(outcome), ErrorCode::InvalidPayload);
    let event = only(test.take_events());
    assert_eq!(event.design_id, "d-bad");
    let message = event.error.map(|error| error.message).unwrap_or_default();
    assert!(message.contains("renderOptions.size"), "{message}");
}

#[tokio::test]
async fn a_panicking_provider_costs_one_attempt_and_leaves_no_slot_or_stuck_row() {
    let test = TestWorker::new([Answer::panic(), Answer::panic()]);
    test.design("d-panic", "tenant-a");
    assert_eq!(
        retried(test.deliver("job-8", payload("d-panic", "tenant-a"), 1, 2).await),
        ErrorCode::Internal
    );
    assert!(test.limiter.held_leases().is_empty());
    assert_eq!(test.events.pending(), 0);
    assert_eq!(
        retried(test.deliver("job-8", payload("d-panic", "tenant-a"), 2, 2).await),
        ErrorCode::Internal
    );
    assert_eq!(test.row("d-panic").status, DesignStatus::Failed);
    only(test.take_events());
}

#[tokio::test]
async fn a_paid_call_survives_a_failed_upload_and_is_counted_once_across_attempts() {
    // The provider reports the same call id on both attempts (a replayed response): it is one
    // paid call, so the cost must not double.
    let call = || {
        paid_call(
            "call-1",
            Usage {
                input_tokens: 1000,
                output_tokens: 3270,
            },
            16_727_500,
        )
    };
    let test = TestWorker::new([
        Answer::paid(ScriptedImage::Base, call()),
        Answer::paid(ScriptedImage::Base, call()),
    ]);
    test.blobs
        .set_plan(FaultPlan::new().fail_next_puts(1, Fault::Unavailable));
    test.design("d-paid", "tenant-a");
    assert_eq!(
        retried(test.deliver("job-9", payload("d-paid", "tenant-a"), 1, 3).await),
        ErrorCode::StorageFailed
    );
    let row = test.row("d-paid");
    assert_eq!(
        (row.cost_tokens, row.cost_cents),
        (4270, 17),
        "recorded before the upload"
    );

    let value = completed(test.deliver("job-9", payload("d-paid", "tenant-a"), 2, 3).await);
    assert_eq!(
        (value["costTokens"].as_i64(), value["costCents"].as_i64()),
        (Some(4270), Some(17))
    );
    let row = test.row("d-paid");
    assert_eq!((row.cost_tokens, row.cost_cents), (4270, 17));
    assert_eq!(only(test.take_events()).cost_cents, 17);
}

#[tokio::test]
async fn a_failed_event_carries_the_cost_that_was_recorded_for_the_design() {
    let call = paid_call(
        "call-1",
        Usage {
            input_tokens: 1000,
            output_tokens: 3270,
        },
        16_727_500,
    );
    let test = TestWorker::new([Answer::paid(ScriptedImage::Base, call)]);
    // The paid image never reaches storage on the job's only attempt.
    test.blobs
        .set_plan(FaultPlan::new().fail_next_puts(5, Fault::Unavailable));
    test.design("d-spent", "tenant-a");
    assert_eq!(
        retried(test.deliver("job-3", payload("d-spent", "tenant-a"), 1, 1).await),
        ErrorCode::StorageFailed
    );
    let row = test.row("d-spent");
    assert_eq!(row.status, DesignStatus::Failed);
    let event = only(test.take_events());
    assert_eq!(event.event, "design.render.failed");
    assert_eq!((event.cost_tokens, event.cost_cents), (4270, 17), "what was paid");
    assert_eq!((row.cost_tokens, row.cost_cents), (4270, 17));
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_lease_is_lost_stops_at_the_next_step_and_retries() {
    let gate = Arc::new(Barrier::new(2));
    let lease = Duration::from_secs(3);
    let test = Arc::new(TestWorker::with_limits(
        [Answer::base().held_at(gate.clone()), Answer::base()],
        1,
        lease,
    ));
    test.design("d-lost", "tenant-a");
    let mut job = {
        let test = Arc::clone(&test);
        tokio::spawn(async move { test.deliver("job-lost", payload("d-lost", "tenant-a"), 1, 3).await })
    };
    reach(&gate, &mut job).await;
    // The slot is taken away while the provider works (as when another worker's clean-up or a
    // Redis failover loses it); the next renewal finds it gone.
    test.limiter
        .release(&tenant_id("tenant-a"), "job-lost")
        .await
        .expect("release");
    tokio::time::sleep(lease).await;
    gate.wait().await;
    assert_eq!(retried(job.await.expect("job")), ErrorCode::TenantLeaseLost);
    // Stopped before post-processing: nothing was uploaded, and the row waits for the retry.
    assert_eq!(test.row("d-lost").status, DesignStatus::Processing);
    assert!(test.take_events().is_empty(), "a retried attempt announces nothing");
    // The retry takes a slot again and completes.
    completed(test.deliver("job-lost", payload("d-lost", "tenant-a"), 2, 3).await);
    only(test.take_events());
}

#[tokio::test]
async fn a_non_square_render_keeps_its_aspect_unless_the_job_asks_to_cover_or_fill() {
    const WIDE: &str = "https://assets.example/wide.png";
    let test = TestWorker::new([Answer::base(), Answer::base(), Answer::base()]);
    test.assets.serve(WIDE, super::helpers::gradient_png(96, 48));
    let stored_size = |url: &Value| {
        let url = url.as_str().expect("a URL");
        let key = StorageKey::parse(url.trim_start_matches("memory://blobs/")).expect("a key");
        let blob = test.blobs.inner().blob(&key).expect("stored");
        let image = image::load_from_memory(&blob.bytes).expect("a PNG");
        json!([image.width(), image.height()])
    };
    // The box is 64x64 and the preview square 32: the 2:1 base fits inside at 64x32 and 32x16.
    for (design, fit, high_res, preview) in [
        ("d-inside", None, json!([64, 32]), json!([32, 16])),
        ("d-cover", Some("cover"), json!([64, 64]), json!([32, 32])),
        ("d-fill", Some("fill"), json!([64, 64]), json!([32, 32])),
    ] {
        test.design(design, "tenant-a");
        let mut job = payload(design, "tenant-a");
        job["baseTextureUrl"] = WIDE.into();
        if let Some(fit) = fit {
            job["renderOptions"]["fit"] = fit.into();
        }
        let value = completed(test.deliver(design, job, 1, 3).await);
        let sizes = &value["metadata"]["sizes"];
        assert_eq!(sizes["fit"], fit.unwrap_or("inside"), "{design}");
        assert_eq!(sizes["composite"], json!([96, 48]), "{design}");
        assert_eq!(sizes["highRes"], high_res, "{design}");
        assert_eq!(sizes["preview"], preview, "{design}");
        assert_eq!(
            stored_size(&value["highResUrl"]),
            high_res,
            "{design}: the stored image"
        );
        assert_eq!(
            stored_size(&value["previewUrl"]),
            preview,
            "{design}: the stored preview"
        );
        assert_eq!(
            stored_size(&value["metadata"]["normalMapUrl"]),
            high_res,
            "{design}: the normal map matches the high-res image"
        );
        only(test.take_events());
    }
}

#[tokio::test]
async fn a_provider_that_says_when_to_come_back_sets_the_next_attempts_delay_until_the_last() {
    let limited = || ProviderError::Unavailable {
        provider: "scripted",
        reason: "429 rate limited".into(),
        retry_after: Some(Duration::from_secs(7)),
    };
    let test = TestWorker::new([Answer::fail(limited()), Answer::fail(limited())]);
    test.design("d-later", "tenant-a");
    match test.deliver("job-later", payload("d-later", "tenant-a"), 1, 2).await {
        JobOutcome::RetryAfter(error, delay) => {
            assert_eq!(error.code(), ErrorCode::ProviderUnavailable);
            assert!(
                (Duration::from_secs(7)..Duration::from_millis(7700)).contains(&delay),
                "{delay:?}"
            );
        }
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    assert_eq!(test.row("d-later").status, DesignStatus::Processing);
    assert!(test.take_events().is_empty(), "a retried attempt announces nothing");
    // The last attempt has nothing to wait for: it fails for good.
    assert_eq!(
        retried(test.deliver("job-later", payload("d-later", "tenant-a"), 2, 2).await),
        ErrorCode::ProviderUnavailable
    );
    assert_eq!(test.row("d-later").status, DesignStatus::Failed);
    assert_eq!(only(test.take_events()).event, "design.render.failed");
}

#[tokio::test]
async fn a_cancelled_job_stops_at_the_next_step_releases_its_slot_and_settles_nothing() {
    let gate = Arc::new(Barrier::new(2));
    let test = Arc::new(TestWorker::new([Answer::base().held_at(gate.clone()), Answer::base()]));
    test.design("d-cancel", "tenant-a");
    let mut job = {
        let test = Arc::clone(&test);
        tokio::spawn(async move { test.deliver("job-cancel", payload("d-cancel", "tenant-a"), 1, 3).await })
    };
    reach(&gate, &mut job).await;
    test.worker.cancel_in_flight();
    gate.wait().await;
    assert!(matches!(job.await.expect("job"), JobOutcome::Abandon));
    assert!(test.limiter.held_leases().is_empty(), "the slot is released");
    assert_eq!(
        test.row("d-cancel").status,
        DesignStatus::Processing,
        "left for recovery"
    );
    assert!(test.take_events().is_empty(), "nothing is announced");
    assert!(test.blobs.inner().keys().is_empty(), "stopped before post-processing");
    // Stalled recovery delivers the same attempt again (to a worker that is not cancelling).
    let mut test = Arc::try_unwrap(test).ok().expect("the job task is done");
    test.worker.cancellation = Default::default();
    completed(test.deliver("job-cancel", payload("d-cancel", "tenant-a"), 1, 3).await);
    only(test.take_events());
}
