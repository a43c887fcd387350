//! Typed, validated configuration.
//!
//! This is the only module that reads environment variables. Everything else receives a
//! [`Config`] (or a piece of it). Parsing is pure: [`Config::from_lookup`] takes any lookup
//! function, so tests build configurations without touching the process environment.
//! Every parse error names the variable. Secrets are wrapped in [`Secret`], whose `Debug`
//! and `Display` print a placeholder.
//!
//! This file owns [`Config`], [`ConfigError`] and the lookup helper every section parses with;
//! each section's type and parsing live in its own file (`database`, `assets`, `imaging`,
//! `providers`, `queue`) and are re-exported here, so callers name them `config::X`.

mod assets;
mod cache;
mod dashboard;
mod database;
mod imaging;
mod providers;
mod queue;
mod secret;
mod storage;
mod summary;
mod traces;
mod webhooks;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use self::assets::AssetLimits;
pub use self::cache::{CacheMode, ResultCacheConfig};
pub use self::dashboard::DashboardConfig;
pub use self::database::{DatabaseConfig, Migrations, TenantColumn};
pub use self::imaging::ImagingConfig;
pub use self::providers::{InpaintOverrides, ProviderConfig, ProviderKind};
pub use self::queue::{QueueConfig, RedisConfig, parse_cluster_nodes, parse_tenant_limits};
pub use self::secret::Secret;
pub use self::storage::{CloudinaryConfig, S3Config, S3Credentials, SignatureAlgorithm, StorageBackend, StorageConfig};
pub use self::traces::TracesConfig;
pub use self::webhooks::{WebhookConfig, signing_key};
pub use crate::assets::guard::{AllowedHost, PrivateHostPolicy};

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: `{var}` {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub database: DatabaseConfig,
    pub storage_dir: PathBuf,
    pub public_base_url: Option<url::Url>,
    /// Where assets go (`STORAGE_BACKEND` and each backend's variables).
    pub storage: StorageConfig,
    pub assets: AssetLimits,
    pub imaging: ImagingConfig,
    /// Reuse of earlier identical renders (`RESULT_CACHE`, `RESULT_CACHE_TTL_SECONDS`).
    pub result_cache: ResultCacheConfig,
    pub providers: ProviderConfig,
    pub redis: RedisConfig,
    pub default_tenant_concurrency: u32,
    /// Queue worker settings, including the webhook (`WEBHOOK_ENABLED`).
    pub queue: QueueConfig,
    /// The `"Design"` column holding the owning tenant (`DESIGN_TENANT_COLUMN`, default
    /// `tenantId`); `None` when it is set blank: no ownership check, rows matched by id only.
    pub design_tenant_column: Option<TenantColumn>,
    /// What the worker may do to the schema at start-up (`RUN_MIGRATIONS`, default `auto`).
    pub migrations: Migrations,
    pub log_format: LogFormat,
    /// Trace export over OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT` and the other `OTEL_*`
    /// variables); `None` when no endpoint is set.
    pub traces: Option<TracesConfig>,
}

impl ConfigError {
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Reads the process environment, after loading `.env` from the working directory or the
    /// nearest parent that has one (variables already set win over the file).
    pub fn from_env() -> Result<Self, ConfigError> {
        load_dotenv()?;
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Variables set in the process environment that this configuration does not use.
    pub fn unused_vars_in_env(&self) -> Vec<(&'static str, &'static str)> {
        self.unused_vars(|name| std::env::var(name).ok())
    }

    /// Builds a configuration from any variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars { lookup: &lookup };
        // The sections are parsed in this order, so with several bad variables the error names
        // the same one every time.
        let database = DatabaseConfig::from_vars(&vars)?;
        let public_base_url = vars
            .get("PUBLIC_BASE_URL")
            .map(|text| {
                let mut url = url::Url::parse(&text)
                    .map_err(|e| ConfigError::new("PUBLIC_BASE_URL", format!("is not a URL ({e})")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::new("PUBLIC_BASE_URL", "must be an http(s) URL"));
                }
                // Keys are appended to the base, so it must end with a slash to keep its path.
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                Ok(url)
            })
            .transpose()?;
        let storage = StorageConfig::from_vars(&vars)?;
        if matches!(storage.backend, StorageBackend::S3(_)) && public_base_url.is_none() {
            return Err(ConfigError::new(
                "PUBLIC_BASE_URL",
                "is required with S3 storage: the Design row keeps PUBLIC_BASE_URL + key (a CDN or \
                 bucket website), since presigned URLs expire",
            ));
        }
        let assets = AssetLimits::from_vars(&vars)?;
        let imaging = ImagingConfig::from_vars(&vars)?;
        let result_cache = ResultCacheConfig::from_vars(&vars)?;
        let providers = ProviderConfig::from_vars(&vars)?;
        let redis = RedisConfig::from_vars(&vars)?;
        let queue = QueueConfig::from_vars(&vars)?;
        queue.check_cluster_keys(&redis)?;
        Ok(Self {
            database,
            storage_dir: vars
                .get("STORAGE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("storage")),
            public_base_url,
            storage,
            assets,
            imaging,
            result_cache,
            providers,
            redis,
            default_tenant_concurrency: vars.parse_or("DEFAULT_TENANT_CONCURRENCY", 2, |v| *v > 0)?,
            queue,
            design_tenant_column: TenantColumn::from_vars(&vars)?,
            migrations: Migrations::from_vars(&vars)?,
            log_format: match vars.get("LOG_FORMAT").as_deref() {
                None | Some("pretty") | Some("text") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(_) => return Err(ConfigError::new("LOG_FORMAT", "must be `pretty` or `json`")),
            },
            traces: TracesConfig::from_vars(&vars)?,
        })
    }

    /// A configuration for tests: SQLite and storage under `dir`, default limits, no secrets.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        Self {
            database: DatabaseConfig::Sqlite {
                path: dir.join("design-render.db"),
            },
            storage_dir: dir.join("storage"),
            public_base_url: None,
            storage: StorageConfig::default(),
            assets: AssetLimits::default(),
            imaging: ImagingConfig::default(),
            // Off, so tests that render the same inputs twice see two renders; the cache's own
            // tests turn it on.
            result_cache: ResultCacheConfig {
                mode: CacheMode::Off,
                ..ResultCacheConfig::default()
            },
            providers: ProviderConfig::default(),
            redis: RedisConfig::default(),
            default_tenant_concurrency: 2,
            queue: QueueConfig::default(),
            design_tenant_column: Some(TenantColumn::default()),
            migrations: Migrations::Auto,
            log_format: LogFormat::Pretty,
            traces: None,
        }
    }
}

/// Loads `.env` as `dotenvy` finds it. A missing file is normal; one that cannot be read or
/// parsed stops start-up with the file, the line number and the variable, but never the line's
/// text (its value may be a secret).
fn load_dotenv() -> Result<(), ConfigError> {
    let Some(path) = std::env::current_dir()
        .ok()
        .and_then(|dir| dir.ancestors().map(|dir| dir.join(".env")).find(|path| path.is_file()))
    else {
        return Ok(());
    };
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::LineParse(line, index)) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            Err(ConfigError::new(
                ".env",
                dotenv_parse_problem(&path, &text, &line, index),
            ))
        }
        Err(error) => Err(ConfigError::new(
            ".env",
            format!("{} cannot be read: {error}", path.display()),
        )),
    }
}

/// Where a `.env` line that does not parse is: its line number in `text` and the variable it
/// names, when it names one.
fn dotenv_parse_problem(path: &std::path::Path, text: &str, line: &str, index: usize) -> String {
    let first = line.lines().next().unwrap_or_default();
    let number = text
        .lines()
        .position(|candidate| !first.is_empty() && candidate == first)
        .map(|position| format!("line {}", position + 1))
        .unwrap_or_else(|| "a line".to_owned());
    let name = first
        .trim_start()
        .trim_start_matches("export ")
        .split(['=', ' '])
        .next()
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let variable = name.map(|name| format!(" (`{name}`)")).unwrap_or_default();
    format!(
        "{number}{variable} of {} does not parse (at character {}); check its quoting",
        path.display(),
        index + 1
    )
}

/// The variable lookup every section parses with; each helper names the variable in its errors.
struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    /// A set, non-blank variable.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    fn parse_or<T>(&self, name: &'static str, default: T, valid: impl Fn(&T) -> bool) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + fmt::Display,
    {
        Ok(self.parse_opt(name, valid)?.unwrap_or(default))
    }

    /// A set variable parsed as a number that `valid` accepts; the error names the variable.
    fn parse_opt<T>(&self, name: &'static str, valid: impl Fn(&T) -> bool) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr + fmt::Display,
    {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value: T = text
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, format!("must be a number (got `{}`)", text.trim())))?;
        if !valid(&value) {
            return Err(ConfigError::new(name, format!("value {value} is out of range")));
        }
        Ok(Some(value))
    }

    fn millis_or(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.parse_or(name, default_ms, |v| *v > 0 && *v <= 24 * 3600 * 1000)
            .map(Duration::from_millis)
    }

    fn bool_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(ConfigError::new(name, "must be true or false")),
        }
    }
}

/// The test helper every section's tests share.
#[cfg(test)]
mod test_support {
    use std::collections::BTreeMap;

    use super::{Config, ConfigError};

    /// A configuration built from exactly these variables.
    pub(super) fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    /// One section parsed from exactly these variables.
    pub(super) fn section<T>(
        pairs: &[(&str, &str)],
        parse: impl Fn(&super::Vars<'_>) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let lookup = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        parse(&super::Vars { lookup: &lookup })
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::config;
    use super::*;

    #[test]
    fn a_bad_dotenv_line_is_named_by_number_and_variable_without_its_value() {
        let text = "REDIS_HOST=cache\nOPENAI_API_KEY='sk-live-unterminated\nQUEUE_NAME=renders\n";
        let problem = dotenv_parse_problem(
            std::path::Path::new("/srv/app/.env"),
            text,
            "OPENAI_API_KEY='sk-live-unterminated",
            15,
        );
        assert_eq!(
            problem,
            "line 2 (`OPENAI_API_KEY`) of /srv/app/.env does not parse (at character 16); check its quoting"
        );
        assert!(!problem.contains("sk-live"));
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                path: "design-render.db".into()
            }
        );
        assert_eq!(config.storage_dir, PathBuf::from("storage"));
        assert_eq!(config.providers.max_tokens_per_job, 10_000);
        assert_eq!(config.providers.circuit_breaker_threshold, 5);
        assert_eq!(config.providers.circuit_breaker_timeout, Duration::from_secs(60));
        assert_eq!(config.default_tenant_concurrency, 2);
        assert_eq!(config.assets.private_hosts, PrivateHostPolicy::Deny);
    }

    #[test]
    fn errors_name_the_variable() {
        let error = config(&[("MAX_TOKENS_PER_JOB", "lots")]).unwrap_err();
        assert_eq!(error.var, "MAX_TOKENS_PER_JOB");
        assert!(error.to_string().contains("MAX_TOKENS_PER_JOB"));
        assert_eq!(config(&[("DRY_RUN_MODE", "maybe")]).unwrap_err().var, "DRY_RUN_MODE");
        assert_eq!(
            config(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        assert_eq!(
            config(&[("CIRCUIT_BREAKER_THRESHOLD", "0")]).unwrap_err().var,
            "CIRCUIT_BREAKER_THRESHOLD"
        );
        assert_eq!(
            config(&[("ALLOW_PRIVATE_ASSET_HOSTS", "10.0.0.0/99")]).unwrap_err().var,
            "ALLOW_PRIVATE_ASSET_HOSTS"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = config(&[
            ("OPENAI_API_KEY", "sk-very-secret"),
            ("DATABASE_URL", "postgres://user:hunter2@db/app"),
            ("REDIS_PASSWORD", "redis-secret"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        for secret in ["sk-very-secret", "hunter2", "redis-secret"] {
            assert!(!printed.contains(secret), "{secret} leaked into {printed}");
        }
        assert_eq!(
            config.providers.openai_api_key.as_ref().map(Secret::expose),
            Some("sk-very-secret")
        );
    }

    #[test]
    fn public_base_url_keeps_its_path() {
        let config = config(&[("PUBLIC_BASE_URL", "https://cdn.example.com/renders")]).unwrap();
        assert_eq!(
            config.public_base_url.unwrap().as_str(),
            "https://cdn.example.com/renders/"
        );
    }
}
