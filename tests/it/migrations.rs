//! PostgreSQL migrations against a fresh schema per test: idempotent on an empty schema and on a
//! pre-existing Prisma-style `"Design"` table with extra columns, which survive with their rows.

use design_render::job::DesignId;
use design_render::store::postgres::{PgDesignStore, PgSettings};
use design_render::store::{DesignStatus, DesignStore, MissingDesign};
use sqlx::Row;

use super::helpers::{PG_URL, SchemaGuard, create_schema};

/// An empty schema (the guard drops it when the test ends, passing or not) and an admin pool.
async fn fresh_schema() -> (sqlx::PgPool, SchemaGuard, String) {
    let (admin, guard) = create_schema("dr_mig").await;
    let name = guard.name().to_owned();
    (admin, guard, name)
}

async fn connect(schema: &str, run_migrations: bool) -> PgDesignStore {
    PgDesignStore::connect(
        PgSettings {
            url: PG_URL,
            schema: Some(schema),
            max_connections: 2,
            run_migrations,
        },
        MissingDesign::Reject,
    )
    .await
    .expect("connect")
}

async fn columns(admin: &sqlx::PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'Design' ORDER BY column_name",
    )
    .bind(schema)
    .fetch_all(admin)
    .await
    .expect("columns")
}

#[tokio::test]
async fn migrations_create_everything_on_an_empty_schema_and_are_idempotent() {
    let (admin, _guard, schema) = fresh_schema().await;
    let first = connect(&schema, true).await;
    let after_first = columns(&admin, &schema).await;
    for column in [
        "id",
        "status",
        "tenantId",
        "compositeTextureUrl",
        "previewUrl",
        "highResUrl",
        "costTokens",
        "costCents",
        "metadata",
        "updatedAt",
    ] {
        assert!(
            after_first.iter().any(|c| c == column),
            "{column} missing: {after_first:?}"
        );
    }
    first.migrate().await.expect("second run");
    let second = connect(&schema, true).await;
    assert_eq!(columns(&admin, &schema).await, after_first);
    drop(second);
}

#[tokio::test]
async fn migrations_only_add_render_columns_to_a_prisma_table_and_keep_rows() {
    let (admin, _guard, schema) = fresh_schema().await;
    let setup = format!(
        r#"CREATE TYPE "{schema}"."DesignStatus" AS ENUM ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED');
           CREATE TABLE "{schema}"."Design" (
               "id" TEXT NOT NULL,
               "title" TEXT NOT NULL,
               "userId" TEXT,
               "tenantId" TEXT,
               "status" "{schema}"."DesignStatus" NOT NULL DEFAULT 'PENDING',
               "metadata" JSONB,
               "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
               "updatedAt" TIMESTAMP(3) NOT NULL,
               "compositeTextureUrl" TEXT,
               "costTokens" INTEGER NOT NULL DEFAULT 0,
               CONSTRAINT "Design_pkey" PRIMARY KEY ("id")
           );
           INSERT INTO "{schema}"."Design" ("id", "title", "userId", "tenantId", "metadata", "updatedAt", "costTokens")
           VALUES ('cjld2cjxh0000qzrmn831i7rn', 'Kitchen floor', 'user-9', 'tenant-p', '{{"source": "prisma"}}', now(), 7);"#
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&admin)
        .await
        .expect("prisma schema");

    let store = connect(&schema, true).await;
    store.migrate().await.expect("idempotent");
    let after = columns(&admin, &schema).await;
    for column in ["title", "userId", "previewUrl", "highResUrl", "costCents"] {
        assert!(after.iter().any(|c| c == column), "{column} missing: {after:?}");
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"SELECT "title", "userId", "costTokens", "metadata"->>'source' AS source FROM "{schema}"."Design""#
    )))
    .fetch_one(&admin)
    .await
    .expect("row survives");
    assert_eq!(row.get::<String, _>("title"), "Kitchen floor");
    assert_eq!(row.get::<Option<String>, _>("userId").as_deref(), Some("user-9"));
    assert_eq!(row.get::<i32, _>("costTokens"), 7);
    assert_eq!(row.get::<Option<String>, _>("source").as_deref(), Some("prisma"));
    let design = store
        .get(&DesignId::parse("cjld2cjxh0000qzrmn831i7rn").unwrap())
        .await
        .unwrap()
        .expect("readable through the store");
    assert_eq!(design.status, DesignStatus::Pending);

    // RUN_MIGRATIONS=false: connecting does not touch the schema.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER TABLE "{schema}"."Design" DROP COLUMN "costCents""#
    )))
    .execute(&admin)
    .await
    .unwrap();
    let _untouched = connect(&schema, false).await;
    assert!(!columns(&admin, &schema).await.iter().any(|c| c == "costCents"));
}
