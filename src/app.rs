//! Composition root: turns a [`Config`] into concrete adapters behind the ports and hands the
//! pipeline its trait objects. The only module that names adapter types and matches on backend
//! enums.

use std::sync::Arc;

use anyhow::Context;

use crate::assets::{AssetLoader, LocalFiles};
use crate::config::{Config, DatabaseConfig};
use crate::imaging::codec::DecodeLimits;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::providers::ImageEditor;
use crate::providers::builtin::BuiltinFill;
use crate::safety::SafetyPolicy;
use crate::storage::BlobStore;
use crate::storage::local::LocalStore;
use crate::store::postgres::{PgDesignStore, PgSettings};
use crate::store::sqlite::SqliteDesignStore;
use crate::store::{DesignStore, MissingDesign};

/// Longest prompt handed to a provider when the provider sets no stricter limit.
const DEFAULT_PROMPT_MAX_CHARS: usize = 4000;

/// How the pipeline is driven, which decides what inputs it trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The one-shot `render` command: local files allowed, the Design row is created if missing.
    OneShot,
    /// The queue worker: local files refused, the Design row must exist for the job's tenant.
    Queue,
}

/// Builds the pipeline for a mode. Performs the IO checks (database reachable and migrated,
/// storage directory writable) so a misconfiguration fails before the first job.
pub async fn build_pipeline(config: &Config, mode: Mode) -> anyhow::Result<Pipeline> {
    let (local_files, missing) = match mode {
        Mode::OneShot => (LocalFiles::Allow, MissingDesign::Create),
        Mode::Queue => (LocalFiles::Refuse, MissingDesign::Reject),
    };
    let designs: Arc<dyn DesignStore> = match &config.database {
        DatabaseConfig::Sqlite { path } => Arc::new(
            SqliteDesignStore::open(path, missing)
                .await
                .with_context(|| format!("opening SQLite database {}", path.display()))?,
        ),
        DatabaseConfig::Postgres { url } => Arc::new(
            PgDesignStore::connect(
                PgSettings {
                    url: url.expose(),
                    schema: None,
                    max_connections: 8,
                    run_migrations: true,
                },
                missing,
            )
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?,
        ),
    };
    let blobs: Arc<dyn BlobStore> = Arc::new(
        LocalStore::new(&config.storage_dir, config.public_base_url.clone())
            .with_context(|| format!("preparing STORAGE_DIR {}", config.storage_dir.display()))?,
    );
    let editor: Arc<dyn ImageEditor> = Arc::new(BuiltinFill::default());
    let assets =
        AssetLoader::new(config.assets.clone(), local_files).context("building the HTTP client for asset downloads")?;
    Ok(Pipeline {
        assets,
        editor,
        blobs,
        designs,
        safety: SafetyPolicy::default(),
        settings: PipelineSettings {
            decode_limits: DecodeLimits {
                max_dimension: config.assets.max_dimension,
                max_pixels: config.assets.max_pixels,
            },
            imaging: config.imaging.clone(),
            prompt_max_chars: DEFAULT_PROMPT_MAX_CHARS,
        },
    })
}
