//! The `DATABASE_URL` section: where Design rows live.
//!
//! This file owns [`DatabaseConfig`] and the parsing of the URL into it. It does not connect:
//! whether the database is reachable is checked when the app is built.

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
