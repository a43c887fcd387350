//! PostgreSQL store, sharing the backend's Prisma-managed `"Design"` table.
//!
//! Migrations never surprise the schema's owner. With `RUN_MIGRATIONS=auto` (the default) the
//! `"DesignStatus"` enum and the `"Design"` table are created only when missing (a fresh
//! database); an existing table is only checked, and missing columns refuse the start with
//! [`StoreError::MissingColumns`] naming the `ALTER TABLE` to run. `true` adds missing enum labels
//! and columns; `false` runs no DDL and checks the same way. Nothing is ever dropped, renamed or
//! rewritten. DDL runs under an advisory lock so many workers starting at once do not race.
//! Timestamps are written as UTC into Prisma's zone-less `TIMESTAMP(3)`.
//!
//! The statements depend on the configured tenant column, so they are composed once, when the
//! store is built, from constants and the validated, quoted [`TenantColumn`].

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};

use super::{
    CompletedRender, CostLedger, DesignRow, DesignStatus, DesignStore, FailedRender, MissingDesign, PaidCallEntry,
    StoreError, TenantCost, quoted,
};
use crate::config::{Migrations, TenantColumn};
use crate::job::{DesignId, TenantId};

/// Arbitrary but fixed key of the advisory lock that serialises migrations.
const MIGRATION_LOCK_KEY: i64 = 0x6465_7369_676e_7231;

/// The `"DesignStatus"` labels the worker writes, in Prisma's declaration order.
const STATUS_LABELS: [&str; 4] = ["PENDING", "PROCESSING", "COMPLETED", "FAILED"];

pub struct PgDesignStore {
    pool: PgPool,
    tenant_column: Option<TenantColumn>,
    migrations: Migrations,
    statements: Statements,
}

/// Connection settings for [`PgDesignStore::connect`].
pub struct PgSettings<'a> {
    pub url: &'a str,
    /// Optional schema to use instead of `public` (tests use one per test).
    pub schema: Option<&'a str>,
    pub max_connections: u32,
    /// The column holding the owning tenant (`DESIGN_TENANT_COLUMN`); `None`: rows are matched
    /// by id only.
    pub tenant_column: Option<TenantColumn>,
    /// What start-up may do to the schema (`RUN_MIGRATIONS`).
    pub migrations: Migrations,
}

/// Every statement whose text depends on the tenant column. `$1` is always the design id and
/// `$2` the job's tenant. Without a tenant column the ownership test is `TRUE` and `$2` is
/// bound but unused (sqlx declares its type, so PostgreSQL accepts it), which keeps the
/// parameter numbers and binds the same in both modes.
struct Statements {
    mark_processing: SqlStr,
    mark_completed: SqlStr,
    mark_failed: SqlStr,
    lock_metadata: SqlStr,
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
            Some(column) => format!(r#"{column} = $2"#),
            None => "TRUE".to_owned(),
        };
        let mark_processing = match (missing, &column) {
            (MissingDesign::Create, Some(column)) => format!(
                r#"INSERT INTO "Design" ("id", {column}, "status", "updatedAt")
                   VALUES ($1, $2, 'PROCESSING'::"DesignStatus", $3)
                   ON CONFLICT ("id") DO UPDATE SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3
                   WHERE "Design".{column} IS NOT DISTINCT FROM $2"#
            ),
            (MissingDesign::Create, None) => r#"INSERT INTO "Design" ("id", "status", "updatedAt")
                   VALUES ($1, 'PROCESSING'::"DesignStatus", $3)
                   ON CONFLICT ("id") DO UPDATE SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3"#
                .to_owned(),
            (MissingDesign::Reject, _) => format!(
                r#"UPDATE "Design" SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3
                   WHERE "id" = $1 AND {owned}"#
            ),
        };
        let tenant_read = column.as_deref().unwrap_or("NULL::text");
        Self {
            mark_processing: sql(mark_processing),
            // A completed render drops the `error` a failed attempt left, then merges its own keys.
            mark_completed: sql(format!(
                r#"UPDATE "Design" SET "status" = 'COMPLETED'::"DesignStatus", "compositeTextureUrl" = $3,
                       "previewUrl" = $4, "highResUrl" = $5, "costTokens" = GREATEST("costTokens", $6),
                       "costCents" = GREATEST("costCents", $7),
                       "metadata" = (COALESCE("metadata", '{{}}'::jsonb) - 'error') || $8::jsonb, "updatedAt" = $9
                   WHERE "id" = $1 AND {owned}"#
            )),
            mark_failed: sql(format!(
                r#"UPDATE "Design" SET "status" = 'FAILED'::"DesignStatus", "costTokens" = GREATEST("costTokens", $3),
                       "costCents" = GREATEST("costCents", $4),
                       "metadata" = COALESCE("metadata", '{{}}'::jsonb) || $5::jsonb, "updatedAt" = $6
                   WHERE "id" = $1 AND {owned}"#
            )),
            // FOR UPDATE serialises concurrent recorders of the same design.
            lock_metadata: sql(format!(
                r#"SELECT "metadata" FROM "Design" WHERE "id" = $1 AND {owned} FOR UPDATE"#
            )),
            write_cost: sql(format!(
                r#"UPDATE "Design" SET "costTokens" = $3, "costCents" = $4,
                       "metadata" = jsonb_set(COALESCE("metadata", '{{}}'::jsonb), '{{cost}}', $5::jsonb, true),
                       "updatedAt" = $6
                   WHERE "id" = $1 AND {owned}"#
            )),
            get: sql(format!(
                r#"SELECT "id", {tenant_read} AS "tenantId", "status"::text AS "status", "compositeTextureUrl",
                          "previewUrl", "highResUrl", "costTokens", "costCents", "metadata"
                   FROM "Design" WHERE "id" = $1"#
            )),
            recent: sql(format!(
                r#"SELECT "id", {tenant_read} AS "tenantId", "status"::text AS "status", "compositeTextureUrl",
                          "previewUrl", "highResUrl", "costTokens", "costCents", "metadata"
                   FROM "Design" WHERE "status"::text = $1
                   ORDER BY "updatedAt" DESC, "id" LIMIT $2 OFFSET $3"#
            )),
            cost_by_tenant: column.as_ref().map(|column| {
                sql(format!(
                    r#"SELECT {column} AS "tenantId", count(*) AS "designs",
                              COALESCE(sum("costCents"), 0)::bigint AS "costCents",
                              COALESCE(sum("costTokens"), 0)::bigint AS "costTokens"
                       FROM "Design" WHERE "updatedAt" >= $1 AND {column} IS NOT NULL
                       GROUP BY {column} ORDER BY 3 DESC, 1 LIMIT $2"#
                ))
            }),
        }
    }
}

/// Statement text composed from constants and the validated, quoted tenant column only. Shared
/// (`Arc`), so handing it to each query does not copy it.
fn sql(text: String) -> SqlStr {
    AssertSqlSafe(std::sync::Arc::<str>::from(text)).into_sql_str()
}

impl PgDesignStore {
    pub async fn connect(settings: PgSettings<'_>, missing: MissingDesign) -> Result<Self, StoreError> {
        let mut options: PgConnectOptions =
            strip_prisma_parameters(settings.url)
                .parse()
                .map_err(|e: sqlx::Error| {
                    StoreError::Unavailable(format!("invalid DATABASE_URL: {}", redact(&e.to_string())))
                })?;
        options = options.application_name("design-render");
        if let Some(schema) = settings.schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            // No ping before every query: it doubles the round trips of a job's two updates. A
            // connection that died in the pool fails its query as `Unavailable`, which is
            // transient (the job is retried), and sqlx then drops that connection.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let store = Self {
            pool,
            statements: Statements::new(settings.tenant_column.as_ref(), missing),
            tenant_column: settings.tenant_column,
            migrations: settings.migrations,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the store's `RUN_MIGRATIONS` mode (see the module docs), then checks that every
    /// column the worker needs exists. Idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        if self.migrations == Migrations::Off {
            // Read-only: no lock, no DDL.
            return self.check_columns(&mut connection).await;
        }
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
        let result = async {
            self.migrate_locked(&mut connection).await?;
            self.check_columns(&mut connection).await
        }
        .await;
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *connection)
            .await;
        result?;
        unlock.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// The DDL of `auto` (create what is missing on a fresh schema) and `true` (also add labels
    /// and columns to an existing table).
    async fn migrate_locked(&self, connection: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        let table_exists = Self::table_exists(connection).await?;
        if table_exists && self.migrations != Migrations::Add {
            return Ok(());
        }
        let enum_exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typname = 'DesignStatus' AND n.nspname = current_schema())",
        )
        .fetch_one(&mut *connection)
        .await
        .map_err(StoreError::from_sqlx)?;
        if !enum_exists {
            sqlx::query(r#"CREATE TYPE "DesignStatus" AS ENUM ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')"#)
                .execute(&mut *connection)
                .await
                .map_err(StoreError::from_sqlx)?;
        } else if self.migrations == Migrations::Add {
            for label in STATUS_LABELS {
                // Labels come from constants in this crate, never from input.
                sqlx::query(AssertSqlSafe(format!(
                    r#"ALTER TYPE "DesignStatus" ADD VALUE IF NOT EXISTS '{label}'"#
                )))
                .execute(&mut *connection)
                .await
                .map_err(StoreError::from_sqlx)?;
            }
        }
        sqlx::query(
            r#"CREATE TABLE IF NOT EXISTS "Design" (
                "id" TEXT NOT NULL,
                "status" "DesignStatus" NOT NULL DEFAULT 'PENDING',
                "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
                "updatedAt" TIMESTAMP(3) NOT NULL,
                CONSTRAINT "Design_pkey" PRIMARY KEY ("id")
            )"#,
        )
        .execute(&mut *connection)
        .await
        .map_err(StoreError::from_sqlx)?;
        for column in super::required_columns(self.tenant_column.as_ref()) {
            // Names come from constants and the validated tenant column, quoted; never from input.
            sqlx::query(AssertSqlSafe(format!(
                r#"ALTER TABLE "Design" ADD COLUMN IF NOT EXISTS {} {}"#,
                quoted(&column.name),
                column.postgres_type
            )))
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
        }
        Ok(())
    }

    /// Whether `"Design"` resolves on the search path, as the worker's statements resolve it.
    async fn table_exists(connection: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
        sqlx::query_scalar(r#"SELECT to_regclass('"Design"') IS NOT NULL"#)
            .fetch_one(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)
    }

    /// Read-only: fails with [`StoreError::MissingColumns`] when a needed column is absent.
    async fn check_columns(&self, connection: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        if !Self::table_exists(connection).await? {
            return Err(StoreError::Schema(
                r#"there is no "Design" table on the search path and RUN_MIGRATIONS=false forbids creating it; apply the backend's migrations or set RUN_MIGRATIONS=auto"#
                    .to_owned(),
            ));
        }
        let existing: Vec<String> = sqlx::query_scalar(
            r#"SELECT attname::text FROM pg_attribute
               WHERE attrelid = to_regclass('"Design"') AND attnum > 0 AND NOT attisdropped"#,
        )
        .fetch_all(&mut *connection)
        .await
        .map_err(StoreError::from_sqlx)?;
        let required = super::required_columns(self.tenant_column.as_ref());
        match super::missing_columns(&required, &existing, |column| column.postgres_type) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn not_found(design: &DesignId, tenant: &TenantId) -> StoreError {
        StoreError::NotFound {
            design: design.clone(),
            tenant: tenant.clone(),
        }
    }

    fn now() -> chrono::NaiveDateTime {
        chrono::Utc::now().naive_utc()
    }
}

#[async_trait::async_trait]
impl DesignStore for PgDesignStore {
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
            .bind(sqlx::types::Json(&render.metadata))
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
            .bind(sqlx::types::Json(super::failure_metadata(failure)))
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
        let mut transaction = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(self.statements.lock_metadata.clone())
            .bind(design.as_str())
            .bind(tenant.as_str())
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else {
            // Roll back now: a dropped transaction only queues its ROLLBACK for the connection's
            // next use, and until then the idle pooled connection keeps the table locked.
            transaction.rollback().await.map_err(StoreError::from_sqlx)?;
            return Err(Self::not_found(design, tenant));
        };
        let metadata: Option<sqlx::types::Json<serde_json::Value>> =
            row.try_get("metadata").map_err(StoreError::from_sqlx)?;
        let ledger = super::merge_paid_call(metadata.as_ref().map(|json| &json.0), call);
        sqlx::query(self.statements.write_cost.clone())
            .bind(design.as_str())
            .bind(tenant.as_str())
            .bind(ledger.cost_tokens)
            .bind(ledger.cost_cents)
            .bind(sqlx::types::Json(&ledger.json))
            .bind(Self::now())
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from_sqlx)?;
        transaction.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(ledger)
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
        let rows = sqlx::query(statement.clone())
            .bind(since.naive_utc())
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
fn design_row(row: &sqlx::postgres::PgRow) -> Result<DesignRow, StoreError> {
    let status: String = row.try_get("status").map_err(StoreError::from_sqlx)?;
    let metadata: Option<sqlx::types::Json<serde_json::Value>> =
        row.try_get("metadata").map_err(StoreError::from_sqlx)?;
    Ok(DesignRow {
        id: row.try_get("id").map_err(StoreError::from_sqlx)?,
        tenant_id: row.try_get("tenantId").map_err(StoreError::from_sqlx)?,
        status: DesignStatus::parse(&status).ok_or_else(|| StoreError::Schema(format!("unknown status `{status}`")))?,
        composite_texture_url: row.try_get("compositeTextureUrl").map_err(StoreError::from_sqlx)?,
        preview_url: row.try_get("previewUrl").map_err(StoreError::from_sqlx)?,
        high_res_url: row.try_get("highResUrl").map_err(StoreError::from_sqlx)?,
        cost_tokens: row.try_get("costTokens").map_err(StoreError::from_sqlx)?,
        cost_cents: row.try_get("costCents").map_err(StoreError::from_sqlx)?,
        metadata: metadata.map(|json| json.0),
    })
}

/// Removes Prisma-only URL parameters (`schema`, `connection_limit`, `pool_timeout`,
/// `pgbouncer`, …) that sqlx would ignore with a warning; `schema` becomes a search_path.
fn strip_prisma_parameters(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let mut schema = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(key, value)| match key.as_ref() {
            "schema" => {
                schema = Some(value.into_owned());
                None
            }
            "connection_limit"
            | "pool_timeout"
            | "pgbouncer"
            | "connect_timeout"
            | "socket_timeout"
            | "statement_cache_size" => None,
            _ => Some((key.into_owned(), value.into_owned())),
        })
        .collect();
    parsed.set_query(None);
    if !kept.is_empty() || schema.is_some() {
        let mut pairs = parsed.query_pairs_mut();
        for (key, value) in &kept {
            pairs.append_pair(key, value);
        }
        if let Some(schema) = &schema {
            pairs.append_pair("options", &format!("-c search_path={schema}"));
        }
    }
    parsed.to_string()
}

/// Removes a password from text that may quote a connection URL.
fn redact(text: &str) -> String {
    match strip_password(text) {
        Some(clean) => clean,
        None => text.to_owned(),
    }
}

fn strip_password(text: &str) -> Option<String> {
    let scheme_end = text.find("://")? + 3;
    let at = text[scheme_end..].find('@')? + scheme_end;
    let colon = text[scheme_end..at].find(':')? + scheme_end;
    Some(format!("{}:[redacted]{}", &text[..colon], &text[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prisma_parameters_are_translated() {
        let url =
            strip_prisma_parameters("postgresql://u:p@db:5432/app?schema=tenant_a&connection_limit=5&sslmode=require");
        assert!(url.contains("sslmode=require"), "{url}");
        assert!(!url.contains("connection_limit"), "{url}");
        assert!(url.contains("search_path%3Dtenant_a"), "{url}");
    }

    #[test]
    fn passwords_are_redacted_from_messages() {
        assert_eq!(
            redact("bad url postgres://user:hunter2@db/app"),
            "bad url postgres://user:[redacted]@db/app"
        );
        assert_eq!(redact("no secrets here"), "no secrets here");
    }
}
