//! The [`DesignStore`] contract, run against the memory, SQLite and PostgreSQL adapters.
//!
//! The port has no insert (the backend creates rows), so each adapter's fixture implements
//! [`DesignStoreUnderTest::insert_pending`] its own way. Every test gets a store of its own: a
//! fresh map, a fresh SQLite file or a fresh PostgreSQL schema, created by the store's `auto`
//! migrations with the test's tenant column (`DESIGN_TENANT_COLUMN`): `tenantId` unless the
//! test names another, or none.

use design_render::config::TenantColumn;
use design_render::error_code::ErrorCode;
use design_render::job::{DesignId, TenantId};
use design_render::store::{
    CompletedRender, DesignRow, DesignStatus, DesignStore, FailedRender, PaidCallEntry, StoreError,
};
use serde_json::{Value, json};

/// An adapter plus the one thing the suite needs that the port does not offer.
#[async_trait::async_trait]
pub trait DesignStoreUnderTest: Send + Sync {
    fn store(&self) -> &dyn DesignStore;

    /// Creates a PENDING row owned by `tenant` (in the store's tenant column; with none, a row
    /// without an owner), as the backend does before it enqueues a job.
    async fn insert_pending(&self, design: &DesignId, tenant: &TenantId);

    /// What the store's tenant column holds for `design`, read past the store (raw SQL on the
    /// configured column name); `None` for no row, no owner or no column.
    async fn stored_owner(&self, design: &DesignId) -> Option<String>;
}

/// `DESIGN_TENANT_COLUMN` as the configuration reads it: empty means no ownership check.
fn tenant_column(name: &str) -> Option<TenantColumn> {
    (!name.is_empty()).then(|| TenantColumn::parse(name).expect("valid tenant column"))
}

fn design(id: &str) -> DesignId {
    DesignId::parse(id).expect("valid design id")
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).expect("valid tenant id")
}

fn completed(cost_tokens: i32, cost_cents: i32, metadata: Value) -> CompletedRender {
    CompletedRender {
        composite_texture_url: "memory://blobs/c.png".into(),
        preview_url: "memory://blobs/p.png".into(),
        high_res_url: "memory://blobs/h.png".into(),
        cost_tokens,
        cost_cents,
        metadata,
    }
}

fn failed(code: ErrorCode, cost_tokens: i32, cost_cents: i32, attempts: Option<Value>) -> FailedRender {
    FailedRender {
        code,
        message: format!("{code}: the details"),
        cost_tokens,
        cost_cents,
        provider_attempts: attempts,
    }
}

fn paid_call(call_id: &str, tokens: u64, micro_cents: u64) -> PaidCallEntry {
    PaidCallEntry {
        call_id: call_id.into(),
        tokens,
        micro_cents,
        details: json!({"provider": "openai", "model": "gpt-image-1"}),
    }
}

async fn row(subject: &dyn DesignStoreUnderTest, id: &DesignId) -> DesignRow {
    subject
        .store()
        .get(id)
        .await
        .expect("get succeeds")
        .unwrap_or_else(|| panic!("row {id} exists"))
}

/// Asserts `result` is `NotFound` naming exactly this design and tenant.
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, id: &DesignId, owner: &TenantId, what: &str) {
    match result {
        Err(StoreError::NotFound { design, tenant }) => {
            assert_eq!((&design, &tenant), (id, owner), "{what}: NotFound names the wrong row")
        }
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// Seeds a PENDING row for `owner` and moves it to PROCESSING, as a job's first step does.
async fn processing(subject: &dyn DesignStoreUnderTest, id: &DesignId, owner: &TenantId) {
    subject.insert_pending(id, owner).await;
    subject.store().mark_processing(id, owner).await.expect("processing");
}

/// Every write other than `mark_processing` on `id` as `tenant` fails with NotFound naming both.
async fn assert_writes_are_not_found(store: &dyn DesignStore, id: &DesignId, tenant: &TenantId) {
    let render = completed(999, 99, json!({"by": "stranger"}));
    assert_not_found(
        store.mark_completed(id, tenant, &render).await,
        id,
        tenant,
        "mark_completed",
    );
    let failure = failed(ErrorCode::AssetRefused, 999, 99, None);
    assert_not_found(store.mark_failed(id, tenant, &failure).await, id, tenant, "mark_failed");
    let call = paid_call("call-stranger", 5_000, 9_000_000);
    assert_not_found(
        store.record_paid_call(id, tenant, &call).await,
        id,
        tenant,
        "record_paid_call",
    );
}

pub async fn pending_row_moves_to_processing_then_completed(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-flow"), tenant("tenant-a"));
    subject.insert_pending(&id, &owner).await;
    let pending = row(subject, &id).await;
    assert_eq!(
        pending,
        DesignRow {
            id: "d-flow".into(),
            tenant_id: Some("tenant-a".into()),
            status: DesignStatus::Pending,
            composite_texture_url: None,
            preview_url: None,
            high_res_url: None,
            cost_tokens: 0,
            cost_cents: 0,
            metadata: None,
        }
    );

    subject.store().mark_processing(&id, &owner).await.expect("processing");
    assert_eq!(
        row(subject, &id).await,
        DesignRow {
            status: DesignStatus::Processing,
            ..pending.clone()
        }
    );

    subject
        .store()
        .mark_completed(&id, &owner, &completed(12, 3, json!({"provider": "builtin"})))
        .await
        .expect("completed");
    let done = row(subject, &id).await;
    assert_eq!(
        done,
        DesignRow {
            status: DesignStatus::Completed,
            composite_texture_url: Some("memory://blobs/c.png".into()),
            preview_url: Some("memory://blobs/p.png".into()),
            high_res_url: Some("memory://blobs/h.png".into()),
            cost_tokens: 12,
            cost_cents: 3,
            metadata: Some(json!({"provider": "builtin"})),
            ..pending
        }
    );

    // A re-run job takes the row again; what the first run wrote stays until it is rewritten.
    subject.store().mark_processing(&id, &owner).await.expect("re-run");
    assert_eq!(
        row(subject, &id).await,
        DesignRow {
            status: DesignStatus::Processing,
            ..done
        }
    );
}

pub async fn processing_row_moves_to_failed_with_the_reason(subject: &dyn DesignStoreUnderTest) {
    let owner = tenant("tenant-a");
    let (with_attempts, without) = (design("d-fail-1"), design("d-fail-2"));
    for id in [&with_attempts, &without] {
        subject.insert_pending(id, &owner).await;
        subject.store().mark_processing(id, &owner).await.expect("processing");
    }
    let attempts = json!([{"provider": "openai", "outcome": "provider_unavailable"}]);
    subject
        .store()
        .mark_failed(
            &with_attempts,
            &owner,
            &failed(ErrorCode::ProviderUnavailable, 0, 0, Some(attempts.clone())),
        )
        .await
        .expect("failed");
    subject
        .store()
        .mark_failed(&without, &owner, &failed(ErrorCode::AssetRefused, 0, 0, None))
        .await
        .expect("failed");

    let first = row(subject, &with_attempts).await;
    assert_eq!(first.status, DesignStatus::Failed);
    assert_eq!(
        (first.composite_texture_url, first.cost_tokens, first.cost_cents),
        (None, 0, 0)
    );
    let metadata = first.metadata.expect("failure metadata");
    assert_eq!(metadata["error"]["code"], "provider_unavailable");
    assert_eq!(metadata["error"]["message"], "provider_unavailable: the details");
    let failed_at = metadata["error"]["failedAt"].as_str().expect("failedAt is text");
    chrono::DateTime::parse_from_rfc3339(failed_at).expect("failedAt is RFC 3339");
    assert_eq!(metadata["providerAttempts"], attempts);

    let second = row(subject, &without).await;
    assert_eq!(second.status, DesignStatus::Failed);
    let metadata = second.metadata.expect("failure metadata");
    assert_eq!(metadata["error"]["code"], "asset_refused");
    assert!(metadata.get("providerAttempts").is_none(), "{metadata}");
}

pub async fn another_tenants_row_is_not_found_and_left_unchanged(subject: &dyn DesignStoreUnderTest) {
    let (id, owner, intruder) = (design("d-owned"), tenant("tenant-a"), tenant("tenant-b"));
    processing(subject, &id, &owner).await;
    subject
        .store()
        .record_paid_call(&id, &owner, &paid_call("call-1", 100, 250_000))
        .await
        .expect("paid call");
    let before = row(subject, &id).await;

    let store = subject.store();
    assert_not_found(
        store.mark_processing(&id, &intruder).await,
        &id,
        &intruder,
        "mark_processing",
    );
    assert_eq!(row(subject, &id).await, before, "mark_processing changed the row");
    assert_writes_are_not_found(store, &id, &intruder).await;
    assert_eq!(row(subject, &id).await, before, "a refused write changed the row");

    // The owner is still served.
    store
        .mark_completed(&id, &owner, &completed(0, 0, json!({})))
        .await
        .expect("owner completes");
    assert_eq!(row(subject, &id).await.status, DesignStatus::Completed);
}

pub async fn a_paid_call_is_counted_once_and_a_second_call_adds(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-paid"), tenant("tenant-a"));
    processing(subject, &id, &owner).await;
    let store = subject.store();

    let first = store
        .record_paid_call(&id, &owner, &paid_call("openai:req_0", 1_000, 1_500_000))
        .await
        .expect("first call");
    // 1.5 cents are charged as 2: cents are rounded up.
    assert_eq!((first.cost_tokens, first.cost_cents), (1_000, 2));
    // A replay of the same call (a retried bookkeeping step) counts once, even with other figures.
    let replay = store
        .record_paid_call(&id, &owner, &paid_call("openai:req_0", 9_999, 99_000_000))
        .await
        .expect("replayed call");
    assert_eq!(replay, first);
    let both = store
        .record_paid_call(&id, &owner, &paid_call("openai:req_1", 1_000, 1_500_001))
        .await
        .expect("second call");
    // The sum is rounded once: 3 000 001 micro-cents are 4 cents, not 2 + 2.
    assert_eq!((both.cost_tokens, both.cost_cents), (2_000, 4));

    let stored = row(subject, &id).await;
    assert_eq!((stored.cost_tokens, stored.cost_cents), (2_000, 4));
    let cost = &stored.metadata.as_ref().expect("metadata")["cost"];
    assert_eq!(cost, &both.json);
    assert_eq!(cost["totalTokens"], 2_000);
    assert_eq!(cost["totalMicroCents"], 3_000_001);
    assert_eq!(cost["totalCents"], 4);
    let calls = cost["calls"].as_object().expect("calls");
    assert_eq!(
        calls.keys().map(String::as_str).collect::<Vec<_>>(),
        ["openai:req_0", "openai:req_1"]
    );
    assert_eq!(
        calls["openai:req_0"],
        json!({"provider": "openai", "model": "gpt-image-1", "tokens": 1_000, "microCents": 1_500_000})
    );
}

pub async fn cost_is_never_lowered_by_completion_or_failure(subject: &dyn DesignStoreUnderTest) {
    let owner = tenant("tenant-a");
    let (completes, fails) = (design("d-cost-ok"), design("d-cost-failed"));
    for id in [&completes, &fails] {
        subject.insert_pending(id, &owner).await;
        subject.store().mark_processing(id, &owner).await.expect("processing");
        subject
            .store()
            .record_paid_call(id, &owner, &paid_call("openai:req_0", 4_270, 16_727_500))
            .await
            .expect("paid call");
    }
    let store = subject.store();
    let cost_of = |row: DesignRow| (row.cost_tokens, row.cost_cents);

    // The pipeline's own total may be lower (it forgot an earlier attempt's call): kept.
    store
        .mark_completed(&completes, &owner, &completed(0, 0, json!({})))
        .await
        .expect("completed");
    assert_eq!(cost_of(row(subject, &completes).await), (4_270, 17));
    // A higher total raises the columns.
    store
        .mark_completed(&completes, &owner, &completed(5_000, 20, json!({})))
        .await
        .expect("completed again");
    assert_eq!(cost_of(row(subject, &completes).await), (5_000, 20));

    store
        .mark_failed(&fails, &owner, &failed(ErrorCode::ProviderUnavailable, 0, 0, None))
        .await
        .expect("failed");
    let failed_row = row(subject, &fails).await;
    assert_eq!(cost_of(failed_row.clone()), (4_270, 17));
    assert_eq!(
        failed_row.metadata.expect("metadata")["cost"]["calls"]
            .as_object()
            .map(|calls| calls.len()),
        Some(1),
        "the failure kept the ledger"
    );
    store
        .mark_failed(&fails, &owner, &failed(ErrorCode::ProviderUnavailable, 4_300, 18, None))
        .await
        .expect("failed again");
    assert_eq!(cost_of(row(subject, &fails).await), (4_300, 18));
}

pub async fn completion_replaces_top_level_metadata_keys_and_keeps_the_others(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-meta"), tenant("tenant-a"));
    processing(subject, &id, &owner).await;
    let ledger = subject
        .store()
        .record_paid_call(&id, &owner, &paid_call("openai:req_0", 10, 100))
        .await
        .expect("paid call");
    subject
        .store()
        .mark_completed(
            &id,
            &owner,
            &completed(
                10,
                1,
                json!({
                    "provider": "openai",
                    "timings": {"startedAt": "a", "finishedAt": "b"},
                    "providerAttempts": [{"provider": "openai", "outcome": "ok"}],
                    "flags": {"hdr": true, "tiles": 2.5},
                }),
            ),
        )
        .await
        .expect("completed");
    assert_eq!(
        row(subject, &id).await.metadata,
        Some(json!({
            "cost": ledger.json,
            "provider": "openai",
            "timings": {"startedAt": "a", "finishedAt": "b"},
            "providerAttempts": [{"provider": "openai", "outcome": "ok"}],
            "flags": {"hdr": true, "tiles": 2.5},
        }))
    );

    // A second completion (a re-run): `timings` is replaced whole, not merged key by key; a
    // null replaces the value too; keys the patch does not name are kept.
    subject
        .store()
        .mark_completed(
            &id,
            &owner,
            &completed(
                10,
                1,
                json!({"timings": {"retriedAt": "c"}, "provider": null, "attempt": 2}),
            ),
        )
        .await
        .expect("completed again");
    assert_eq!(
        row(subject, &id).await.metadata,
        Some(json!({
            "cost": ledger.json,
            "provider": null,
            "timings": {"retriedAt": "c"},
            "providerAttempts": [{"provider": "openai", "outcome": "ok"}],
            "flags": {"hdr": true, "tiles": 2.5},
            "attempt": 2,
        }))
    );
}

pub async fn failure_stores_the_error_and_keeps_cost_and_other_metadata(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-meta-failed"), tenant("tenant-a"));
    processing(subject, &id, &owner).await;
    let ledger = subject
        .store()
        .record_paid_call(&id, &owner, &paid_call("openai:req_0", 4_270, 16_727_500))
        .await
        .expect("paid call");
    let attempts = json!([{"provider": "openai", "outcome": "provider_unavailable"}]);
    subject
        .store()
        .mark_failed(
            &id,
            &owner,
            &failed(ErrorCode::ProviderUnavailable, 0, 0, Some(attempts.clone())),
        )
        .await
        .expect("failed");
    let first = row(subject, &id).await;
    let metadata = first.metadata.expect("metadata");
    assert_eq!(metadata["cost"], ledger.json);
    assert_eq!(metadata["providerAttempts"], attempts);
    assert_eq!(metadata["error"]["code"], "provider_unavailable");
    assert_eq!((first.cost_tokens, first.cost_cents), (4_270, 17));

    // A later failure replaces `error` whole and keeps what it does not name.
    subject
        .store()
        .mark_failed(&id, &owner, &failed(ErrorCode::AssetRefused, 0, 0, None))
        .await
        .expect("failed again");
    let second = row(subject, &id).await;
    let metadata = second.metadata.expect("metadata");
    let mut error_keys: Vec<&str> = metadata["error"]
        .as_object()
        .expect("error object")
        .keys()
        .map(String::as_str)
        .collect();
    error_keys.sort_unstable();
    assert_eq!(error_keys, ["code", "failedAt", "message"]);
    assert_eq!(metadata["error"]["code"], "asset_refused");
    assert_eq!(metadata["error"]["message"], "asset_refused: the details");
    assert_eq!(metadata["providerAttempts"], attempts);
    assert_eq!(metadata["cost"], ledger.json);
    assert_eq!((second.cost_tokens, second.cost_cents), (4_270, 17));
}

pub async fn completion_clears_the_error_of_an_earlier_failure(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-retried"), tenant("tenant-a"));
    processing(subject, &id, &owner).await;
    let ledger = subject
        .store()
        .record_paid_call(&id, &owner, &paid_call("openai:req_0", 10, 100))
        .await
        .expect("paid call");
    let attempts = json!([{"provider": "openai", "outcome": "provider_unavailable"}]);
    subject
        .store()
        .mark_failed(
            &id,
            &owner,
            &failed(ErrorCode::ProviderUnavailable, 0, 0, Some(attempts.clone())),
        )
        .await
        .expect("failed");
    assert!(
        row(subject, &id)
            .await
            .metadata
            .expect("metadata")
            .get("error")
            .is_some()
    );

    // A later run of the same design succeeds: the old reason must not outlive it.
    subject.store().mark_processing(&id, &owner).await.expect("re-run");
    subject
        .store()
        .mark_completed(&id, &owner, &completed(10, 1, json!({"provider": "builtin"})))
        .await
        .expect("completed");
    let done = row(subject, &id).await;
    assert_eq!(done.status, DesignStatus::Completed);
    assert_eq!(
        done.metadata,
        Some(json!({
            "cost": ledger.json,
            "providerAttempts": attempts,
            "provider": "builtin",
        }))
    );
}

/// For a store built with `MissingDesign::Create`: the created row's owner is written to the
/// configured tenant column itself.
pub async fn create_mode_writes_the_owner_to_the_tenant_column(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-created"), tenant("tenant-a"));
    subject.store().mark_processing(&id, &owner).await.expect("created");
    assert_eq!(subject.stored_owner(&id).await.as_deref(), Some("tenant-a"));
    assert_eq!(row(subject, &id).await.tenant_id.as_deref(), Some("tenant-a"));
}

/// For a store without a tenant column: the queue is trusted, so any tenant's job writes the
/// row with the job's design id, and rows read back without an owner.
pub async fn without_a_tenant_column_rows_are_matched_by_id_only(subject: &dyn DesignStoreUnderTest) {
    let (id, owner, other) = (design("d-shared"), tenant("tenant-a"), tenant("tenant-b"));
    subject.insert_pending(&id, &owner).await;
    assert_eq!(row(subject, &id).await.tenant_id, None, "there is no column to read");
    let store = subject.store();
    store
        .mark_processing(&id, &other)
        .await
        .expect("any tenant takes the row");
    assert_eq!(row(subject, &id).await.status, DesignStatus::Processing);
    let ledger = store
        .record_paid_call(&id, &other, &paid_call("openai:req_0", 10, 100))
        .await
        .expect("any tenant records a call");
    store
        .mark_failed(&id, &owner, &failed(ErrorCode::ProviderUnavailable, 0, 0, None))
        .await
        .expect("any tenant fails the row");
    assert_eq!(row(subject, &id).await.status, DesignStatus::Failed);
    store
        .mark_completed(&id, &other, &completed(10, 1, json!({"provider": "builtin"})))
        .await
        .expect("any tenant completes the row");
    assert_eq!(
        row(subject, &id).await,
        DesignRow {
            id: "d-shared".into(),
            tenant_id: None,
            status: DesignStatus::Completed,
            composite_texture_url: Some("memory://blobs/c.png".into()),
            preview_url: Some("memory://blobs/p.png".into()),
            high_res_url: Some("memory://blobs/h.png".into()),
            cost_tokens: 10,
            cost_cents: 1,
            metadata: Some(json!({"cost": ledger.json, "provider": "builtin"})),
        }
    );

    // Matching by id still needs the id: a design nobody created is refused and not created.
    let missing = design("d-nobody");
    assert_not_found(
        store.mark_processing(&missing, &owner).await,
        &missing,
        &owner,
        "mark_processing",
    );
    assert_writes_are_not_found(store, &missing, &owner).await;
    assert_eq!(store.get(&missing).await.expect("get"), None);
}

/// For a store built with `MissingDesign::Create` and no tenant column: the row is created
/// without an owner and any tenant's job then writes it.
pub async fn create_mode_without_a_tenant_column_creates_a_row_without_an_owner(subject: &dyn DesignStoreUnderTest) {
    let (id, first, second) = (design("d-created"), tenant("tenant-a"), tenant("tenant-b"));
    let store = subject.store();
    store.mark_processing(&id, &first).await.expect("created");
    let created = row(subject, &id).await;
    assert_eq!((created.tenant_id, created.status), (None, DesignStatus::Processing));
    store
        .mark_completed(&id, &first, &completed(1, 1, json!({})))
        .await
        .expect("completed");
    store
        .mark_processing(&id, &second)
        .await
        .expect("another tenant re-runs it");
    assert_eq!(row(subject, &id).await.status, DesignStatus::Processing);
}

/// For a store built with `MissingDesign::Reject`.
pub async fn reject_mode_refuses_a_missing_row(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-missing"), tenant("tenant-a"));
    let store = subject.store();
    assert_not_found(store.mark_processing(&id, &owner).await, &id, &owner, "mark_processing");
    assert_eq!(
        store.get(&id).await.expect("get"),
        None,
        "mark_processing created a row"
    );
    assert_writes_are_not_found(store, &id, &owner).await;
    assert_eq!(store.get(&id).await.expect("get"), None);
}

/// For a store built with `MissingDesign::Create`: only `mark_processing` creates a row.
pub async fn create_mode_creates_a_missing_row_for_the_tenant(subject: &dyn DesignStoreUnderTest) {
    let (id, owner) = (design("d-created"), tenant("tenant-a"));
    let store = subject.store();
    store.mark_processing(&id, &owner).await.expect("created");
    assert_eq!(
        row(subject, &id).await,
        DesignRow {
            id: "d-created".into(),
            tenant_id: Some("tenant-a".into()),
            status: DesignStatus::Processing,
            composite_texture_url: None,
            preview_url: None,
            high_res_url: None,
            cost_tokens: 0,
            cost_cents: 0,
            metadata: None,
        }
    );
    store
        .mark_completed(&id, &owner, &completed(1, 1, json!({})))
        .await
        .expect("the created row completes");

    let never = design("d-never");
    assert_writes_are_not_found(store, &never, &owner).await;
    assert_eq!(store.get(&never).await.expect("get"), None);
}

pub async fn an_unknown_id_reads_as_none(subject: &dyn DesignStoreUnderTest) {
    subject.insert_pending(&design("d-known"), &tenant("tenant-a")).await;
    assert_eq!(subject.store().get(&design("d-unknown")).await.expect("get"), None);
}

pub async fn recent_rows_come_newest_first_by_status_in_pages(subject: &dyn DesignStoreUnderTest) {
    let store = subject.store();
    let owner = tenant("tenant-a");
    subject.insert_pending(&design("d-4"), &owner).await;
    // Completed in the order 2, 1, 3 (4 stays pending); each write a moment after the last so
    // the SQL adapters' millisecond `updatedAt` tells them apart.
    for id in ["d-2", "d-1", "d-3"] {
        processing(subject, &design(id), &owner).await;
        store
            .mark_completed(&design(id), &owner, &completed(0, 0, json!({})))
            .await
            .expect("completed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ids = |rows: Vec<DesignRow>| rows.into_iter().map(|row| row.id).collect::<Vec<_>>();
    let first_page = store.recent(DesignStatus::Completed, 0, 2).await.expect("recent");
    assert_eq!(ids(first_page), ["d-3", "d-1"]);
    let second_page = store.recent(DesignStatus::Completed, 2, 2).await.expect("recent");
    assert_eq!(ids(second_page.clone()), ["d-2"]);
    assert_eq!(second_page[0].preview_url.as_deref(), Some("memory://blobs/p.png"));
    let pending = store.recent(DesignStatus::Pending, 0, 10).await.expect("recent");
    assert_eq!(ids(pending), ["d-4"]);
}

pub async fn cost_by_tenant_sums_the_period_most_expensive_first(subject: &dyn DesignStoreUnderTest) {
    let store = subject.store();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    for (id, owner, cents) in [
        ("d-a1", "tenant-a", 3),
        ("d-a2", "tenant-a", 4),
        ("d-b1", "tenant-b", 9),
    ] {
        let owner = tenant(owner);
        processing(subject, &design(id), &owner).await;
        store
            .mark_completed(&design(id), &owner, &completed(cents * 100, cents, json!({})))
            .await
            .expect("completed");
    }
    let costs = store.cost_by_tenant(before, 10).await.expect("costs");
    let summary: Vec<(String, u64, i64, i64)> = costs
        .into_iter()
        .map(|cost| (cost.tenant_id, cost.designs, cost.cost_cents, cost.cost_tokens))
        .collect();
    assert_eq!(
        summary,
        [("tenant-b".to_owned(), 1, 9, 900), ("tenant-a".to_owned(), 2, 7, 700)]
    );
    assert_eq!(store.cost_by_tenant(before, 1).await.expect("costs").len(), 1);
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert!(store.cost_by_tenant(later, 10).await.expect("costs").is_empty());
}

pub async fn without_a_tenant_column_costs_have_no_tenants(subject: &dyn DesignStoreUnderTest) {
    let owner = tenant("tenant-a");
    processing(subject, &design("d-1"), &owner).await;
    let store = subject.store();
    store
        .mark_completed(&design("d-1"), &owner, &completed(100, 1, json!({})))
        .await
        .expect("completed");
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    assert!(store.cost_by_tenant(since, 10).await.expect("costs").is_empty());
}

/// One test per suite function, mode and tenant column (`in "name"`; `tenantId` when not given,
/// `""` for none) for an adapter module that defines
/// `async fn open(MissingDesign, Option<TenantColumn>) -> impl DesignStoreUnderTest`; the
/// fixture cleans up in `Drop`.
macro_rules! design_store_conformance {
    (@call $test:ident) => { super::$test };
    (@call $test:ident $suite:ident) => { super::$suite };
    (@column) => { "tenantId" };
    (@column $column:literal) => { $column };
    () => {
        design_store_conformance! {
            pending_row_moves_to_processing_then_completed: Reject,
            processing_row_moves_to_failed_with_the_reason: Reject,
            another_tenants_row_is_not_found_and_left_unchanged: Reject,
            another_tenants_row_is_not_found_and_left_unchanged_in_create_mode
                => another_tenants_row_is_not_found_and_left_unchanged: Create,
            a_paid_call_is_counted_once_and_a_second_call_adds: Reject,
            cost_is_never_lowered_by_completion_or_failure: Reject,
            completion_replaces_top_level_metadata_keys_and_keeps_the_others: Reject,
            failure_stores_the_error_and_keeps_cost_and_other_metadata: Reject,
            completion_clears_the_error_of_an_earlier_failure: Reject,
            reject_mode_refuses_a_missing_row: Reject,
            create_mode_creates_a_missing_row_for_the_tenant: Create,
            an_unknown_id_reads_as_none: Reject,
            a_custom_tenant_column_owns_the_row
                => pending_row_moves_to_processing_then_completed: Reject in "organizationId",
            a_custom_tenant_column_refuses_another_tenant
                => another_tenants_row_is_not_found_and_left_unchanged: Reject in "organizationId",
            create_mode_writes_the_owner_to_the_tenant_column: Create,
            a_custom_tenant_column_is_written_when_a_row_is_created
                => create_mode_writes_the_owner_to_the_tenant_column: Create in "organizationId",
            without_a_tenant_column_rows_are_matched_by_id_only: Reject in "",
            create_mode_without_a_tenant_column_creates_a_row_without_an_owner: Create in "",
            recent_rows_come_newest_first_by_status_in_pages: Reject,
            cost_by_tenant_sums_the_period_most_expensive_first: Reject,
            without_a_tenant_column_costs_have_no_tenants: Reject in "",
        }
    };
    ($($test:ident $(=> $suite:ident)?: $mode:ident $(in $column:literal)?),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let column = super::tenant_column(design_store_conformance!(@column $($column)?));
                let subject = open(MissingDesign::$mode, column).await;
                design_store_conformance!(@call $test $($suite)?)(&subject).await;
            }
        )*
    };
}

mod memory {
    use design_render::config::TenantColumn;
    use design_render::job::{DesignId, TenantId};
    use design_render::store::memory::MemoryDesignStore;
    use design_render::store::{DesignStore, MissingDesign};

    use super::DesignStoreUnderTest;

    struct Memory(MemoryDesignStore);

    #[async_trait::async_trait]
    impl DesignStoreUnderTest for Memory {
        fn store(&self) -> &dyn DesignStore {
            &self.0
        }

        async fn insert_pending(&self, design: &DesignId, tenant: &TenantId) {
            self.0.insert_pending(design, tenant);
        }

        async fn stored_owner(&self, design: &DesignId) -> Option<String> {
            let row = self.0.get(design).await.expect("get");
            row.and_then(|row| row.tenant_id)
        }
    }

    async fn open(missing: MissingDesign, tenant_column: Option<TenantColumn>) -> Memory {
        Memory(MemoryDesignStore::with_tenant_column(missing, tenant_column.as_ref()))
    }

    design_store_conformance!();
}

mod sqlite {
    use design_render::config::{Migrations, TenantColumn};
    use design_render::job::{DesignId, TenantId};
    use design_render::store::sqlite::{SqliteDesignStore, SqliteSettings};
    use design_render::store::{DesignStore, MissingDesign};

    use super::DesignStoreUnderTest;

    /// The store plus a pool of its own on the same file, for the rows the backend would insert.
    struct Sqlite {
        store: SqliteDesignStore,
        seed: sqlx::SqlitePool,
        tenant_column: Option<TenantColumn>,
        _dir: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl DesignStoreUnderTest for Sqlite {
        fn store(&self) -> &dyn DesignStore {
            &self.store
        }

        async fn insert_pending(&self, design: &DesignId, tenant: &TenantId) {
            // Without a tenant column `?2` is bound but unused.
            let owner = match &self.tenant_column {
                Some(column) => format!(r#", "{}""#, column.as_str()),
                None => String::new(),
            };
            let owner_value = if self.tenant_column.is_some() { ", ?2" } else { "" };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"INSERT INTO "Design" ("id", "status", "updatedAt"{owner})
                   VALUES (?1, 'PENDING', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'){owner_value})"#
            )))
            .bind(design.as_str())
            .bind(tenant.as_str())
            .execute(&self.seed)
            .await
            .expect("insert pending design");
        }

        async fn stored_owner(&self, design: &DesignId) -> Option<String> {
            let column = self.tenant_column.as_ref()?;
            let statement = format!(r#"SELECT "{}" FROM "Design" WHERE "id" = ?1"#, column.as_str());
            sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
                .bind(design.as_str())
                .fetch_optional(&self.seed)
                .await
                .expect("read the tenant column")
                .flatten()
        }
    }

    async fn open(missing: MissingDesign, tenant_column: Option<TenantColumn>) -> Sqlite {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("designs.sqlite");
        let settings = SqliteSettings {
            path: &path,
            tenant_column: tenant_column.clone(),
            migrations: Migrations::Auto,
        };
        let store = SqliteDesignStore::open_with(settings, missing)
            .await
            .expect("open sqlite");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(std::time::Duration::from_secs(5));
        let seed = sqlx::SqlitePool::connect_with(options).await.expect("seed pool");
        Sqlite {
            store,
            seed,
            tenant_column,
            _dir: dir,
        }
    }

    design_store_conformance!();
}

mod postgres {
    use design_render::config::TenantColumn;
    use design_render::job::{DesignId, TenantId};
    use design_render::store::{DesignStore, MissingDesign};

    use super::DesignStoreUnderTest;
    use crate::helpers::PgSchema;

    #[async_trait::async_trait]
    impl DesignStoreUnderTest for PgSchema {
        fn store(&self) -> &dyn DesignStore {
            &self.store
        }

        async fn insert_pending(&self, design: &DesignId, tenant: &TenantId) {
            self.insert_design(design.as_str(), tenant.as_str()).await;
        }

        async fn stored_owner(&self, design: &DesignId) -> Option<String> {
            PgSchema::stored_owner(self, design.as_str()).await
        }
    }

    /// A store on a fresh schema of its own, dropped with the fixture.
    async fn open(missing: MissingDesign, tenant_column: Option<TenantColumn>) -> PgSchema {
        PgSchema::with_tenant_column(missing, tenant_column).await
    }

    design_store_conformance!();
}
