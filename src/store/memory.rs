//! In-memory Design rows: the [`DesignStore`] twin of the SQL adapters, for tests and local runs.
//!
//! It owns nothing but a map of rows behind a short-lived mutex. Every write follows the SQL
//! adapters statement by statement: a row of another tenant is refused with
//! [`StoreError::NotFound`] and left untouched (unless the store was built without a tenant
//! column, when rows are matched by id only), completion and failure merge `metadata` by
//! replacing top-level keys (completion also drops an earlier `error`), cost columns are never
//! lowered by them, and paid calls go through the shared `merge_paid_call` so a call id counts
//! once. The conformance
//! suite in `tests/it/conformance` holds all three adapters to the same behaviour.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    CompletedRender, CostLedger, DesignRow, DesignStatus, DesignStore, FailedRender, MissingDesign, PaidCallEntry,
    StoreError, TenantCost,
};
use crate::config::TenantColumn;
use crate::job::{DesignId, TenantId};

/// Design rows kept in process memory, keyed by id.
pub struct MemoryDesignStore {
    missing: MissingDesign,
    /// Whether rows are owned: `false` is the SQL adapters without a tenant column, where any
    /// tenant's job writes the row with that id and rows read back without a tenant.
    owner_checked: bool,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Rows by id. A `BTreeMap` so [`rows`](MemoryDesignStore::rows) lists them in a stable order.
    rows: BTreeMap<String, DesignRow>,
    /// When each row was last written, and a sequence number that orders writes made within
    /// the same clock tick (the SQL adapters' `"updatedAt"`).
    updated: BTreeMap<String, (chrono::DateTime<chrono::Utc>, u64)>,
    writes: u64,
}

impl Table {
    fn touch(&mut self, id: &str) {
        self.writes += 1;
        self.updated.insert(id.to_owned(), (chrono::Utc::now(), self.writes));
    }
}

impl MemoryDesignStore {
    /// An empty store; `missing` decides what [`DesignStore::mark_processing`] does with an
    /// unknown id, as for the SQL adapters.
    pub fn new(missing: MissingDesign) -> Self {
        Self::with_tenant_column(missing, Some(&TenantColumn::default()))
    }

    /// An empty store that checks ownership only when `tenant_column` is set, as the SQL
    /// adapters do. The name itself does not matter here: rows keep their tenant in
    /// [`DesignRow::tenant_id`].
    pub fn with_tenant_column(missing: MissingDesign, tenant_column: Option<&TenantColumn>) -> Self {
        Self {
            missing,
            owner_checked: tenant_column.is_some(),
            table: Mutex::new(Table::default()),
        }
    }

    /// Adds a PENDING row owned by `tenant` (no owner when the store checks none), as the backend
    /// does before it enqueues a job. An existing row with this id is replaced.
    pub fn insert_pending(&self, design: &DesignId, tenant: &TenantId) {
        self.insert_row(self.fresh(design, tenant, DesignStatus::Pending));
    }

    /// Adds (or replaces) a row exactly as given, for tests that start from an unusual state,
    /// such as a row without a tenant or with metadata written by the backend.
    fn insert_row(&self, row: DesignRow) {
        let mut table = self.lock();
        table.touch(&row.id);
        table.rows.insert(row.id.clone(), row);
    }

    /// Every row, ordered by id.
    pub fn rows(&self) -> Vec<DesignRow> {
        self.lock().rows.values().cloned().collect()
    }

    /// The rows still PROCESSING. A finished test run should leave none: each job ends in
    /// COMPLETED or FAILED, or is handed back while its row waits for the retry.
    pub fn processing_rows(&self) -> Vec<DesignRow> {
        self.lock()
            .rows
            .values()
            .filter(|row| row.status == DesignStatus::Processing)
            .cloned()
            .collect()
    }

    /// A row as first written; without a tenant column there is nowhere to keep the owner.
    fn fresh(&self, design: &DesignId, tenant: &TenantId, status: DesignStatus) -> DesignRow {
        let mut row = DesignRow::fresh(design, tenant, status);
        if !self.owner_checked {
            row.tenant_id = None;
        }
        row
    }

    /// The SQL adapters compare the tenant column with `=`, so a row without a tenant belongs to
    /// nobody; without a column every row matches.
    fn owned_by(&self, row: &DesignRow, tenant: &TenantId) -> bool {
        !self.owner_checked || row.tenant_id.as_deref() == Some(tenant.as_str())
    }

    /// A poisoned lock only means another thread panicked between two plain field writes; the
    /// map itself is still consistent, so the rows stay usable.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` on the row when it exists and belongs to `tenant`, as the SQL adapters'
    /// `WHERE "id" = … AND <tenant column> = …` does; otherwise the row is left as it was.
    fn update<T>(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        change: impl FnOnce(&mut DesignRow) -> T,
    ) -> Result<T, StoreError> {
        let mut table = self.lock();
        let changed = match table.rows.get_mut(design.as_str()) {
            Some(row) if self.owned_by(row, tenant) => change(row),
            _ => return Err(not_found(design, tenant)),
        };
        table.touch(design.as_str());
        Ok(changed)
    }
}

#[async_trait::async_trait]
impl DesignStore for MemoryDesignStore {
    async fn mark_processing(&self, design: &DesignId, tenant: &TenantId) -> Result<(), StoreError> {
        let mut table = self.lock();
        match table.rows.get_mut(design.as_str()) {
            Some(row) if self.owned_by(row, tenant) => row.status = DesignStatus::Processing,
            Some(_) => return Err(not_found(design, tenant)),
            None => match self.missing {
                MissingDesign::Create => {
                    let row = self.fresh(design, tenant, DesignStatus::Processing);
                    table.rows.insert(design.as_str().to_owned(), row);
                }
                MissingDesign::Reject => return Err(not_found(design, tenant)),
            },
        }
        table.touch(design.as_str());
        Ok(())
    }

    async fn mark_completed(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        render: &CompletedRender,
    ) -> Result<(), StoreError> {
        self.update(design, tenant, |row| {
            row.status = DesignStatus::Completed;
            row.composite_texture_url = Some(render.composite_texture_url.clone());
            row.preview_url = Some(render.preview_url.clone());
            row.high_res_url = Some(render.high_res_url.clone());
            row.cost_tokens = row.cost_tokens.max(render.cost_tokens);
            row.cost_cents = row.cost_cents.max(render.cost_cents);
            // A completed render drops the `error` a failed attempt left.
            let mut metadata = row.metadata.take();
            if let Some(serde_json::Value::Object(map)) = &mut metadata {
                map.remove("error");
            }
            row.metadata = Some(merge_top_level(metadata, &render.metadata));
        })
    }

    async fn mark_failed(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        failure: &FailedRender,
    ) -> Result<(), StoreError> {
        let patch = super::failure_metadata(failure);
        self.update(design, tenant, |row| {
            row.status = DesignStatus::Failed;
            row.cost_tokens = row.cost_tokens.max(failure.cost_tokens);
            row.cost_cents = row.cost_cents.max(failure.cost_cents);
            row.metadata = Some(merge_top_level(row.metadata.take(), &patch));
        })
    }

    async fn get(&self, design: &DesignId) -> Result<Option<DesignRow>, StoreError> {
        Ok(self.lock().rows.get(design.as_str()).cloned())
    }

    async fn recent(&self, status: DesignStatus, offset: usize, limit: usize) -> Result<Vec<DesignRow>, StoreError> {
        let table = self.lock();
        let mut matching: Vec<(&(chrono::DateTime<chrono::Utc>, u64), &DesignRow)> = table
            .rows
            .values()
            .filter(|row| row.status == status)
            .filter_map(|row| table.updated.get(&row.id).map(|updated| (updated, row)))
            .collect();
        matching.sort_by(|a, b| b.0.cmp(a.0));
        Ok(matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, row)| row.clone())
            .collect())
    }

    async fn cost_by_tenant(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TenantCost>, StoreError> {
        if !self.owner_checked {
            return Ok(Vec::new());
        }
        let table = self.lock();
        let mut by_tenant: BTreeMap<&str, TenantCost> = BTreeMap::new();
        for row in table.rows.values() {
            let (Some(tenant), Some((updated, _))) = (row.tenant_id.as_deref(), table.updated.get(&row.id)) else {
                continue;
            };
            if *updated < since {
                continue;
            }
            let entry = by_tenant.entry(tenant).or_insert_with(|| TenantCost {
                tenant_id: tenant.to_owned(),
                designs: 0,
                cost_cents: 0,
                cost_tokens: 0,
            });
            entry.designs += 1;
            entry.cost_cents += i64::from(row.cost_cents);
            entry.cost_tokens += i64::from(row.cost_tokens);
        }
        let mut costs: Vec<TenantCost> = by_tenant.into_values().collect();
        costs.sort_by(|a, b| {
            b.cost_cents
                .cmp(&a.cost_cents)
                .then_with(|| a.tenant_id.cmp(&b.tenant_id))
        });
        costs.truncate(limit);
        Ok(costs)
    }

    async fn record_paid_call(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        call: &PaidCallEntry,
    ) -> Result<CostLedger, StoreError> {
        // Reading the ledger and writing it back under one lock is what the SQL adapters'
        // transaction (FOR UPDATE / BEGIN IMMEDIATE) guarantees: no concurrent recorder is lost.
        self.update(design, tenant, |row| {
            let ledger = super::merge_paid_call(row.metadata.as_ref(), call);
            row.cost_tokens = ledger.cost_tokens;
            row.cost_cents = ledger.cost_cents;
            let cost = serde_json::json!({ "cost": ledger.json });
            row.metadata = Some(merge_top_level(row.metadata.take(), &cost));
            ledger
        })
    }
}

fn not_found(design: &DesignId, tenant: &TenantId) -> StoreError {
    StoreError::NotFound {
        design: design.clone(),
        tenant: tenant.clone(),
    }
}

/// PostgreSQL's `COALESCE(metadata, '{}') || patch` for objects: each top-level key of `patch`
/// replaces the stored one whole (nested objects are not merged), every other key is kept. A
/// stored value that is not an object counts as empty, and a patch that is not an object
/// replaces the metadata; the worker only ever writes objects.
fn merge_top_level(existing: Option<serde_json::Value>, patch: &serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut merged = match existing {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in patch {
        merged.insert(key.clone(), value.clone());
    }
    serde_json::Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_keys_are_replaced_whole_and_others_kept() {
        let merged = merge_top_level(
            Some(serde_json::json!({"timings": {"a": 1}, "provider": "x", "gone": null})),
            &serde_json::json!({"timings": {"b": 2}, "extra": null}),
        );
        assert_eq!(
            merged,
            serde_json::json!({"timings": {"b": 2}, "provider": "x", "gone": null, "extra": null})
        );
        assert_eq!(
            merge_top_level(None, &serde_json::json!({"a": 1})),
            serde_json::json!({"a": 1})
        );
    }

    #[tokio::test]
    async fn helpers_list_rows_and_the_ones_left_processing() {
        let store = MemoryDesignStore::new(MissingDesign::Reject);
        let tenant = TenantId::parse("tenant-1").unwrap();
        let (first, second) = (DesignId::parse("d-1").unwrap(), DesignId::parse("d-2").unwrap());
        store.insert_pending(&first, &tenant);
        store.insert_pending(&second, &tenant);
        store.mark_processing(&second, &tenant).await.unwrap();
        assert_eq!(store.rows().len(), 2);
        let processing: Vec<String> = store.processing_rows().into_iter().map(|row| row.id).collect();
        assert_eq!(processing, vec!["d-2".to_owned()]);
    }
}
