//! PostgreSQL store, sharing the backend's Prisma-managed `"Design"` table.
//!
//! Migrations are additive and idempotent: the `"DesignStatus"` enum and the table are created
//! only when missing, missing enum labels and render columns are added, and nothing is ever
//! dropped, renamed or rewritten. They run under an advisory lock so many workers starting at
//! once do not race. Timestamps are written as UTC into Prisma's zone-less `TIMESTAMP(3)`.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{
    CompletedRender, CostLedger, DesignRow, DesignStatus, DesignStore, FailedRender, MissingDesign, PaidCallEntry,
    RENDER_COLUMNS, StoreError,
};
use crate::job::{DesignId, TenantId};

/// Arbitrary but fixed key of the advisory lock that serialises migrations.
const MIGRATION_LOCK_KEY: i64 = 0x6465_7369_676e_7231;

pub struct PgDesignStore {
    pool: PgPool,
    missing: MissingDesign,
}

/// Connection settings for [`PgDesignStore::connect`].
pub struct PgSettings<'a> {
    pub url: &'a str,
    /// Optional schema to use instead of `public` (tests use one per test).
    pub schema: Option<&'a str>,
    pub max_connections: u32,
    pub run_migrations: bool,
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
        let store = Self { pool, missing };
        if settings.run_migrations {
            store.migrate().await?;
        }
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Brings the schema up to what the worker needs, additively.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
        let result = Self::migrate_locked(&mut connection).await;
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *connection)
            .await;
        result?;
        unlock.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn migrate_locked(connection: &mut sqlx::PgConnection) -> Result<(), StoreError> {
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
        } else {
            for label in ["PENDING", "PROCESSING", "COMPLETED", "FAILED"] {
                // Identifiers and labels come from constants in this crate, never from input.
                sqlx::query(sqlx::AssertSqlSafe(format!(
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
        for (column, pg_type, _) in RENDER_COLUMNS {
            // Identifiers and labels come from constants in this crate, never from input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"ALTER TABLE "Design" ADD COLUMN IF NOT EXISTS "{column}" {pg_type}"#
            )))
            .execute(&mut *connection)
            .await
            .map_err(StoreError::from_sqlx)?;
        }
        Ok(())
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
        let query = match self.missing {
            MissingDesign::Create => sqlx::query(
                r#"INSERT INTO "Design" ("id", "tenantId", "status", "updatedAt")
                   VALUES ($1, $2, 'PROCESSING'::"DesignStatus", $3)
                   ON CONFLICT ("id") DO UPDATE SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3
                   WHERE "Design"."tenantId" IS NOT DISTINCT FROM $2"#,
            ),
            MissingDesign::Reject => sqlx::query(
                r#"UPDATE "Design" SET "status" = 'PROCESSING'::"DesignStatus", "updatedAt" = $3
                   WHERE "id" = $1 AND "tenantId" = $2"#,
            ),
        };
        let result = query
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
        let result = sqlx::query(
            r#"UPDATE "Design" SET "status" = 'COMPLETED'::"DesignStatus", "compositeTextureUrl" = $3,
                   "previewUrl" = $4, "highResUrl" = $5, "costTokens" = GREATEST("costTokens", $6),
                   "costCents" = GREATEST("costCents", $7),
                   "metadata" = COALESCE("metadata", '{}'::jsonb) || $8::jsonb, "updatedAt" = $9
               WHERE "id" = $1 AND "tenantId" = $2"#,
        )
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
        let result = sqlx::query(
            r#"UPDATE "Design" SET "status" = 'FAILED'::"DesignStatus", "costTokens" = GREATEST("costTokens", $3),
                   "costCents" = GREATEST("costCents", $4),
                   "metadata" = COALESCE("metadata", '{}'::jsonb) || $5::jsonb, "updatedAt" = $6
               WHERE "id" = $1 AND "tenantId" = $2"#,
        )
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
        // FOR UPDATE serialises concurrent recorders of the same design.
        let row = sqlx::query(r#"SELECT "metadata" FROM "Design" WHERE "id" = $1 AND "tenantId" = $2 FOR UPDATE"#)
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
        sqlx::query(
            r#"UPDATE "Design" SET "costTokens" = $3, "costCents" = $4,
                   "metadata" = jsonb_set(COALESCE("metadata", '{}'::jsonb), '{cost}', $5::jsonb, true),
                   "updatedAt" = $6
               WHERE "id" = $1 AND "tenantId" = $2"#,
        )
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
        let row = sqlx::query(
            r#"SELECT "id", "tenantId", "status"::text AS "status", "compositeTextureUrl", "previewUrl",
                      "highResUrl", "costTokens", "costCents", "metadata"
               FROM "Design" WHERE "id" = $1"#,
        )
        .bind(design.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.map(|row| {
            let status: String = row.try_get("status").map_err(StoreError::from_sqlx)?;
            let metadata: Option<sqlx::types::Json<serde_json::Value>> =
                row.try_get("metadata").map_err(StoreError::from_sqlx)?;
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
                metadata: metadata.map(|json| json.0),
            })
        })
        .transpose()
    }
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
