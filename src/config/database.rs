//! The database section: where Design rows live (`DATABASE_URL`), which column names their
//! owner (`DESIGN_TENANT_COLUMN`) and what the worker may do to the schema (`RUN_MIGRATIONS`).
//!
//! This file owns [`DatabaseConfig`], [`TenantColumn`] and [`Migrations`] and their parsing. It
//! does not connect: whether the database is reachable and its schema fits is checked when the
//! app is built.

use std::fmt;
use std::path::PathBuf;

use super::{ConfigError, Secret, Vars};

/// Where Design rows live.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// An embedded SQLite file (the default: `design-render.db` in the working directory).
    Sqlite { path: PathBuf },
    /// A PostgreSQL server shared with the backend. The URL may contain a password.
    Postgres { url: Secret },
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres { .. } => f.write_str("Postgres { url: [redacted] }"),
        }
    }
}

/// The `"Design"` column that holds the owning tenant (`DESIGN_TENANT_COLUMN`).
///
/// The name is spliced into SQL (quoted), so only a plain identifier is accepted: ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 bytes (PostgreSQL's limit). It comes
/// from configuration only, never from a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantColumn(String);

/// What the worker may do to the schema at start-up (`RUN_MIGRATIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// `auto` (default): create the `"DesignStatus"` enum and the `"Design"` table when they are
    /// missing; on an existing table only check the columns the worker needs and refuse to start
    /// when one is missing, naming the `ALTER TABLE` to run.
    Auto,
    /// `true`: also add missing enum labels and columns to an existing table (never drop,
    /// rename or rewrite).
    Add,
    /// `false`: no DDL at all; the columns are still checked (read-only) and a missing one
    /// refuses the start the same way.
    Off,
}

impl TenantColumn {
    /// Longest identifier PostgreSQL keeps without truncating it (NAMEDATALEN - 1).
    const MAX_BYTES: usize = 63;

    /// Checks `name` against the identifier rules; the error names `DESIGN_TENANT_COLUMN`.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        let problem = if name.len() > Self::MAX_BYTES {
            Some(format!(
                "is {} bytes long; at most {} are allowed",
                name.len(),
                Self::MAX_BYTES
            ))
        } else if name.starts_with(|c: char| c.is_ascii_digit()) {
            Some(format!("`{name}` must not start with a digit"))
        } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Some(format!(
                "`{}` must be a plain column name: ASCII letters, digits and `_`",
                name.escape_debug()
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(ConfigError::new("DESIGN_TENANT_COLUMN", problem)),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The column name as written in the schema (unquoted).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `DESIGN_TENANT_COLUMN`: unset means `tenantId`; set but blank means no ownership check
    /// (`None`: the queue is trusted and rows are matched by id only).
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Option<Self>, ConfigError> {
        match (vars.lookup)("DESIGN_TENANT_COLUMN") {
            None => Ok(Some(Self::default())),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => Self::parse(text.trim()).map(Some),
        }
    }
}

impl Default for TenantColumn {
    /// `tenantId`, the column this worker's own migrations create.
    fn default() -> Self {
        Self("tenantId".to_owned())
    }
}

impl Migrations {
    /// `RUN_MIGRATIONS`: `auto` (default), `true`/`1`/`yes`/`on`, `false`/`0`/`no`/`off`.
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        match vars
            .get("RUN_MIGRATIONS")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("auto") => Ok(Self::Auto),
            Some("true" | "1" | "yes" | "on") => Ok(Self::Add),
            Some("false" | "0" | "no" | "off") => Ok(Self::Off),
            Some(_) => Err(ConfigError::new("RUN_MIGRATIONS", "must be auto, true or false")),
        }
    }
}

impl DatabaseConfig {
    /// `DATABASE_URL`, or the SQLite default when it is unset.
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        match vars.get("DATABASE_URL") {
            None => Ok(Self::Sqlite {
                path: PathBuf::from("design-render.db"),
            }),
            Some(url) => parse_database_url(&url),
        }
    }
}

fn parse_database_url(text: &str) -> Result<DatabaseConfig, ConfigError> {
    if let Some(rest) = text.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "sqlite: URL must name a file, e.g. sqlite://design-render.db",
            ));
        }
        return Ok(DatabaseConfig::Sqlite { path: path.into() });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DatabaseConfig::Postgres { url: Secret::new(text) });
    }
    Err(ConfigError::new(
        "DATABASE_URL",
        "must start with postgres://, postgresql:// or sqlite:",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::config;

    #[test]
    fn tenant_column_defaults_to_tenant_id_and_blank_turns_the_check_off() {
        let column = |pairs: &[(&str, &str)]| config(pairs).unwrap().design_tenant_column;
        assert_eq!(column(&[]), Some(TenantColumn::default()));
        assert_eq!(column(&[]).unwrap().as_str(), "tenantId");
        assert_eq!(
            column(&[("DESIGN_TENANT_COLUMN", "organizationId")]).unwrap().as_str(),
            "organizationId"
        );
        assert_eq!(column(&[("DESIGN_TENANT_COLUMN", "")]), None);
        assert_eq!(column(&[("DESIGN_TENANT_COLUMN", "  ")]), None);
    }

    #[test]
    fn tenant_column_must_be_a_plain_identifier() {
        let longest = "a".repeat(63);
        assert_eq!(TenantColumn::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(TenantColumn::parse("_brand_id2").unwrap().as_str(), "_brand_id2");
        for bad in [
            "a".repeat(64),
            "2ndTenant".into(),
            "tenant id".into(),
            "tenant\"; DROP TABLE \"Design".into(),
            "tenant-id".into(),
            "organizationé".into(),
        ] {
            let error = config(&[("DESIGN_TENANT_COLUMN", &bad)]).unwrap_err();
            assert_eq!(error.var, "DESIGN_TENANT_COLUMN", "{bad}");
            assert!(error.to_string().contains("DESIGN_TENANT_COLUMN"), "{error}");
        }
    }

    #[test]
    fn run_migrations_takes_auto_true_false_and_the_old_spellings() {
        let migrations = |value: &str| config(&[("RUN_MIGRATIONS", value)]).map(|c| c.migrations);
        assert_eq!(config(&[]).unwrap().migrations, Migrations::Auto);
        assert_eq!(migrations("auto").unwrap(), Migrations::Auto);
        for value in ["true", "1", "yes", "on", "TRUE"] {
            assert_eq!(migrations(value).unwrap(), Migrations::Add, "{value}");
        }
        for value in ["false", "0", "no", "off"] {
            assert_eq!(migrations(value).unwrap(), Migrations::Off, "{value}");
        }
        assert_eq!(migrations("sometimes").unwrap_err().var, "RUN_MIGRATIONS");
    }

    #[test]
    fn database_url_selects_the_store() {
        assert!(matches!(
            config(&[("DATABASE_URL", "postgresql://localhost/test")])
                .unwrap()
                .database,
            DatabaseConfig::Postgres { .. }
        ));
        assert_eq!(
            config(&[("DATABASE_URL", "sqlite://data/renders.db")])
                .unwrap()
                .database,
            DatabaseConfig::Sqlite {
                path: "data/renders.db".into()
            }
        );
    }
}
