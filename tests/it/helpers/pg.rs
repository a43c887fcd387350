//! PostgreSQL fixtures: one fresh schema per test, dropped again when the fixture is dropped,
//! including when the test panics.
//!
//! `Drop` cannot await, so the drop runs on a thread of its own with a one-off runtime and
//! connection; it never touches another test's schema or the shared database itself.

use design_render::config::{Migrations, TenantColumn};
use design_render::job::DesignId;
use design_render::store::postgres::{PgDesignStore, PgSettings};
use design_render::store::{DesignRow, DesignStore, MissingDesign};

use super::unique;

/// The PostgreSQL server the tests use (trust auth on loopback).
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Owns one schema: dropping the guard drops the schema with everything in it.
pub struct SchemaGuard {
    name: String,
}

impl SchemaGuard {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let statement = format!(r#"DROP SCHEMA IF EXISTS "{}" CASCADE"#, self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(PG_URL).await?;
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut connection)
                    .await?;
                connection.close().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        // Panicking in Drop while a test already panics would abort the whole binary; a schema
        // left behind is only reported.
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test schema {}: {error:#}", self.name),
            Err(_) => eprintln!("dropping test schema {} panicked", self.name),
        }
    }
}

/// Creates an empty schema with a unique name; returns an admin pool and the guard that drops it.
pub async fn create_schema(label: &str) -> (sqlx::PgPool, SchemaGuard) {
    let name = unique(label);
    let admin = sqlx::PgPool::connect(PG_URL)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE SCHEMA "{name}""#)))
        .execute(&admin)
        .await
        .expect("create schema");
    (admin, SchemaGuard { name })
}

/// A fresh, migrated schema and a store on it; the schema is dropped with the fixture.
pub struct PgSchema {
    pub name: String,
    pub store: PgDesignStore,
    /// The column [`insert_design`](Self::insert_design) writes the owner to; `None` when the
    /// store checks no ownership.
    tenant_column: Option<TenantColumn>,
    /// Declared last: fields drop in order, so the store's pool goes before the schema.
    _guard: SchemaGuard,
}

impl PgSchema {
    /// A store that refuses unknown designs, as the queue worker's does.
    pub async fn new() -> Self {
        Self::with_missing(MissingDesign::Reject).await
    }

    pub async fn with_missing(missing: MissingDesign) -> Self {
        Self::with_tenant_column(missing, Some(TenantColumn::default())).await
    }

    /// A store whose rows are owned through `tenant_column` (`None`: matched by id only), on a
    /// schema its `auto` migrations create.
    pub async fn with_tenant_column(missing: MissingDesign, tenant_column: Option<TenantColumn>) -> Self {
        let (admin, guard) = create_schema("dr_test").await;
        admin.close().await;
        let store = PgDesignStore::connect(
            PgSettings {
                url: PG_URL,
                schema: Some(guard.name()),
                max_connections: 2,
                tenant_column: tenant_column.clone(),
                migrations: Migrations::Auto,
            },
            missing,
        )
        .await
        .expect("connect and migrate");
        Self {
            name: guard.name().to_owned(),
            store,
            tenant_column,
            _guard: guard,
        }
    }

    /// The DATABASE_URL a worker process uses to reach this schema (Prisma-style `?schema=`).
    pub fn url(&self) -> String {
        format!("{PG_URL}?schema={}", self.name)
    }

    /// Inserts a PENDING row owned by `tenant` (in the store's tenant column, if it has one), as
    /// the backend does before it enqueues a job.
    pub async fn insert_design(&self, id: &str, tenant: &str) {
        let statement = match &self.tenant_column {
            Some(column) => format!(
                r#"INSERT INTO "Design" ("id", "{}", "status", "updatedAt") VALUES ($1, $2, 'PENDING', now())"#,
                column.as_str()
            ),
            None => r#"INSERT INTO "Design" ("id", "status", "updatedAt") VALUES ($1, 'PENDING', now())"#.to_owned(),
        };
        let query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(id);
        let query = if self.tenant_column.is_some() {
            query.bind(tenant)
        } else {
            query
        };
        query.execute(self.store.pool()).await.expect("insert design");
    }

    /// What the tenant column holds for row `id`, read with raw SQL on the configured column;
    /// `None` for no row, no owner or no column.
    pub async fn stored_owner(&self, id: &str) -> Option<String> {
        let column = self.tenant_column.as_ref()?;
        let statement = format!(r#"SELECT "{}" FROM "Design" WHERE "id" = $1"#, column.as_str());
        sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await
            .expect("read the tenant column")
            .flatten()
    }

    pub async fn design(&self, id: &str) -> DesignRow {
        self.store
            .get(&DesignId::parse(id).unwrap())
            .await
            .expect("read design")
            .expect("design exists")
    }
}
