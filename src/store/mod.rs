//! The Design-record port: status transitions of one Design row.
//!
//! The schema is the backend's Prisma `Design` model (table `"Design"`, camelCase columns, the
//! `DesignStatus` enum) plus the render columns. Adapters: PostgreSQL (shared with the backend),
//! SQLite (embedded, for the one-shot CLI) and memory (tests and local runs, same semantics).
//! Only this module tree contains SQL.
//!
//! Ownership: every write names the job's tenant, and a row is written only when the configured
//! tenant column (`DESIGN_TENANT_COLUMN`, a [`TenantColumn`]) holds that tenant. Without a
//! column the queue is trusted and rows are matched by id alone. The column name is a validated
//! identifier from the configuration, always double-quoted in SQL, never taken from a job.

pub mod memory;
pub mod postgres;
pub mod sqlite;

use crate::config::TenantColumn;
use crate::error_code::ErrorCode;
use crate::job::{DesignId, TenantId};

/// Status values, spelled as in the `DesignStatus` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesignStatus {
    Pending,
    Processing,
    Completed,
    Failed,
}

impl DesignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "PENDING" => Self::Pending,
            "PROCESSING" => Self::Processing,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            _ => return None,
        })
    }
}

/// What to do when the Design row does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDesign {
    /// Create it (the one-shot CLI, where nobody else made the row).
    Create,
    /// Fail permanently (the queue worker: the backend creates rows before enqueueing).
    Reject,
}

/// The columns written when a render completes.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedRender {
    pub composite_texture_url: String,
    pub preview_url: String,
    pub high_res_url: String,
    pub cost_tokens: i32,
    pub cost_cents: i32,
    /// Merged into the row's existing `metadata` object (top-level keys replaced).
    pub metadata: serde_json::Value,
}

/// The columns written when a render fails for good.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRender {
    pub code: ErrorCode,
    pub message: String,
    /// Cost already spent on paid calls before the failure.
    pub cost_tokens: i32,
    pub cost_cents: i32,
    /// What each provider of the chain did, when they all failed; stored as
    /// `metadata.providerAttempts`, the same key a completed render uses.
    pub provider_attempts: Option<serde_json::Value>,
}

/// A Design row as this worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DesignRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub status: DesignStatus,
    pub composite_texture_url: Option<String>,
    pub preview_url: Option<String>,
    pub high_res_url: Option<String>,
    pub cost_tokens: i32,
    pub cost_cents: i32,
    pub metadata: Option<serde_json::Value>,
}

impl DesignRow {
    /// Tokens of the paid calls in `metadata.cost.calls` that the job `job_id` recorded (the
    /// per-job cap counts these; calls of other jobs of the same design do not).
    pub fn tokens_recorded_by_job(&self, job_id: &str) -> u64 {
        let calls = self
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.get("cost"))
            .and_then(|cost| cost.get("calls"))
            .and_then(serde_json::Value::as_object);
        calls.map_or(0, |calls| {
            calls
                .values()
                .filter(|call| call.get("jobId").and_then(serde_json::Value::as_str) == Some(job_id))
                .map(|call| call.get("tokens").and_then(serde_json::Value::as_u64).unwrap_or(0))
                .fold(0, u64::saturating_add)
        })
    }

    /// A row as first written: owned by `tenant`, no outputs, no cost, no metadata.
    pub fn fresh(design: &DesignId, tenant: &TenantId, status: DesignStatus) -> Self {
        Self {
            id: design.as_str().to_owned(),
            tenant_id: Some(tenant.as_str().to_owned()),
            status,
            composite_texture_url: None,
            preview_url: None,
            high_res_url: None,
            cost_tokens: 0,
            cost_cents: 0,
            metadata: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row with this id for this tenant (it does not exist, or another tenant owns it).
    #[error("design `{design}` was not found for tenant `{tenant}`")]
    NotFound { design: DesignId, tenant: TenantId },
    /// The database could not be reached or failed; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The schema is not what we need (no `"Design"` table with `RUN_MIGRATIONS=false`, a bad
    /// type, an unknown status).
    #[error("database schema problem: {0}")]
    Schema(String),
    /// The `"Design"` table lacks columns the worker needs and `RUN_MIGRATIONS` (`auto` or
    /// `false`) does not let it add them. Found at start-up; a configuration problem that no
    /// retry fixes. `statements` are the `ALTER TABLE` statements that add them.
    #[error("{}", missing_columns_message(columns, statements))]
    MissingColumns {
        columns: Vec<String>,
        statements: Vec<String>,
    },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn from_sqlx(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("42")) => {
                Self::Schema(error.to_string())
            }
            sqlx::Error::ColumnNotFound(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::TypeNotFound { .. } => {
                Self::Schema(error.to_string())
            }
            _ => Self::Unavailable(error.to_string()),
        }
    }
}

/// Status transitions of Design rows.
#[async_trait::async_trait]
pub trait DesignStore: Send + Sync {
    /// Sets PROCESSING. Fails with [`StoreError::NotFound`] when the row is missing (and the store
    /// was built with [`MissingDesign::Reject`]) or belongs to another tenant.
    async fn mark_processing(&self, design: &DesignId, tenant: &TenantId) -> Result<(), StoreError>;

    /// Sets COMPLETED with URLs, cost and metadata.
    async fn mark_completed(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        render: &CompletedRender,
    ) -> Result<(), StoreError>;

    /// Sets FAILED with the reason (kept in `metadata.error`).
    async fn mark_failed(&self, design: &DesignId, tenant: &TenantId, failure: &FailedRender)
    -> Result<(), StoreError>;

    /// Reads one row regardless of tenant (diagnostics and tests).
    async fn get(&self, design: &DesignId) -> Result<Option<DesignRow>, StoreError>;

    /// Rows in `status`, most recently updated first, `limit` of them after skipping `offset`
    /// (the dashboard's pages; never an unbounded read).
    async fn recent(&self, status: DesignStatus, offset: usize, limit: usize) -> Result<Vec<DesignRow>, StoreError>;

    /// Per tenant, what rows updated at or after `since` cost, most expensive first, at most
    /// `limit` tenants. Empty without a tenant column (rows then have no owner).
    async fn cost_by_tenant(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TenantCost>, StoreError>;

    /// Records one paid provider call in `metadata.cost.calls[call_id]` unless that id is
    /// already there, then sets `costTokens`/`costCents` (rounded up) from the merged set, in
    /// one transaction. Recording the same call twice counts it once; calls of earlier
    /// attempts are kept. `mark_completed`/`mark_failed` never lower these columns.
    async fn record_paid_call(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        call: &PaidCallEntry,
    ) -> Result<CostLedger, StoreError>;
}

/// What one tenant's designs cost over a period ([`DesignStore::cost_by_tenant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCost {
    pub tenant_id: String,
    /// Rows updated in the period.
    pub designs: u64,
    pub cost_cents: i64,
    pub cost_tokens: i64,
}

/// One paid call as stored in `metadata.cost.calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct PaidCallEntry {
    pub call_id: String,
    pub tokens: u64,
    /// Exact cost in micro-cents (10^-8 USD).
    pub micro_cents: u64,
    /// The stored object (provider, model, usage, breakdown); `tokens` and `microCents` are
    /// added to it.
    pub details: serde_json::Value,
}

/// The merged cost of a design after [`DesignStore::record_paid_call`].
#[derive(Debug, Clone, PartialEq)]
pub struct CostLedger {
    pub cost_tokens: i32,
    pub cost_cents: i32,
    /// The whole `metadata.cost` object.
    pub json: serde_json::Value,
}

/// Merges `call` into the `cost` member of `metadata` and recomputes the totals. Shared by the
/// SQL adapters, which run it inside a transaction.
pub(crate) fn merge_paid_call(metadata: Option<&serde_json::Value>, call: &PaidCallEntry) -> CostLedger {
    let mut calls = metadata
        .and_then(|m| m.get("cost"))
        .and_then(|c| c.get("calls"))
        .and_then(serde_json::Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !calls.contains_key(&call.call_id) {
        let mut entry = match &call.details {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        entry.insert("tokens".into(), call.tokens.into());
        entry.insert("microCents".into(), call.micro_cents.into());
        calls.insert(call.call_id.clone(), serde_json::Value::Object(entry));
    }
    let field =
        |entry: &serde_json::Value, name: &str| entry.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let tokens: u64 = calls.values().map(|e| field(e, "tokens")).fold(0, u64::saturating_add);
    let micro_cents: u64 = calls
        .values()
        .map(|e| field(e, "microCents"))
        .fold(0, u64::saturating_add);
    let cents = crate::budget::MicroCents(micro_cents).cents_rounded_up();
    CostLedger {
        cost_tokens: i32::try_from(tokens).unwrap_or(i32::MAX),
        cost_cents: i32::try_from(cents).unwrap_or(i32::MAX),
        json: serde_json::json!({
            "calls": calls,
            "totalTokens": tokens,
            "totalMicroCents": micro_cents,
            "totalCents": cents,
            "currency": "USD",
            "unit": "microCents = 1e-8 USD",
        }),
    }
}

/// The render columns this worker needs beyond Prisma's base model and the tenant column, with
/// their SQL types for (PostgreSQL, SQLite).
const RENDER_COLUMNS: &[(&str, &str, &str)] = &[
    ("metadata", "JSONB", "TEXT"),
    ("compositeTextureUrl", "TEXT", "TEXT"),
    ("previewUrl", "TEXT", "TEXT"),
    ("highResUrl", "TEXT", "TEXT"),
    ("costTokens", "INTEGER NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"),
    ("costCents", "INTEGER NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"),
];

/// A column the worker needs, with its type in each SQL dialect.
pub(crate) struct RequiredColumn {
    pub(crate) name: String,
    pub(crate) postgres_type: &'static str,
    pub(crate) sqlite_type: &'static str,
}

/// The columns migrations create or check: the tenant column (when ownership is checked) and the
/// render columns.
pub(crate) fn required_columns(tenant_column: Option<&TenantColumn>) -> Vec<RequiredColumn> {
    let tenant = tenant_column.map(|column| RequiredColumn {
        name: column.as_str().to_owned(),
        postgres_type: "TEXT",
        sqlite_type: "TEXT",
    });
    tenant
        .into_iter()
        .chain(
            RENDER_COLUMNS
                .iter()
                .map(|(name, postgres_type, sqlite_type)| RequiredColumn {
                    name: (*name).to_owned(),
                    postgres_type,
                    sqlite_type,
                }),
        )
        .collect()
}

/// `name` as a double-quoted SQL identifier. Names come from constants and from a validated
/// [`TenantColumn`] (letters, digits and `_` only); doubling quotes keeps any other name inert.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The error for `required` columns absent from `existing`, with the `ALTER TABLE` statements
/// (`type_of` picks the dialect's type); `None` when nothing is missing.
pub(crate) fn missing_columns(
    required: &[RequiredColumn],
    existing: &[String],
    type_of: impl Fn(&RequiredColumn) -> &'static str,
) -> Option<StoreError> {
    let missing: Vec<&RequiredColumn> = required
        .iter()
        .filter(|column| !existing.contains(&column.name))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(StoreError::MissingColumns {
        columns: missing.iter().map(|column| column.name.clone()).collect(),
        statements: missing
            .iter()
            .map(|column| {
                format!(
                    r#"ALTER TABLE "Design" ADD COLUMN {} {};"#,
                    quoted(&column.name),
                    type_of(column)
                )
            })
            .collect(),
    })
}

fn missing_columns_message(columns: &[String], statements: &[String]) -> String {
    let names: Vec<String> = columns.iter().map(|name| quoted(name)).collect();
    format!(
        "the \"Design\" table lacks the column(s) {} this worker needs, and RUN_MIGRATIONS \
         (auto or false) does not let it change a table that already exists. Add them with your \
         schema migrations (e.g. Prisma) or run:\n  {}\nor set RUN_MIGRATIONS=true to let the \
         worker add them (it only adds columns, never drops, renames or rewrites)",
        names.join(", "),
        statements.join("\n  ")
    )
}

fn failure_metadata(failure: &FailedRender) -> serde_json::Value {
    let mut metadata = serde_json::json!({
        "error": {
            "code": failure.code,
            "message": failure.message,
            "failedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    });
    if let (Some(attempts), Some(object)) = (&failure.provider_attempts, metadata.as_object_mut()) {
        object.insert("providerAttempts".into(), attempts.clone());
    }
    metadata
}
