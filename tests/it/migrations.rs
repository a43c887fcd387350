//! PostgreSQL migrations (`RUN_MIGRATIONS`) against a fresh schema per test: `auto` creates the
//! enum and table on an empty schema but only checks a Prisma-managed table, `true` adds what is
//! missing and keeps rows, `false` runs no DDL at all, and the configured tenant column
//! (`DESIGN_TENANT_COLUMN`) is the one checked and added.

use design_render::app::{self, Mode};
use design_render::config::{Config, DatabaseConfig, Migrations, Secret, TenantColumn};
use design_render::job::DesignId;
use design_render::store::postgres::{PgDesignStore, PgSettings};
use design_render::store::{DesignStatus, DesignStore, MissingDesign, StoreError};
use sqlx::Row;

use super::helpers::{PG_URL, SchemaGuard, create_schema};

/// The worker's session in [`read_only`] tests: every transaction is read-only, so any DDL the
/// store attempted would fail with SQLSTATE 25006 instead of passing unnoticed.
const READ_ONLY_URL: &str = "postgres://postgres@127.0.0.1:5432/test?options=-c%20default_transaction_read_only%3Don";

/// The render columns a Prisma `Design` model without them lacks, in the order they are checked.
const ADDED_BY_THE_WORKER: [&str; 3] = ["previewUrl", "highResUrl", "costCents"];

/// An empty schema (the guard drops it when the test ends, passing or not) and an admin pool.
async fn fresh_schema() -> (sqlx::PgPool, SchemaGuard, String) {
    let (admin, guard) = create_schema("dr_mig").await;
    let name = guard.name().to_owned();
    (admin, guard, name)
}

/// A store on `schema` as the worker builds it, through `url`.
async fn open(
    url: &str,
    schema: &str,
    migrations: Migrations,
    tenant_column: Option<&str>,
) -> Result<PgDesignStore, StoreError> {
    PgDesignStore::connect(
        PgSettings {
            url,
            schema: Some(schema),
            max_connections: 2,
            tenant_column: tenant_column.map(|name| TenantColumn::parse(name).expect("valid column")),
            migrations,
        },
        MissingDesign::Reject,
    )
    .await
}

async fn connect(schema: &str, migrations: Migrations) -> PgDesignStore {
    open(PG_URL, schema, migrations, Some("tenantId"))
        .await
        .expect("connect")
}

/// The column names of `"Design"` in `schema`, sorted.
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

/// The `Design` model of the Prisma reference as `prisma migrate` creates it, plus `extra`
/// column definitions, with one row the backend wrote.
async fn prisma_table(admin: &sqlx::PgPool, schema: &str, extra: &str) {
    let setup = format!(
        r#"CREATE TYPE "{schema}"."DesignStatus" AS ENUM ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED');
           CREATE TABLE "{schema}"."Design" (
               "id" TEXT NOT NULL,
               "title" TEXT NOT NULL,
               "status" "{schema}"."DesignStatus" NOT NULL DEFAULT 'PENDING',
               "metadata" JSONB,
               "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
               "updatedAt" TIMESTAMP(3) NOT NULL,
               "compositeTextureUrl" TEXT,
               "costTokens" INTEGER NOT NULL DEFAULT 0,
               {extra}
               CONSTRAINT "Design_pkey" PRIMARY KEY ("id")
           );
           INSERT INTO "{schema}"."Design" ("id", "title", "metadata", "updatedAt", "costTokens")
           VALUES ('cjld2cjxh0000qzrmn831i7rn', 'Kitchen floor', '{{"source": "prisma"}}', now(), 7);"#
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(admin)
        .await
        .expect("prisma schema");
}

/// The columns and `ALTER TABLE` statements of a [`StoreError::MissingColumns`], or a panic.
fn missing_columns(result: Result<PgDesignStore, StoreError>) -> (Vec<String>, Vec<String>, String) {
    let Err(error) = result else {
        panic!("expected MissingColumns, the store opened")
    };
    let message = error.to_string();
    match error {
        StoreError::MissingColumns { columns, statements } => (columns, statements, message),
        other => panic!("expected MissingColumns, got {other:?}"),
    }
}

#[tokio::test]
async fn auto_creates_the_enum_and_the_table_on_an_empty_schema_and_is_idempotent() {
    let (admin, _guard, schema) = fresh_schema().await;
    let first = connect(&schema, Migrations::Auto).await;
    let after_first = columns(&admin, &schema).await;
    assert_eq!(
        after_first,
        [
            "compositeTextureUrl",
            "costCents",
            "costTokens",
            "createdAt",
            "highResUrl",
            "id",
            "metadata",
            "previewUrl",
            "status",
            "tenantId",
            "updatedAt",
        ]
    );
    let labels: Vec<String> = sqlx::query_scalar(
        "SELECT e.enumlabel::text FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
         JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typname = 'DesignStatus' AND n.nspname = $1 ORDER BY e.enumsortorder",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .expect("labels");
    assert_eq!(labels, ["PENDING", "PROCESSING", "COMPLETED", "FAILED"]);
    first.migrate().await.expect("second run");
    let second = connect(&schema, Migrations::Auto).await;
    assert_eq!(columns(&admin, &schema).await, after_first);
    drop(second);
}

#[tokio::test]
async fn auto_refuses_a_prisma_table_missing_render_columns_and_changes_nothing() {
    let (admin, _guard, schema) = fresh_schema().await;
    prisma_table(&admin, &schema, "").await;
    let before = columns(&admin, &schema).await;

    let (missing, statements, message) =
        missing_columns(open(PG_URL, &schema, Migrations::Auto, Some("tenantId")).await);
    assert_eq!(missing, ["tenantId", "previewUrl", "highResUrl", "costCents"]);
    assert_eq!(
        statements,
        [
            r#"ALTER TABLE "Design" ADD COLUMN "tenantId" TEXT;"#,
            r#"ALTER TABLE "Design" ADD COLUMN "previewUrl" TEXT;"#,
            r#"ALTER TABLE "Design" ADD COLUMN "highResUrl" TEXT;"#,
            r#"ALTER TABLE "Design" ADD COLUMN "costCents" INTEGER NOT NULL DEFAULT 0;"#,
        ]
    );
    for expected in statements
        .iter()
        .map(String::as_str)
        .chain(["RUN_MIGRATIONS=true", "\"previewUrl\""])
    {
        assert!(message.contains(expected), "{expected} missing from: {message}");
    }
    assert_eq!(columns(&admin, &schema).await, before, "auto changed a Prisma table");

    // Running exactly the statements it printed is enough for the next start.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO \"{schema}\"; {}",
        statements.join(" ")
    )))
    .execute(&admin)
    .await
    .expect("the printed ALTER TABLE statements run");
    let store = connect(&schema, Migrations::Auto).await;
    let design = store
        .get(&DesignId::parse("cjld2cjxh0000qzrmn831i7rn").expect("id"))
        .await
        .expect("get")
        .expect("the backend's row");
    assert_eq!((design.status, design.tenant_id), (DesignStatus::Pending, None));
}

#[tokio::test]
async fn true_adds_the_missing_render_columns_to_a_prisma_table_and_keeps_rows() {
    let (admin, _guard, schema) = fresh_schema().await;
    prisma_table(&admin, &schema, r#""userId" TEXT,"#).await;

    let store = connect(&schema, Migrations::Add).await;
    store.migrate().await.expect("idempotent");
    let after = columns(&admin, &schema).await;
    for column in ["title", "userId", "tenantId"].into_iter().chain(ADDED_BY_THE_WORKER) {
        assert!(after.iter().any(|c| c == column), "{column} missing: {after:?}");
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"SELECT "title", "costTokens", "costCents", "metadata"->>'source' AS source FROM "{schema}"."Design""#
    )))
    .fetch_one(&admin)
    .await
    .expect("row survives");
    assert_eq!(row.get::<String, _>("title"), "Kitchen floor");
    assert_eq!(row.get::<i32, _>("costTokens"), 7);
    assert_eq!(row.get::<i32, _>("costCents"), 0);
    assert_eq!(row.get::<Option<String>, _>("source").as_deref(), Some("prisma"));
    let design = store
        .get(&DesignId::parse("cjld2cjxh0000qzrmn831i7rn").expect("id"))
        .await
        .expect("get")
        .expect("readable through the store");
    assert_eq!(design.status, DesignStatus::Pending);

    // With everything in place, `auto` starts without touching anything.
    connect(&schema, Migrations::Auto).await;
    assert_eq!(columns(&admin, &schema).await, after);
}

#[tokio::test]
async fn false_issues_no_ddl_and_refuses_missing_columns_the_same_way() {
    let (admin, _guard, schema) = fresh_schema().await;
    // The read-only session catches DDL: `auto` on an empty schema must create the table and fails.
    let refused = open(READ_ONLY_URL, &schema, Migrations::Auto, Some("tenantId")).await;
    assert!(refused.is_err(), "the read-only session allowed DDL");

    // No table: nothing to check against, and `false` may not create one.
    match open(READ_ONLY_URL, &schema, Migrations::Off, Some("tenantId")).await {
        Err(StoreError::Schema(message)) => {
            assert!(message.contains("RUN_MIGRATIONS=false"), "{message}")
        }
        other => panic!("expected a schema error, got {:?}", other.map(|_| "a store")),
    }

    prisma_table(&admin, &schema, "").await;
    let before = columns(&admin, &schema).await;
    let (missing, statements, _) =
        missing_columns(open(READ_ONLY_URL, &schema, Migrations::Off, Some("tenantId")).await);
    assert_eq!(missing, ["tenantId", "previewUrl", "highResUrl", "costCents"]);
    assert_eq!(statements.len(), 4);
    assert_eq!(columns(&admin, &schema).await, before);

    // Once the backend's migration added them, `false` starts (still read-only at start-up).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO \"{schema}\"; {}",
        statements.join(" ")
    )))
    .execute(&admin)
    .await
    .expect("the backend adds the columns");
    let after = columns(&admin, &schema).await;
    open(READ_ONLY_URL, &schema, Migrations::Off, Some("tenantId"))
        .await
        .expect("false starts on a complete table");
    assert_eq!(columns(&admin, &schema).await, after);
}

#[tokio::test]
async fn the_configured_tenant_column_is_the_one_checked_and_added() {
    let (admin, _guard, schema) = fresh_schema().await;
    prisma_table(&admin, &schema, "").await;

    let (missing, statements, _) =
        missing_columns(open(PG_URL, &schema, Migrations::Auto, Some("organizationId")).await);
    assert_eq!(missing, ["organizationId", "previewUrl", "highResUrl", "costCents"]);
    assert_eq!(
        statements[0],
        r#"ALTER TABLE "Design" ADD COLUMN "organizationId" TEXT;"#
    );

    // Without a tenant column none is needed.
    let (missing, _, message) = missing_columns(open(PG_URL, &schema, Migrations::Auto, None).await);
    assert_eq!(missing, ADDED_BY_THE_WORKER);
    assert!(
        !message.contains("tenantId") && !message.contains("organizationId"),
        "{message}"
    );

    open(PG_URL, &schema, Migrations::Add, Some("organizationId"))
        .await
        .expect("true adds the columns");
    let after = columns(&admin, &schema).await;
    assert!(after.iter().any(|c| c == "organizationId"), "{after:?}");
    assert!(!after.iter().any(|c| c == "tenantId"), "{after:?}");
    open(PG_URL, &schema, Migrations::Off, None)
        .await
        .expect("no tenant column: the render columns are enough");
}

#[tokio::test]
async fn the_app_passes_the_settings_on_and_the_refusal_stays_recognisable() {
    let (admin, _guard, schema) = fresh_schema().await;
    prisma_table(&admin, &schema, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_tests(dir.path());
    config.database = DatabaseConfig::Postgres {
        url: Secret::new(format!("{PG_URL}?schema={schema}")),
    };
    config.design_tenant_column = Some(TenantColumn::parse("brandId").expect("valid column"));
    config.migrations = Migrations::Auto;
    super::helpers::init();

    let error = match app::build_pipeline(&config, Mode::Queue).await {
        Ok(_) => panic!("the worker started on a table without its columns"),
        Err(error) => error,
    };
    // What `main` can match on to exit with EX_CONFIG.
    match error.downcast_ref::<StoreError>() {
        Some(StoreError::MissingColumns { columns, .. }) => {
            assert_eq!(columns, &["brandId", "previewUrl", "highResUrl", "costCents"])
        }
        other => panic!("expected MissingColumns, got {other:?} from {error:#}"),
    }
    assert!(format!("{error:#}").contains(r#"ALTER TABLE "Design" ADD COLUMN "brandId" TEXT;"#));
}
