//! Embedded SQLite store for the one-shot CLI: the same `"Design"` table and column names as
//! the PostgreSQL schema, with the status kept as checked text.
//!
//! `RUN_MIGRATIONS` means what it means for PostgreSQL: `auto` creates the table in a fresh file
//! and only checks an existing one (missing columns refuse the start with
//! [`StoreError::MissingColumns`]), `true` also adds missing columns, `false` only checks.
//!
//! Metadata merges copy PostgreSQL's `jsonb ||`: each top-level key of the patch replaces the
//! stored value whole and the other keys are kept. SQLite's `json_patch` would not do: it merges
//! nested objects key by key and deletes keys whose new value is null. The merge is spelled with
//! `json_each`, re-marking objects, arrays and booleans as JSON so they are not stored as text
//! or integers.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row, SqlSafeStr, SqlStr};

use super::{
    CompletedRender, CostLedger, DesignRow, DesignStatus, DesignStore, FailedRender, MissingDesign, PaidCallEntry,
    StoreError, TenantCost, quoted,
};
use crate::config::{Migrations, TenantColumn};
use crate::job::{DesignId, TenantId};

pub struct SqliteDesignStore {
    pool: SqlitePool,
    statements: Statements,
}

/// Settings of [`SqliteDesignStore::open_with`].
pub struct SqliteSettings<'a> {
    /// The database file, created when missing.
    pub path: &'a Path,
    /// The column holding the owning tenant (`DESIGN_TENANT_COLUMN`); `None`: rows are matched
    /// by id only.
    pub tenant_column: Option<TenantColumn>,
    /// What opening may do to the schema (`RUN_MIGRATIONS`).
    pub migrations: Migrations,
}

/// Every statement whose text depends on the tenant column. `?1` is always the design id and
/// `?2` the job's tenant; without a tenant column the ownership test is `TRUE` and `?2` is bound
/// but unused, which keeps the binds the same in both modes.
struct Statements {
    mark_processing: SqlStr,
    mark_completed: SqlStr,
    mark_failed: SqlStr,
    read_metadata: SqlStr,
    write_cost: SqlStr,
    get: SqlStr,
    recent: SqlStr,
    /// `None` without a tenant column.
    cost_by_tenant: Option<SqlStr>,
}

impl Statements {
    fn new(tenant_column: Option<&TenantColumn>, missing: MissingDesign) -> Self {
        let column = tenant_column.map(|column| quoted(column.as_str()));
        let owned = match &column {
            Some(column) => format!("{column} IS ?2"),
            None => "TRUE".to_owned(),
        };
        let mark_processing = match (missing, &column) {
            (MissingDesign::Create, Some(column)) => format!(
                r#"INSERT INTO "Design" ("id", {column}, "status", "updatedAt") VALUES (?1, ?2, 'PROCESSING', ?3)
                   ON CONFLICT ("id") DO UPDATE SET "status" = 'PROCESSING', "updatedAt" = ?3
                   WHERE "Design".{column} IS ?2"#
            ),
            (MissingDesign::Create, None) => {
                r#"INSERT INTO "Design" ("id", "status", "updatedAt") VALUES (?1, 'PROCESSING', ?3)
                   ON CONFLICT ("id") DO UPDATE SET "status" = 'PROCESSING', "updatedAt" = ?3"#
                    .to_owned()
            }
            (MissingDesign::Reject, _) => {
                format!(r#"UPDATE "Design" SET "status" = 'PROCESSING', "updatedAt" = ?3 WHERE "id" = ?1 AND {owned}"#)
            }
        };
        let tenant_read = column.as_deref().unwrap_or("NULL");
        Self {
            mark_processing: sql(mark_processing),
            // A completed render drops the `error` a failed attempt left, then merges its own keys.
            mark_completed: sql(format!(
                r#"UPDATE "Design" SET "status" = 'COMPLETED', "compositeTextureUrl" = ?3, "previewUrl" = ?4,
                       "highResUrl" = ?5, "costTokens" = MAX("costTokens", ?6), "costCents" = MAX("costCents", ?7),
                       "metadata" = {}, "updatedAt" = ?9
                   WHERE "id" = ?1 AND {owned}"#,
                merged_metadata(r#"json_remove(COALESCE("metadata", '{}'), '$.error')"#, "?8")
            )),
            mark_failed: sql(format!(
                r#"UPDATE "Design" SET "status" = 'FAILED', "costTokens" = MAX("costTokens", ?3),
                       "costCents" = MAX("costCents", ?4), "metadata" = {}, "updatedAt" = ?6
                   WHERE "id" = ?1 AND {owned}"#,
                merged_metadata(r#"COALESCE("metadata", '{}')"#, "?5")
            )),
            read_metadata: sql(format!(
                r#"SELECT "metadata" FROM "Design" WHERE "id" = ?1 AND {owned}"#
            )),
            write_cost: sql(format!(
                r#"UPDATE "Design" SET "costTokens" = ?3, "costCents" = ?4,
                       "metadata" = json_set(COALESCE("metadata", '{{}}'), '$.cost', json(?5)), "updatedAt" = ?6
                   WHERE "id" = ?1 AND {owned}"#
            )),
            get: sql(format!(
                r#"SELECT "id", {tenant_read} AS "tenantId", "status", "compositeTextureUrl", "previewUrl",
                          "highResUrl", "costTokens", "costCents", "metadata"
                   FROM "Design" WHERE "id" = ?1"#
            )),
            recent: sql(format!(
                r#"SELECT "id", {tenant_read} AS "tenantId", "status", "compositeTextureUrl", "previewUrl",
                          "highResUrl", "costTokens", "costCents", "metadata"
                   FROM "Design" WHERE "status" = ?1 ORDER BY "updatedAt" DESC, "id" LIMIT ?2 OFFSET ?3"#
            )),
            cost_by_tenant: column.as_ref().map(|column| {
                sql(format!(
                    r#"SELECT {column} AS "tenantId", count(*) AS "designs",
                              COALESCE(sum("costCents"), 0) AS "costCents", COALESCE(sum("costTokens"), 0) AS "costTokens"
                       FROM "Design" WHERE "updatedAt" >= ?1 AND {column} IS NOT NULL
                       GROUP BY {column} ORDER BY 3 DESC, 1 LIMIT ?2"#
                ))
            }),
        }
    }
}

/// The JSON object `base` with the top-level keys of the JSON object bound at `patch` replaced,
/// as PostgreSQL's `base || patch` does.
fn merged_metadata(base: &str, patch: &str) -> String {
    format!(
        r#"(SELECT json_group_object("key", CASE "type"
                WHEN 'true' THEN json('true') WHEN 'false' THEN json('false')
                WHEN 'object' THEN json("value") WHEN 'array' THEN json("value")
                ELSE "value" END)
            FROM (SELECT "key", "value", "type" FROM json_each({base})
                  WHERE "key" NOT IN (SELECT "key" FROM json_each(json({patch})))
                  UNION ALL SELECT "key", "value", "type" FROM json_each(json({patch}))))"#
    )
}

/// Statement text composed from constants and the validated, quoted tenant column only. Shared
/// (`Arc`), so handing it to each query does not copy it.
fn sql(text: String) -> SqlStr {
    AssertSqlSafe(std::sync::Arc::<str>::from(text)).into_sql_str()
}

impl SqliteDesignStore {
    /// Opens (creating if needed) the database file with the default tenant column (`tenantId`)
    /// and `RUN_MIGRATIONS=auto`.
    pub async fn open(path: &Path, missing: MissingDesign) -> Result<Self, StoreError> {
        let settings = SqliteSettings {
            path,
            tenant_column: Some(TenantColumn::default()),
            migrations: Migrations::Auto,
        };
        Self::open_with(settings, missing).await
    }

    /// Opens (creating if needed) the database file and applies `settings.migrations`.
    pub async fn open_with(settings: SqliteSettings<'_>, missing: MissingDesign) -> Result<Self, StoreError> {
        let path = settings.path;
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
        let migrated = Self::migrate(&mut connection, &settings).await;
        connection.close().await.map_err(StoreError::from_sqlx)?;
        migrated?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(Self {
            pool,
            statements: Statements::new(settings.tenant_column.as_ref(), missing),
        })
    }

    /// Creates the table in a fresh file (`auto`, `true`), adds missing columns to an existing
    /// one (`true` only), then checks that every needed column exists. Never drops, renames or
    /// rewrites anything.
    async fn migrate(connection: &mut SqliteConnection, settings: &SqliteSettings<'_>) -> Result<(), StoreError> {
        let table_exists: bool = sqlx::query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE "type" = 'table' AND "name" = 'Design')"#,
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(StoreError::from_sqlx)?;
        let required = super::required_columns(settings.tenant_column.as_ref());
        match (table_exists, settings.migrations) {
            (false, Migrations::Off) => {
                return Err(StoreError::Schema(format!(
                    r#"{} has no "Design" table and RUN_MIGRATIONS=false forbids creating it; set RUN_MIGRATIONS=auto"#,
                    settings.path.display()
                )));
            }
            (false, Migrations::Auto | Migrations::Add) => {
                sqlx::query(
                    r#"CREATE TABLE "Design" (
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
            }
            (true, _) => {}
        }
        let existing = Self::columns(connection).await?;
        if !table_exists || settings.migrations == Migrations::Add {
            for column in required.iter().filter(|column| !existing.contains(&column.name)) {
                // Names come from constants and the validated tenant column, quoted; never from input.
                sqlx::query(AssertSqlSafe(format!(
                    r#"ALTER TABLE "Design" ADD COLUMN {} {}"#,
                    quoted(&column.name),
                    column.sqlite_type
                )))
                .execute(&mut *connection)
                .await
                .map_err(StoreError::from_sqlx)?;
            }
        }
        let existing = Self::columns(connection).await?;
        match super::missing_columns(&required, &existing, |column| column.sqlite_type) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn columns(connection: &mut SqliteConnection) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(r#"SELECT "name" FROM pragma_table_info('Design')"#)
            .fetch_all(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)
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
        let result = sqlx::query(self.statements.mark_processing.clone())
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
        let result = sqlx::query(self.statements.mark_completed.clone())
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
        let result = sqlx::query(self.statements.mark_failed.clone())
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
            let row = sqlx::query(self.statements.read_metadata.clone())
                .bind(design.as_str())
                .bind(tenant.as_str())
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::from_sqlx)?
                .ok_or_else(|| Self::not_found(design, tenant))?;
            let metadata: Option<String> = row.try_get("metadata").map_err(StoreError::from_sqlx)?;
            let metadata = metadata.and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            let ledger = super::merge_paid_call(metadata.as_ref(), call);
            sqlx::query(self.statements.write_cost.clone())
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
        let row = sqlx::query(self.statements.get.clone())
            .bind(design.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(design_row).transpose()
    }

    async fn recent(&self, status: DesignStatus, offset: usize, limit: usize) -> Result<Vec<DesignRow>, StoreError> {
        let rows = sqlx::query(self.statements.recent.clone())
            .bind(status.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter().map(design_row).collect()
    }

    async fn cost_by_tenant(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TenantCost>, StoreError> {
        let Some(statement) = &self.statements.cost_by_tenant else {
            return Ok(Vec::new());
        };
        // Timestamps are stored as RFC 3339 text in UTC with milliseconds, which sorts by time.
        let rows = sqlx::query(statement.clone())
            .bind(since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                let designs: i64 = row.try_get("designs").map_err(StoreError::from_sqlx)?;
                Ok(TenantCost {
                    tenant_id: row.try_get("tenantId").map_err(StoreError::from_sqlx)?,
                    designs: u64::try_from(designs).unwrap_or(0),
                    cost_cents: row.try_get("costCents").map_err(StoreError::from_sqlx)?,
                    cost_tokens: row.try_get("costTokens").map_err(StoreError::from_sqlx)?,
                })
            })
            .collect()
    }
}

/// A row of `get` or `recent`.
fn design_row(row: &sqlx::sqlite::SqliteRow) -> Result<DesignRow, StoreError> {
    let status: String = row.try_get("status").map_err(StoreError::from_sqlx)?;
    let metadata: Option<String> = row.try_get("metadata").map_err(StoreError::from_sqlx)?;
    Ok(DesignRow {
        id: row.try_get("id").map_err(StoreError::from_sqlx)?,
        tenant_id: row.try_get("tenantId").map_err(StoreError::from_sqlx)?,
        status: DesignStatus::parse(&status).ok_or_else(|| StoreError::Schema(format!("unknown status `{status}`")))?,
        composite_texture_url: row.try_get("compositeTextureUrl").map_err(StoreError::from_sqlx)?,
        preview_url: row.try_get("previewUrl").map_err(StoreError::from_sqlx)?,
        high_res_url: row.try_get("highResUrl").map_err(StoreError::from_sqlx)?,
        cost_tokens: row.try_get("costTokens").map_err(StoreError::from_sqlx)?,
        cost_cents: row.try_get("costCents").map_err(StoreError::from_sqlx)?,
        metadata: metadata.and_then(|text| serde_json::from_str(&text).ok()),
    })
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
    async fn auto_creates_a_fresh_file_but_only_checks_an_existing_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let settings = |migrations| SqliteSettings {
            path: &path,
            tenant_column: Some(TenantColumn::default()),
            migrations,
        };
        drop(
            SqliteDesignStore::open_with(settings(Migrations::Auto), MissingDesign::Create)
                .await
                .unwrap(),
        );
        let mut connection = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(r#"ALTER TABLE "Design" DROP COLUMN "costCents""#)
            .execute(&mut connection)
            .await
            .unwrap();
        let before = SqliteDesignStore::columns(&mut connection).await.unwrap();

        for migrations in [Migrations::Auto, Migrations::Off] {
            match SqliteDesignStore::open_with(settings(migrations), MissingDesign::Create).await {
                Err(StoreError::MissingColumns { columns, statements }) => {
                    assert_eq!(columns, ["costCents"]);
                    assert_eq!(
                        statements,
                        [r#"ALTER TABLE "Design" ADD COLUMN "costCents" INTEGER NOT NULL DEFAULT 0;"#]
                    );
                }
                other => panic!(
                    "{migrations:?}: expected MissingColumns, got {:?}",
                    other.map(|_| "a store")
                ),
            }
            assert_eq!(SqliteDesignStore::columns(&mut connection).await.unwrap(), before);
        }
        SqliteDesignStore::open_with(settings(Migrations::Add), MissingDesign::Create)
            .await
            .unwrap();
        let after = SqliteDesignStore::columns(&mut connection).await.unwrap();
        assert!(after.iter().any(|name| name == "costCents"), "{after:?}");
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
