//! Embedded SQLite store for the one-shot CLI: the same `"Design"` table and column names as
//! the PostgreSQL schema, with the status kept as checked text.
//!
//! Metadata merges copy PostgreSQL's `jsonb ||`: each top-level key of the patch replaces the
//! stored value whole and the other keys are kept. SQLite's `json_patch` would not do: it merges
//! nested objects key by key and deletes keys whose new value is null. The merge is spelled with
//! `json_each`, re-marking objects, arrays and booleans as JSON so they are not stored as text
//! or integers.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row};

use super::{
    CompletedRender, CostLedger, DesignRow, DesignStatus, DesignStore, FailedRender, MissingDesign, PaidCallEntry,
    RENDER_COLUMNS, StoreError,
};
use crate::job::{DesignId, TenantId};

/// The stored `"metadata"` with the top-level keys of the JSON object bound at `$patch` replaced,
/// as PostgreSQL's `COALESCE("metadata", '{}') || patch` does. A string literal, so the statement
/// stays a constant.
macro_rules! merged_metadata {
    ($patch:literal) => {
        concat!(
            r#"(SELECT json_group_object("key", CASE "type"
                    WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')
                    WHEN 'object' THEN json("value") WHEN 'array' THEN json("value")
                    ELSE "value" END)
                FROM (SELECT "key", "value", "type" FROM json_each(COALESCE("metadata", '{}'))
                      WHERE "key" NOT IN (SELECT "key" FROM json_each(json("#,
            $patch,
            r#")))
                      UNION ALL SELECT "key", "value", "type" FROM json_each(json("#,
            $patch,
            r#"))))"#
        )
    };
}

pub struct SqliteDesignStore {
    pool: SqlitePool,
    missing: MissingDesign,
}

impl SqliteDesignStore {
    /// Opens (creating if needed) the database file and brings the schema up to date.
    pub async fn open(path: &Path, missing: MissingDesign) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        // Migrate on a connection of its own before the pool opens any: a pooled connection that
        // prepared a statement against the old schema would report columns added after it.
        let mut connection = SqliteConnection::connect_with(&options)
            .await
            .map_err(StoreError::from_sqlx)?;
        Self::migrate(&mut connection).await?;
        connection.close().await.map_err(StoreError::from_sqlx)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(Self { pool, missing })
    }

    /// Creates the table when missing, then adds any missing render column. Never drops,
    /// renames or rewrites anything.
    async fn migrate(connection: &mut SqliteConnection) -> Result<(), StoreError> {
        sqlx::query(
            r#"CREATE TABLE IF NOT EXISTS "Design" (
                "id" TEXT NOT NULL PRIMARY KEY,
                "status" TEXT NOT NULL DEFAULT 'PENDING'
                    CHECK ("status" IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')),
                "createdAt" TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                "updatedAt" TEXT NOT NULL
            )"#,
        )
        .execute(&mut *connection)
        .await
        .map_err(StoreError::from_sqlx)?;
        let existing: Vec<String> = sqlx::query(r#"SELECT "name" FROM pragma_table_info('Design')"#)
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        for (column, _, sqlite_type) in RENDER_COLUMNS {
            if !existing.iter().any(|name| name == column) {
                // Identifiers and labels come from constants in this crate, never from input.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    r#"ALTER TABLE "Design" ADD COLUMN "{column}" {sqlite_type}"#
                )))
                .execute(&mut *connection)
                .await
                .map_err(StoreError::from_sqlx)?;
            }
        }
        Ok(())
    }

    fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn not_found(design: &DesignId, tenant: &TenantId) -> StoreError {
        StoreError::NotFound {
            design: design.clone(),
            tenant: tenant.clone(),
        }
    }
}

#[async_trait::async_trait]
impl DesignStore for SqliteDesignStore {
    async fn mark_processing(&self, design: &DesignId, tenant: &TenantId) -> Result<(), StoreError> {
        let result = match self.missing {
            MissingDesign::Create => sqlx::query(
                r#"INSERT INTO "Design" ("id", "tenantId", "status", "updatedAt") VALUES (?1, ?2, 'PROCESSING', ?3)
                   ON CONFLICT ("id") DO UPDATE SET "status" = 'PROCESSING', "updatedAt" = ?3
                   WHERE "Design"."tenantId" IS ?2"#,
            ),
            MissingDesign::Reject => sqlx::query(
                r#"UPDATE "Design" SET "status" = 'PROCESSING', "updatedAt" = ?3 WHERE "id" = ?1 AND "tenantId" IS ?2"#,
            ),
        }
        .bind(design.as_str())
        .bind(tenant.as_str())
        .bind(Self::now())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        if result.rows_affected() == 0 {
            return Err(Self::not_found(design, tenant));
        }
        Ok(())
    }

    async fn mark_completed(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        render: &CompletedRender,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(concat!(
            r#"UPDATE "Design" SET "status" = 'COMPLETED', "compositeTextureUrl" = ?3, "previewUrl" = ?4,
                   "highResUrl" = ?5, "costTokens" = MAX("costTokens", ?6), "costCents" = MAX("costCents", ?7),
                   "metadata" = "#,
            merged_metadata!("?8"),
            r#",
                   "updatedAt" = ?9
               WHERE "id" = ?1 AND "tenantId" IS ?2"#,
        ))
        .bind(design.as_str())
        .bind(tenant.as_str())
        .bind(&render.composite_texture_url)
        .bind(&render.preview_url)
        .bind(&render.high_res_url)
        .bind(render.cost_tokens)
        .bind(render.cost_cents)
        .bind(render.metadata.to_string())
        .bind(Self::now())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        if result.rows_affected() == 0 {
            return Err(Self::not_found(design, tenant));
        }
        Ok(())
    }

    async fn mark_failed(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        failure: &FailedRender,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(concat!(
            r#"UPDATE "Design" SET "status" = 'FAILED', "costTokens" = MAX("costTokens", ?3),
                   "costCents" = MAX("costCents", ?4),
                   "metadata" = "#,
            merged_metadata!("?5"),
            r#",
                   "updatedAt" = ?6
               WHERE "id" = ?1 AND "tenantId" IS ?2"#,
        ))
        .bind(design.as_str())
        .bind(tenant.as_str())
        .bind(failure.cost_tokens)
        .bind(failure.cost_cents)
        .bind(super::failure_metadata(failure).to_string())
        .bind(Self::now())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        if result.rows_affected() == 0 {
            return Err(Self::not_found(design, tenant));
        }
        Ok(())
    }

    async fn record_paid_call(
        &self,
        design: &DesignId,
        tenant: &TenantId,
        call: &PaidCallEntry,
    ) -> Result<CostLedger, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        // IMMEDIATE takes the write lock up front, so two writers cannot both read the old
        // ledger and then overwrite each other.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
        let result = async {
            let row = sqlx::query(r#"SELECT "metadata" FROM "Design" WHERE "id" = ?1 AND "tenantId" IS ?2"#)
                .bind(design.as_str())
                .bind(tenant.as_str())
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::from_sqlx)?
                .ok_or_else(|| Self::not_found(design, tenant))?;
            let metadata: Option<String> = row.try_get("metadata").map_err(StoreError::from_sqlx)?;
            let metadata = metadata.and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            let ledger = super::merge_paid_call(metadata.as_ref(), call);
            sqlx::query(
                r#"UPDATE "Design" SET "costTokens" = ?3, "costCents" = ?4,
                       "metadata" = json_set(COALESCE("metadata", '{}'), '$.cost', json(?5)), "updatedAt" = ?6
                   WHERE "id" = ?1 AND "tenantId" IS ?2"#,
            )
            .bind(design.as_str())
            .bind(tenant.as_str())
            .bind(ledger.cost_tokens)
            .bind(ledger.cost_cents)
            .bind(ledger.json.to_string())
            .bind(Self::now())
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
            Ok(ledger)
        }
        .await;
        let finish = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(finish)
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
        result
    }

    async fn get(&self, design: &DesignId) -> Result<Option<DesignRow>, StoreError> {
        let row = sqlx::query(
            r#"SELECT "id", "tenantId", "status", "compositeTextureUrl", "previewUrl", "highResUrl",
                      "costTokens", "costCents", "metadata"
               FROM "Design" WHERE "id" = ?1"#,
        )
        .bind(design.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.map(|row| {
            let status: String = row.try_get("status").map_err(StoreError::from_sqlx)?;
            let metadata: Option<String> = row.try_get("metadata").map_err(StoreError::from_sqlx)?;
            Ok(DesignRow {
                id: row.try_get("id").map_err(StoreError::from_sqlx)?,
                tenant_id: row.try_get("tenantId").map_err(StoreError::from_sqlx)?,
                status: DesignStatus::parse(&status)
                    .ok_or_else(|| StoreError::Schema(format!("unknown status `{status}`")))?,
                composite_texture_url: row.try_get("compositeTextureUrl").map_err(StoreError::from_sqlx)?,
                preview_url: row.try_get("previewUrl").map_err(StoreError::from_sqlx)?,
                high_res_url: row.try_get("highResUrl").map_err(StoreError::from_sqlx)?,
                cost_tokens: row.try_get("costTokens").map_err(StoreError::from_sqlx)?,
                cost_cents: row.try_get("costCents").map_err(StoreError::from_sqlx)?,
                metadata: metadata.and_then(|text| serde_json::from_str(&text).ok()),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (DesignId, TenantId) {
        (
            DesignId::parse("design-1").unwrap(),
            TenantId::parse("tenant-1").unwrap(),
        )
    }

    fn completed() -> CompletedRender {
        CompletedRender {
            composite_texture_url: "file:///c.png".into(),
            preview_url: "file:///p.png".into(),
            high_res_url: "file:///h.png".into(),
            cost_tokens: 12,
            cost_cents: 3,
            metadata: serde_json::json!({"provider": "builtin"}),
        }
    }

    #[tokio::test]
    async fn lifecycle_creates_then_completes_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteDesignStore::open(&dir.path().join("db.sqlite"), MissingDesign::Create)
            .await
            .unwrap();
        let (design, tenant) = ids();
        store.mark_processing(&design, &tenant).await.unwrap();
        assert_eq!(
            store.get(&design).await.unwrap().unwrap().status,
            DesignStatus::Processing
        );
        store.mark_completed(&design, &tenant, &completed()).await.unwrap();
        let row = store.get(&design).await.unwrap().unwrap();
        assert_eq!(row.status, DesignStatus::Completed);
        assert_eq!(row.preview_url.as_deref(), Some("file:///p.png"));
        assert_eq!((row.cost_tokens, row.cost_cents), (12, 3));
        assert_eq!(row.metadata.unwrap()["provider"], "builtin");
    }

    #[tokio::test]
    async fn another_tenants_design_is_not_touched_and_reopening_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = SqliteDesignStore::open(&path, MissingDesign::Create).await.unwrap();
        let (design, tenant) = ids();
        store.mark_processing(&design, &tenant).await.unwrap();
        store.mark_completed(&design, &tenant, &completed()).await.unwrap();
        let intruder = TenantId::parse("tenant-2").unwrap();
        assert!(matches!(
            store.mark_processing(&design, &intruder).await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(
            store.get(&design).await.unwrap().unwrap().status,
            DesignStatus::Completed
        );
        drop(store);
        let reopened = SqliteDesignStore::open(&path, MissingDesign::Reject).await.unwrap();
        assert_eq!(
            reopened.get(&design).await.unwrap().unwrap().status,
            DesignStatus::Completed
        );
        let unknown = DesignId::parse("nope").unwrap();
        assert!(matches!(
            reopened.mark_processing(&unknown, &tenant).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn failure_keeps_the_reason_in_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteDesignStore::open(&dir.path().join("db.sqlite"), MissingDesign::Create)
            .await
            .unwrap();
        let (design, tenant) = ids();
        store.mark_processing(&design, &tenant).await.unwrap();
        let failure = FailedRender {
            code: crate::error_code::ErrorCode::AssetRefused,
            message: "`maskUrl`: refused".into(),
            cost_tokens: 0,
            cost_cents: 0,
            provider_attempts: None,
        };
        store.mark_failed(&design, &tenant, &failure).await.unwrap();
        let row = store.get(&design).await.unwrap().unwrap();
        assert_eq!(row.status, DesignStatus::Failed);
        assert_eq!(row.metadata.unwrap()["error"]["code"], "asset_refused");
    }
}
